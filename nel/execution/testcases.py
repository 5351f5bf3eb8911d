"""The code-execution core the code benchmarks share: a program against many test cases.

The program runs in a :class:`~nel.execution.sandbox.SandboxSession` under
:mod:`nel.execution.harness`, which only *reports outputs*: for each test case nel sends one
request line (the arguments of a call, or a stdin text) and reads one reply line, as plain
data (JSON, never pickle). The verdict is decided here, in nel's process, by the benchmark's
``judge`` (which compares the reply with the expected output the sandbox never sees), and the
time of each test case is measured on nel's clock, from sending the request to reading the
reply, so neither can be forged from inside.

Per-test and overall time limits; stop at the first failure (what LiveCodeBench's grader
does: the later tests are ``not_run``); ``workers`` sandboxes share the test cases for one
program (each runs the program's setup once, then takes the next case in order), and the
first failure reported is always the lowest-numbered failing case, however the work was
split.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nel.errors import ScoringError
from nel.execution import harness
from nel.execution.sandbox import ExecutionResult, SandboxLimits, SandboxSession

__all__ = [
    "CaseOutcome",
    "Program",
    "CaseResults",
    "open_program",
    "relay",
    "run_test_cases",
]

HARNESS_SOURCE = Path(harness.__file__).read_text(encoding="utf-8")
DEFAULT_LINE_LIMIT = 64 * 1024 * 1024  # the longest reply (one test's output) nel reads
SETUP_SLACK_S = 5.0  # interpreter start-up on a loaded machine, on top of the setup budget

# Judge(index, reply) -> (status, detail); status "passed" or a failure kind.
Judge = Callable[[int, dict[str, Any]], tuple[str, str]]
Slot = Callable[[], contextlib.AbstractAsyncContextManager[Any]]


@dataclass(frozen=True)
class Program:
    """What runs in the sandbox: ``source`` under the harness's ``mode`` (``call``: the
    ``target`` function, or method ``target`` of a fresh ``instantiate()`` object;
    ``stdio``: the zero-argument ``target`` with stdin/stdout redirected; ``checker``: the
    test function ``target``, its stand-in candidate also bound to ``candidate_name``)."""

    source: str
    mode: str
    target: str
    instantiate: str | None = None
    candidate_name: str | None = None
    module_name: str = "__main__"

    def files(self) -> dict[str, str | bytes]:
        setup = {
            "mode": self.mode, "source": "solution.py", "target": self.target, "instantiate": self.instantiate,
            "candidate_name": self.candidate_name, "module_name": self.module_name,
        }  # fmt: skip
        return {"solution.py": self.source, "setup.json": json.dumps(setup)}


@dataclass(frozen=True)
class CaseOutcome:
    """One test case: ``status`` ``passed``, ``wrong_answer``, ``runtime_error``,
    ``not_plain_data``, ``timeout``, ``crashed`` (the program died or broke the protocol);
    ``detail`` says what (truncated); ``time_s`` is nel's measurement."""

    index: int
    status: str
    detail: str = ""
    time_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class CaseResults:
    """All test cases of one program. ``setup_error``: the program failed before the first
    test (syntax error, missing target, timed out loading); ``outcomes`` are in case order,
    without the cases never run."""

    total: int
    outcomes: list[CaseOutcome] = field(default_factory=list)
    setup_error: str | None = None
    setup_status: str | None = None
    stderr_tail: str = ""
    duration_s: float = 0.0
    isolation: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return (
            self.setup_error is None
            and len(self.outcomes) == self.total
            and all(o.passed for o in self.outcomes)
        )

    @property
    def first_failure(self) -> CaseOutcome | None:
        return next((o for o in self.outcomes if not o.passed), None)


async def start_program(
    program: Program, *, overall_timeout: float, limits: SandboxLimits | None
) -> SandboxSession:
    return await SandboxSession.start(
        HARNESS_SOURCE,
        files=program.files(),
        timeout=overall_timeout,
        limits=limits,
        line_limit=DEFAULT_LINE_LIMIT,
    )


async def wait_ready(session: SandboxSession, setup_timeout: float) -> dict[str, Any]:
    """The harness's first reply: ``{"ready": true}``, or why not (``error``; ``timeout``)."""
    try:
        ready = _parse(await session.read_line(setup_timeout + SETUP_SLACK_S))
    except TimeoutError:
        return {"ready": False, "error": "timeout", "timeout": True}
    if ready is None:
        return {"ready": False, "error": "the program ended before it was ready", "ended": True}
    return ready


@contextlib.asynccontextmanager
async def open_program(
    program: Program, *, setup_timeout: float, overall_timeout: float, limits: SandboxLimits | None = None
) -> Any:
    """A started session of ``program`` and the harness's first reply (see :func:`wait_ready`)."""
    async with await start_program(program, overall_timeout=overall_timeout, limits=limits) as session:
        yield session, await wait_ready(session, setup_timeout)


def _parse(line: bytes | None) -> dict[str, Any] | None:
    if line is None:
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


async def run_test_cases(
    program: Program,
    requests: Sequence[dict[str, Any]],
    judge: Judge,
    *,
    test_timeout: float | Sequence[float],
    overall_timeout: float,
    setup_timeout: float | None = None,
    stop_at_first_failure: bool = True,
    workers: int = 1,
    limits: SandboxLimits | None = None,
    slot: Slot | None = None,
) -> CaseResults:
    """Run every request against ``program`` and judge each reply here (see the module doc).

    ``slot`` (e.g. :meth:`LocalSandbox.slot`) is held by each worker sandbox while it runs,
    so the sandbox's concurrency bound covers these runs too. ``test_timeout`` is one limit
    for every case or one per case (EvalPlus scales each by the reference solution's time).
    """
    run = CaseResults(total=len(requests))
    start = time.monotonic()
    state = _Shared(len(requests), stop_at_first_failure)
    limits_each = (
        [float(test_timeout)] * len(requests)
        if isinstance(test_timeout, (int, float))
        else list(test_timeout)
    )
    setup = setup_timeout if setup_timeout is not None else max(limits_each, default=1.0)
    job = _Worker(program, requests, judge, limits_each, overall_timeout, setup, limits)
    count = max(1, min(workers, len(requests)))
    results = await asyncio.gather(*[job.run(state, slot) for _ in range(count)])
    run.outcomes = sorted(state.outcomes.values(), key=lambda o: o.index)
    if stop_at_first_failure and run.first_failure is not None:
        run.outcomes = [o for o in run.outcomes if o.index <= run.first_failure.index]
    setup_failures = [r for r in results if r.setup_error is not None]
    if setup_failures and not run.outcomes:
        run.setup_error, run.setup_status = setup_failures[0].setup_error, setup_failures[0].setup_status
    run.stderr_tail = "".join(r.stderr for r in results)[-2000:]
    run.isolation = next((r.isolation for r in results if r.isolation), {})
    run.duration_s = time.monotonic() - start
    return run


class _Shared:
    """The test cases the workers share: the next index to take, and where to stop."""

    def __init__(self, total: int, stop_at_first_failure: bool) -> None:
        self.total = total
        self.next = 0
        self.stop_at = total
        self.stop_at_first_failure = stop_at_first_failure
        self.outcomes: dict[int, CaseOutcome] = {}

    def take(self) -> int | None:
        if self.next >= min(self.total, self.stop_at):
            return None
        self.next += 1
        return self.next - 1

    def record(self, outcome: CaseOutcome) -> None:
        self.outcomes[outcome.index] = outcome
        if not outcome.passed and self.stop_at_first_failure:
            self.stop_at = min(self.stop_at, outcome.index)


@dataclass
class _WorkerResult:
    setup_error: str | None = None
    setup_status: str | None = None
    stderr: str = ""
    isolation: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Worker:
    program: Program
    requests: Sequence[dict[str, Any]]
    judge: Judge
    test_timeouts: Sequence[float]
    overall_timeout: float
    setup_timeout: float
    limits: SandboxLimits | None

    async def run(self, state: _Shared, slot: Slot | None) -> _WorkerResult:
        async with slot() if slot is not None else contextlib.nullcontext():
            return await self._run(state)

    async def _run(self, state: _Shared) -> _WorkerResult:
        result = _WorkerResult()
        program, setup = self.program, self.setup_timeout
        async with open_program(
            program, setup_timeout=setup, overall_timeout=self.overall_timeout, limits=self.limits
        ) as (
            session,
            ready,
        ):
            if not ready.get("ready"):
                result.setup_status = "timeout" if ready.get("timeout") else "error"
                result.setup_error = str(ready.get("error"))
            else:
                await self._cases(session, state)
            ended: ExecutionResult = await session.finish(wait=False)
        if ready.get("ended"):
            result.setup_error = f"{result.setup_error} ({ended.status}, exit {ended.returncode})"
        result.stderr, result.isolation = ended.stderr, ended.isolation
        return result

    async def _cases(self, session: SandboxSession, state: _Shared) -> None:
        while (index := state.take()) is not None:
            outcome = await self._case(session, index)
            state.record(outcome)
            if outcome.status in ("timeout", "crashed"):
                return  # this sandbox is gone or stuck; in stop-at-first-failure mode all stop

    async def _case(self, session: SandboxSession, index: int) -> CaseOutcome:
        limit = self.test_timeouts[index]
        sent = time.monotonic()
        if not await session.send_line(harness.dumps(self.requests[index])):
            return CaseOutcome(index, "crashed", "the program stopped reading its input")
        try:
            reply = _parse(await session.read_line(limit))
        except TimeoutError:
            return CaseOutcome(index, "timeout", f"no answer within {limit:g}s", time.monotonic() - sent)
        elapsed = time.monotonic() - sent
        if reply is None:
            return CaseOutcome(index, "crashed", "the program died or broke the protocol", elapsed)
        if elapsed > limit:
            return CaseOutcome(index, "timeout", f"answered after {elapsed:.2f}s", elapsed)
        if not reply.get("ok"):
            error = str(reply.get("error", ""))
            status = "not_plain_data" if "not plain data" in error else "runtime_error"
            return CaseOutcome(index, status, error[-2000:], elapsed)
        status, detail = self.judge(index, reply)
        return CaseOutcome(index, status, detail, elapsed)


async def relay(
    checker: Program, candidate: Program, *, timeout: float, limits: SandboxLimits | None = None
) -> dict[str, Any]:
    """Run a test that calls the candidate itself (``check(candidate)``): ``checker`` (trusted
    test code, mode ``checker``) and ``candidate`` (mode ``call``) in two sandboxes started
    together, with nel carrying each call and its plain-data reply between them. The verdict
    is the checker's: the candidate's process never sees the test, the expected values or
    the checker's channel.

    Returns ``{"passed", "status" (ok, failed, error, timeout), "error", "calls",
    "candidate": ExecutionResult}``; raises ScoringError when the test itself cannot load.
    """
    deadline = time.monotonic() + timeout
    outcome: dict[str, Any] = {"passed": False, "status": "error", "error": "", "calls": 0}
    async with contextlib.AsyncExitStack() as stack:
        started = await asyncio.gather(
            start_program(checker, overall_timeout=timeout + 2 * SETUP_SLACK_S, limits=limits),
            start_program(candidate, overall_timeout=timeout + SETUP_SLACK_S, limits=limits),
            return_exceptions=True,
        )
        for session in started:
            if isinstance(session, SandboxSession):
                stack.push_async_exit(session)
        for session in started:
            if isinstance(session, BaseException):
                raise session
        check, solve = (s for s in started if isinstance(s, SandboxSession))
        check_ready, solve_ready = await asyncio.gather(
            wait_ready(check, timeout), wait_ready(solve, timeout)
        )
        if not check_ready.get("ready"):
            checked = await check.finish(wait=False)
            raise ScoringError(f"the tests do not load: {check_ready.get('error')} {checked.stderr[-500:]}")
        if not solve_ready.get("ready"):
            status = "timeout" if solve_ready.get("timeout") else "error"
            outcome.update(
                status=status, error=str(solve_ready.get("error", "")), ended=bool(solve_ready.get("ended"))
            )
        else:
            await _carry(check, solve, deadline, outcome)
        outcome["candidate"] = await solve.finish(wait=False)
        await check.finish(wait=False)
    return outcome


async def _carry(
    check: SandboxSession, solve: SandboxSession, deadline: float, outcome: dict[str, Any]
) -> None:
    while True:
        try:
            message = _parse(await check.read_line(deadline - time.monotonic()))
            if message is None:
                raise ScoringError("the checker died while running the tests")
            if "done" in message:
                passed = message["done"] is True
                outcome.update(
                    passed=passed, status="ok" if passed else "failed", error=str(message.get("error", ""))
                )
                return
            outcome["calls"] += 1
            if not await solve.send_line(harness.dumps({"args": message.get("call", [])})):
                outcome.update(status="error", error="the candidate program ended")
                return
            reply = _parse(await solve.read_line(deadline - time.monotonic()))
        except TimeoutError:
            outcome.update(status="timeout", error="the tests did not finish in time")
            return
        if reply is None:
            outcome.update(status="error", error="the candidate program ended or broke the protocol")
            return
        plain = {
            "ok": reply.get("ok") is True,
            "value": reply.get("value"),
            "error": str(reply.get("error", "")),
        }
        if not await check.send_line(harness.dumps(plain)):
            raise ScoringError("the checker died while running the tests")
