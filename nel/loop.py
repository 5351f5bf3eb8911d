"""The eval loop: seed → solve → verify for every (problem, repeat) of one shard.

Workers pull tasks one at a time from a lazy source, so memory stays
O(concurrency) however many problems a shard has, and each problem is seeded once for
all of its repeats. Each row (a `TrajectoryRow`) goes to the shard's writer as it finishes,
which journals it at once (nel.store); a cancel (Ctrl-C, SIGTERM) flushes what finished
before it propagates, and a SIGKILL loses only the requests in flight.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from nel.concurrency import AdaptiveLimit
from nel.environments.base import EvalEnvironment
from nel.errors import EndpointUnreachableError, IncompleteRunError, ModelCallError
from nel.progress import Counters, Reporter, make_reporter
from nel.reduce import ReduceResult, reduce_run
from nel.rundir import RunDir, data_digest, open_run, write_progress
from nel.sharding import Shard
from nel.solvers import Solver
from nel.store import DATA_KEY, RUN_ID_KEY, ShardWriter, finished_keys, recover
from nel.trajectory import TERMINAL_ERROR_KINDS, TrajectoryRow
from nel.types import SeedResult, SolveResult, Task, VerifyResult


@dataclass(frozen=True)
class EvalResult:
    """What one call of `run_evaluation` did, and where it wrote it.

    ``metrics``/``runtime`` are set when the run was reduced (unsharded runs reduce at
    the end); ``incomplete`` then says why they are missing.
    """

    run_dir: Path
    run_id: str
    shard: Shard
    total: int
    done: int
    already_done: int
    failed: int
    metrics: dict[str, Any] | None = None
    runtime: dict[str, Any] | None = None
    incomplete: str | None = None
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.failed == 0 and self.incomplete is None


async def run_evaluation(
    env: EvalEnvironment,
    solver: Solver,
    n_repeats: int = 1,
    max_problems: int | None = None,
    *,
    output_dir: str | Path | None = None,
    concurrency: int = 64,
    limiter: AdaptiveLimit | None = None,
    shard: Shard | None = None,
    identity: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    overwrite: bool = False,
    reduce: bool | None = None,
    allow_partial: bool = False,
    progress: Reporter | str = "auto",
    flush_rows: int = 2000,
    flush_seconds: float = 10.0,
    journal: bool = True,
) -> EvalResult:
    """Evaluate ``solver`` on ``env`` and write trajectories under ``output_dir``.

    Rerunning with the same arguments on the same ``output_dir`` does only what is
    missing. ``identity`` (what changes results) defaults to one derived from the
    environment, the solver and the repeat/problem counts. ``reduce`` defaults to True for
    an unsharded run; a shard of a larger run leaves merging to ``nel reduce``.
    ``journal=False`` keeps rows in memory until their part is written (a SIGKILL then loses
    up to ``flush_rows``/``flush_seconds`` of them); it exists to measure what the journal costs.
    """
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats}")
    shard = shard or Shard()
    run_dir = Path(output_dir) if output_dir is not None else _default_output_dir(env)
    identity = identity or _default_identity(env, solver, n_repeats, max_problems)
    info = open_run(run_dir, identity, total_shards=shard.total, config=config, overwrite=overwrite)
    reporter = make_reporter(progress) if isinstance(progress, str) else progress

    size = env.dataset_size()
    problems = shard.problem_range(min(size, max_problems) if max_problems else size)
    data = data_digest(env.data_files())
    shard_files = RunDir(run_dir).shard(shard.idx, shard.total)
    directory = shard_files.path
    directory.mkdir(parents=True, exist_ok=True)
    recover(shard_files)
    done_keys = finished_keys(shard_files, info.run_id, data)
    skip = {key for key in done_keys if key[0] in problems and key[1] < n_repeats}
    writer = ShardWriter(
        shard_files,
        metadata={**env.describe(), RUN_ID_KEY: info.run_id, DATA_KEY: json.dumps(data)},
        flush_rows=flush_rows,
        flush_seconds=flush_seconds,
        journal=journal,
        defer=asyncio.get_running_loop().call_soon,  # one journal write per turn of the loop
    )
    counters = Counters(total=len(problems) * n_repeats, already=len(skip), limiter=limiter)
    runner = _ShardRun(env, solver, writer, counters, info.run_id, shard, n_repeats, concurrency)
    # The reducer learns from progress.json which keys this shard owes.
    owed = {"problems": [problems.start, problems.stop], "repeats": n_repeats}

    label = f"{env.name} shard {shard.idx} of {shard.total}"  # 0-based, as `nel status` counts
    reporter.start(counters, label)
    write_progress(directory, state="running", **owed, **_counts(counters))
    state, error = "running", None
    try:
        await runner.run(problems, skip, reporter, lambda **kw: write_progress(directory, **owed, **kw))
        state = "failed" if counters.failed else "done"
    except (asyncio.CancelledError, KeyboardInterrupt):
        state = "interrupted"
        raise
    except BaseException as exc:
        state, error = "crashed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        writer.close()
        reporter.stop(counters)
        close = getattr(solver, "aclose", None)
        if callable(close):
            await close()
        write_progress(directory, state=state, error=error, **owed, **_counts(counters))

    result = EvalResult(
        run_dir=run_dir,
        run_id=info.run_id,
        shard=shard,
        total=counters.total,
        done=counters.finished,
        already_done=counters.already,
        failed=counters.failed,
        paths={"run_dir": run_dir, "shard_dir": directory},
    )
    if reduce if reduce is not None else shard.total == 1:
        return _with_reduction(result, run_dir, allow_partial)
    return result


class _ShardRun:
    """The workers of one shard; split out so `run_evaluation` reads top to bottom."""

    def __init__(
        self,
        env: EvalEnvironment,
        solver: Solver,
        writer: ShardWriter,
        counters: Counters,
        run_id: str,
        shard: Shard,
        n_repeats: int,
        concurrency: int,
    ) -> None:
        self.env = env
        self.solver = solver
        self.writer = writer
        self.counters = counters
        self.n_repeats = n_repeats
        self.concurrency = max(1, concurrency)
        self.run_id = run_id
        self.shard = shard
        self._flushing: asyncio.Task[Any] | None = None

    async def run(
        self,
        problems: range,
        skip: set[tuple[int, int]],
        reporter: Reporter,
        save_progress: Callable[..., None],
    ) -> None:
        source = _TaskSource(self.env, problems, skip, self.n_repeats)
        workers = [asyncio.create_task(self._worker(source)) for _ in range(self.concurrency)]
        ticker = asyncio.create_task(self._tick(reporter, save_progress))
        try:
            # A worker that raises (a bug, a full disk) stops the shard at once.
            done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in (*workers, ticker):
                task.cancel()
            await asyncio.gather(*workers, ticker, return_exceptions=True)
            if self._flushing is not None:
                await asyncio.gather(self._flushing, return_exceptions=True)

    async def _worker(self, source: _TaskSource) -> None:
        while (task := await source.next()) is not None:
            row = await self._execute(task)
            self.writer.append(row)
            self.counters.count(row, row.error_kind in TERMINAL_ERROR_KINDS)
            if self.writer.buffered >= self.writer.flush_rows:
                self._flush_in_background()

    def _flush_in_background(self) -> None:
        # Staging holds the GIL, so it runs here; the write releases it and goes to a thread.
        # One write at a time keeps memory bounded; rows keep buffering meanwhile.
        if self._flushing is None or self._flushing.done():
            failed = self._flushing.exception() if self._flushing is not None else None
            if failed is not None:
                raise failed  # the last write failed (disk full, read-only): stop the shard, say so
            staged = self.writer.stage()
            if staged is not None:
                self._flushing = asyncio.create_task(asyncio.to_thread(self.writer.write, staged))

    async def _tick(self, reporter: Reporter, save_progress: Callable[..., None]) -> None:
        last_flush = last_progress = last_refresh = time.monotonic()
        while True:
            await asyncio.sleep(min(reporter.interval_s, 1.0))
            now = time.monotonic()
            if now - last_refresh >= reporter.interval_s:
                reporter.refresh(self.counters)
                last_refresh = now
            if now - last_flush >= self.writer.flush_seconds:
                self._flush_in_background()
                last_flush = now
            if now - last_progress >= 5.0:
                await asyncio.to_thread(save_progress, state="running", **_counts(self.counters))
                last_progress = now

    async def _execute(self, task: Task) -> TrajectoryRow:
        seed = task.seed
        row = TrajectoryRow(
            run_id=self.run_id,
            benchmark=self.env.name,
            shard_idx=self.shard.idx,
            total_shards=self.shard.total,
            problem_idx=task.problem_idx,
            repeat=task.repeat,
            subset=seed.subset,
            expected_answer=_as_text(seed.expected_answer),
            started_at=time.time(),
        )
        try:
            solved = await self.solver.solve(task)
        except EndpointUnreachableError:
            raise  # the server was never reached: stop the shard, rows would only repeat it
        except ModelCallError as exc:
            _failed_call(row, exc)
        except Exception as exc:  # a solver bug must not kill the other 10,000 tasks
            row.error_kind, row.error = "solver_error", f"{type(exc).__name__}: {exc}"
        else:
            _solved_fields(row, solved)
            if solved.unfinished_reasoning is not None:  # no answer: counted by kind, never scored
                row.error_kind, row.error = "unfinished_reasoning", solved.unfinished_reasoning
            else:
                await self._verify(row, solved.response, seed)
        row.finished_at = time.time()
        return row

    async def _verify(self, row: TrajectoryRow, response: str, seed: SeedResult) -> None:
        t0 = time.perf_counter()
        try:
            verdict = await self.env.verify(response, seed.expected_answer, **seed.metadata)
        except Exception as exc:
            row.error_kind, row.error = "scoring_error", f"{type(exc).__name__}: {exc}"
        else:
            verdict_fields(row, verdict, self.env.score_names)
        row.verify_time_s = time.perf_counter() - t0


class _TaskSource:
    """Hands workers the next (problem, repeat), seeding each problem once, on demand.

    Workers pull instead of a producer pushing through a queue: no handoff per row. Two
    workers may seed two problems at once (each takes its own index first), so at most
    ``concurrency`` problems' repeats are held beyond the tasks in flight.
    """

    def __init__(self, env: EvalEnvironment, problems: range, skip: set[tuple[int, int]], n_repeats: int) -> None:
        self.env = env
        self.skip = skip
        self.n_repeats = n_repeats
        self._problems = iter(problems)
        self._pending: collections.deque[Task] = collections.deque()

    async def next(self) -> Task | None:
        while not self._pending:
            idx = next(self._problems, None)
            if idx is None:
                return None
            repeats = [r for r in range(self.n_repeats) if (idx, r) not in self.skip]
            if repeats:
                seed = await self.env.seed(idx)
                self._pending.extend(Task(idx, r, seed) for r in repeats)
        return self._pending.popleft()


def _solved_fields(row: TrajectoryRow, solved: SolveResult) -> None:
    calls = solved.calls
    row.messages = orjson.dumps(solved.messages).decode()
    row.response = solved.response
    row.reasoning_content = solved.reasoning_content
    row.model_calls = len(calls)
    if len(calls) == 1:  # the common case, on the hot path: no generators
        call = calls[0]
        row.finish_reason = call.finish_reason
        row.prompt_tokens = call.prompt_tokens
        row.completion_tokens = call.completion_tokens
        row.reasoning_tokens = call.reasoning_tokens
        row.attempts = call.attempts
        row.model_latency_s = call.latency_s
        row.attempt_latencies_s = call.attempt_latencies_s
        if call.tool_calls:
            row.tool_calls = orjson.dumps(call.tool_calls).decode()
        row.cached_calls = 1 if call.cached else 0
        return
    row.finish_reason = calls[-1].finish_reason if calls else None
    row.prompt_tokens = _sum(c.prompt_tokens for c in calls)
    row.completion_tokens = _sum(c.completion_tokens for c in calls)
    row.reasoning_tokens = _sum(c.reasoning_tokens for c in calls)
    row.attempts = sum(c.attempts for c in calls)
    row.model_latency_s = sum(c.latency_s for c in calls)
    row.attempt_latencies_s = [lat for c in calls for lat in c.attempt_latencies_s]
    tool_calls = [tc for c in calls for tc in c.tool_calls]
    row.tool_calls = orjson.dumps(tool_calls).decode() if tool_calls else None
    row.cached_calls = sum(c.cached for c in calls)


def _failed_call(row: TrajectoryRow, exc: ModelCallError) -> None:
    row.messages = orjson.dumps(exc.messages).decode() if exc.messages else None
    row.error_kind, row.error = exc.kind, str(exc)
    row.model_calls = 1
    row.attempts = exc.attempts
    row.model_latency_s = exc.latency_s
    row.attempt_latencies_s = exc.attempt_latencies_s


def verdict_fields(row: TrajectoryRow, verdict: VerifyResult, score_names: tuple[str, ...]) -> None:
    scores = verdict.scores or {score_names[0]: float(verdict.reward)}
    row.reward = float(verdict.reward)
    row.correct = verdict.correct
    row.extracted_answer = verdict.extracted_answer
    row.scores = {k: float(v) for k, v in scores.items()}
    if verdict.details:
        row.details = orjson.dumps(verdict.details, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _with_reduction(result: EvalResult, run_dir: Path, allow_partial: bool) -> EvalResult:
    try:
        reduced: ReduceResult = reduce_run(run_dir, allow_partial=allow_partial)
    except IncompleteRunError as exc:
        return _replace(result, incomplete=str(exc))
    return _replace(
        result,
        metrics=reduced.metrics,
        runtime=reduced.runtime,
        incomplete=None if reduced.complete else reduced.problem_summary,
        paths={**result.paths, **reduced.paths},
    )


def _replace(result: EvalResult, **changes: Any) -> EvalResult:
    return dataclasses.replace(result, **changes)


def _counts(c: Counters) -> dict[str, Any]:
    counts: dict[str, Any] = {"total": c.total, "done": c.finished, "failed": c.failed, "retries": c.retries}
    if c.limiter is not None:
        counts["concurrency"] = c.limiter.summary()
    return counts


def _sum(values: Any) -> int | None:
    total = None
    for value in values:
        if value is not None:
            total = value if total is None else total + value
    return total


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _default_output_dir(env: EvalEnvironment) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("nel_runs") / f"{env.name}-{stamp}"


def _default_identity(env: EvalEnvironment, solver: Solver, n_repeats: int, max_problems: int | None) -> dict[str, Any]:
    describe = getattr(solver, "describe", None)
    return {
        "bench": env.name,
        "solver": describe() if callable(describe) else type(solver).__name__,
        "repeats": n_repeats,
        "max_problems": max_problems,
    }
