"""Progress display: a rich bar on a terminal, plain periodic lines otherwise.

The eval loop only bumps counters; a reporter polls them on its own clock, so drawing
never costs the hot path anything per request.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from rich.progress import TaskID


@dataclass
class Counters:
    """Live counts of one shard's run, shared by the loop (writer) and reporters (readers)."""

    total: int
    already: int = 0
    done: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        return self.already + self.done

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        rate = self.rate()
        remaining = self.total - self.finished
        return remaining / rate if rate > 0 else None


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
        eta = c.eta_s()
        eta_text = "-" if eta is None else f"{eta:.0f}s"
        print(
            f"[nel] {self.label} {what}: {c.finished}/{c.total} done ({c.already} from before), "
            f"{c.failed} failed, {c.rate():.1f} req/s, eta {eta_text}",
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
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.1f} req/s"),
            TextColumn("[red]{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task: TaskID | None = None

    def start(self, counters: Counters, label: str) -> None:
        self._progress.start()
        self._task = self._progress.add_task(
            label, total=counters.total, completed=counters.finished, rate=0.0, failed=0
        )

    def refresh(self, counters: Counters) -> None:
        if self._task is not None:
            self._progress.update(
                self._task, completed=counters.finished, rate=counters.rate(), failed=counters.failed
            )

    def stop(self, counters: Counters) -> None:
        self.refresh(counters)
        self._progress.stop()


def make_reporter(kind: str = "auto") -> Reporter:
    """``auto`` picks the bar on a terminal and plain lines otherwise; ``none`` is silent."""
    if kind == "none":
        return NullReporter()
    if kind == "rich" or (kind == "auto" and sys.stderr.isatty()):
        return RichReporter()
    return PlainReporter()
