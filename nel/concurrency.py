"""How many model requests are in flight: a fixed number, or ``auto`` (an adaptive limit).

``--concurrency auto`` (or ``auto:MAX``, default MAX 256) starts low and finds the endpoint's
capacity from what every HTTP attempt tells it, the way TCP congestion control and Netflix's
concurrency-limits do:

* slow start: +1 per good reply (the limit doubles each round trip) until the first sign of
  congestion, then additive increase, +1 per limit's worth of good replies (per round trip);
* multiplicative decrease of what was really in flight (slow start overshoots the limit):
  x0.9 on a 429, a Retry-After, a timeout or a 5xx; when smoothed latency rises above 1.5x its
  no-load baseline (the gradient signal: a queue is building up), in proportion to the excess,
  x0.5 to x0.9. At most one decrease per round trip, so one burst of 64 rejections counts once;
* never below 1, and no attempt holds a slot while it sleeps out a Retry-After: a long one slows
  the request that got it, never the whole run.

AIMD alone finds a 429 cap; the latency signal finds a server that queues instead of refusing
(a local server, vLLM with a full batch). The decrease is 0.9 rather than TCP's 0.5 because the
sawtooth's lower half is lost throughput, and our endpoints forgive a brief overshoot (a 429
is cheap); measured in benchmarks/bench_concurrency.py. The limit's history (every change, thinned to
2000 points) goes into progress.json and runtime.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from nel.errors import ConfigError

DEFAULT_AUTO_MAX = 256
CONGESTION_KINDS = frozenset({"rate_limit", "timeout", "server_error"})


@dataclass(frozen=True)
class ConcurrencyPlan:
    """``max_in_flight`` sizes the workers and the connection pool; ``adaptive`` adds a limiter."""

    max_in_flight: int
    adaptive: bool = False

    def limiter(self) -> AdaptiveLimit | None:
        return AdaptiveLimit(self.max_in_flight) if self.adaptive else None


def parse_concurrency(value: int | str) -> ConcurrencyPlan:
    """``16`` → fixed 16; ``auto`` → adaptive up to 256; ``auto:64`` → adaptive up to 64."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"concurrency must be >= 1 or auto[:MAX], got {value!r} (--concurrency)")
        return ConcurrencyPlan(value)
    text = str(value).strip().lower()
    if text.isdigit():
        return parse_concurrency(int(text))
    head, _, tail = text.partition(":")
    if head == "auto" and (not tail or (tail.isdigit() and int(tail) >= 1)):
        return ConcurrencyPlan(int(tail) if tail else DEFAULT_AUTO_MAX, adaptive=True)
    raise ConfigError(f"concurrency must be a number >= 1, auto or auto:MAX, got {value!r} (--concurrency)")


class AdaptiveLimit:
    """An AIMD limit with a latency-gradient signal; ``slot()`` admits one HTTP attempt."""

    decrease = 0.9
    latency_tolerance = 1.5

    def __init__(self, maximum: int, initial: int = 4) -> None:
        self.maximum = maximum
        self.limit = float(min(initial, maximum))
        self.in_flight = 0
        self.slow_start = True
        self._baseline: float | None = None  # no-load latency estimate (a slowly rising minimum)
        self._smoothed: float | None = None  # recent latency (EWMA)
        self._last_decrease = 0.0
        self._started = time.monotonic()
        self.history: list[tuple[float, int]] = [(0.0, int(self.limit))]
        self._changed: asyncio.Condition | None = None

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        changed = self._condition()
        async with changed:
            await changed.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1
        try:
            yield
        finally:
            async with changed:
                self.in_flight -= 1
                # wake as many as may enter, not all: 250 waiters woken per reply cost more CPU
                # than the requests themselves
                changed.notify(max(1, int(self.limit) - self.in_flight))

    def observe(self, kind: str, latency_s: float, retry_after: float | None = None) -> None:
        """Feed one attempt's outcome (call it inside its ``slot()``): "ok" or an error kind."""
        now = time.monotonic()
        if kind in CONGESTION_KINDS or retry_after is not None:
            self._back_off(now)
        elif kind == "ok":
            self._track_latency(latency_s)
            assert self._baseline is not None and self._smoothed is not None
            allowed = self.latency_tolerance * self._baseline
            if self._smoothed > allowed:  # the gradient: cut in proportion to the queueing seen
                self._back_off(now, max(0.5, min(self.decrease, allowed / self._smoothed)))
            elif 2 * self.in_flight >= self.limit:  # grow a limit that is in use (replies come in bursts)
                self.limit = min(self.maximum, self.limit + (1.0 if self.slow_start else 1.0 / self.limit))
        self._record(now)  # waiters see the new limit when this attempt's slot is released

    def summary(self) -> dict[str, object]:
        limits = [limit for _, limit in self.history]
        return {
            "mode": "auto",
            "max": self.maximum,
            "final": int(self.limit),
            "min_seen": min(limits),
            "max_seen": max(limits),
            "history": [[round(t, 1), limit] for t, limit in self.history],
        }

    def _back_off(self, now: float, factor: float | None = None) -> None:
        self.slow_start = False
        round_trip = self._smoothed or 1.0
        if now - self._last_decrease >= round_trip:
            # from what was really in flight when the server objected (slow start overshoots)
            in_use = min(self.limit, self.in_flight)
            self.limit = max(1.0, in_use * (factor or self.decrease))
            self._last_decrease = now

    def _track_latency(self, latency: float) -> None:
        if self._baseline is None or self._smoothed is None:
            self._baseline = self._smoothed = latency
            return
        self._smoothed += 0.2 * (latency - self._smoothed)
        # the minimum, drifting up slowly so that a server that really got slower is re-learned
        self._baseline = min(latency, self._baseline * 1.0001)

    def _record(self, now: float) -> None:
        t, current = now - self._started, int(self.limit)
        last_t, last = self.history[-1]
        if current == last:
            return
        self.history.append((t, current))
        if len(self.history) > 2000:  # a long run: keep every other point
            self.history = self.history[::2]

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed
