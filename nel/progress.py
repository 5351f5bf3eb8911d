"""Progress display: a rich bar on a terminal, plain periodic lines otherwise.

The eval loop only bumps counters; a reporter polls them on its own clock, so drawing
never costs the hot path anything per request.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from rich.progress import TaskID

    from nel.concurrency import AdaptiveLimit
    from nel.trajectory import TrajectoryRow


RATE_WINDOW_S = 120.0


@dataclass
class Counters:
    """Live counts of one shard's run, shared by the loop (writer) and reporters (readers).

    ``retries`` counts HTTP attempts beyond the first of each model call, ``failed_kinds`` the
    failed rows by error_kind: a run that is retrying its way through timeouts says so while
    it happens. The rate (and so the ETA) is over the last ``RATE_WINDOW_S`` seconds and counts
    failed rows too: they leave the queue like finished ones.
    """

    total: int
    already: int = 0
    done: int = 0
    failed: int = 0
    retries: int = 0
    failed_kinds: dict[str, int] = field(default_factory=dict)
    limiter: AdaptiveLimit | None = None
    started: float = field(default_factory=time.monotonic)
    _recent: deque[float] = field(default_factory=deque, repr=False)

    def count(self, row: TrajectoryRow, ok: bool) -> None:
        """Take one finished row (the loop's only hook)."""
        if ok:
            self.done += 1
        else:
            self.failed += 1
            kind = str(row.error_kind)
            self.failed_kinds[kind] = self.failed_kinds.get(kind, 0) + 1
        self.retries += max(0, (row.attempts or 0) - (row.model_calls or 0))
        now = time.monotonic()
        self._recent.append(now)
        while self._recent and now - self._recent[0] > RATE_WINDOW_S:
            self._recent.popleft()

    @property
    def finished(self) -> int:
        return self.already + self.done

    def rate(self) -> float:
        """Rows per second over the recent window (from the start while it is younger)."""
        now = time.monotonic()
        while self._recent and now - self._recent[0] > RATE_WINDOW_S:
            self._recent.popleft()
        span = min(now - self.started, RATE_WINDOW_S)
        return len(self._recent) / span if span > 0 else 0.0

    def eta_s(self) -> float | None:
        rate = self.rate()
        remaining = self.total - self.finished - self.failed
        return remaining / rate if rate > 0 and self._recent else None

    def problems_text(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.failed_kinds.items(), key=lambda kv: -kv[1]))
        text = f"{self.failed} failed" + (f" ({kinds})" if kinds else "") + f", {self.retries} retries"
        if self.limiter is not None:
            text += f", limit {int(self.limiter.limit)}"
        return text


class Reporter(Protocol):
    interval_s: float

    def start(self, counters: Counters, label: str) -> None: ...
    def refresh(self, counters: Counters) -> None: ...
    def stop(self, counters: Counters) -> None: ...


class NullReporter:
    interval_s = 5.0

    def start(self, counters: Counters, label: str) -> None:
        pass

    def refresh(self, counters: Counters) -> None:
        pass

    def stop(self, counters: Counters) -> None:
        pass


class PlainReporter:
    """One line every ``interval_s`` seconds: for logs, SLURM output files and CI."""

    def __init__(self, stream: TextIO | None = None, interval_s: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self.label = ""

    def start(self, counters: Counters, label: str) -> None:
        self.label = label
        self._line(counters, "start")

    def refresh(self, counters: Counters) -> None:
        self._line(counters, "progress")

    def stop(self, counters: Counters) -> None:
        self._line(counters, "end")

    def _line(self, c: Counters, what: str) -> None:
        eta_text = _eta_text(c)
        print(
            f"[nel] {self.label} {what}: {c.finished}/{c.total} done ({c.already} from before), "
            f"{c.problems_text()}, {c.rate():.1f} req/s, eta {eta_text}",
            file=self.stream,
            flush=True,
        )


class RichReporter:
    """A live bar: done/total, rate, errors so far, ETA."""

    interval_s = 0.25

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.1f} req/s"),
            TextColumn("[red]{task.fields[failed]}"),
            TimeElapsedColumn(),
            TextColumn("eta {task.fields[eta]}"),
            transient=False,
        )
        self._task: TaskID | None = None

    def start(self, counters: Counters, label: str) -> None:
        self._progress.start()
        self._task = self._progress.add_task(
            label, total=counters.total, completed=counters.finished, rate=0.0, failed="0 failed", eta="-"
        )

    def refresh(self, counters: Counters) -> None:
        if self._task is not None:
            self._progress.update(
                self._task,
                completed=counters.finished,
                rate=counters.rate(),
                failed=counters.problems_text(),
                eta=_eta_text(counters),
            )

    def stop(self, counters: Counters) -> None:
        self.refresh(counters)
        self._progress.stop()


def _eta_text(c: Counters) -> str:
    eta = c.eta_s()
    return "-" if eta is None else f"{eta:.0f}s"


def make_reporter(kind: str = "auto") -> Reporter:
    """``auto`` picks the bar on a terminal and plain lines otherwise; ``none`` is silent."""
    if kind == "none":
        return NullReporter()
    if kind == "rich" or (kind == "auto" and sys.stderr.isatty()):
        return RichReporter()
    return PlainReporter()
