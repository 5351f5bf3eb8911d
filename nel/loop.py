"""The eval loop: seed → solve → verify for every (problem, repeat) of one shard.

Workers pull tasks one at a time from a lazy source, so memory stays
O(concurrency) however many problems a shard has, and each problem is seeded once for
all of its repeats. Rows go to the shard's Parquet writer as they finish; a cancel
(Ctrl-C, SIGTERM) flushes what finished before it propagates.
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

from nel.environments.base import EvalEnvironment
from nel.errors import EndpointUnreachableError, IncompleteRunError, ModelCallError
from nel.progress import Counters, Reporter, make_reporter
from nel.reduce import ReduceResult, reduce_run
from nel.rundir import open_run, shard_dir, write_progress
from nel.sharding import Shard
from nel.solvers import Solver
from nel.store import TERMINAL_ERROR_KINDS, ShardWriter, finished_keys
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
    shard: Shard | None = None,
    identity: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    overwrite: bool = False,
    reduce: bool | None = None,
    allow_partial: bool = False,
    progress: Reporter | str = "auto",
    flush_rows: int = 2000,
    flush_seconds: float = 10.0,
) -> EvalResult:
    """Evaluate ``solver`` on ``env`` and write trajectories under ``output_dir``.

    Rerunning with the same arguments on the same ``output_dir`` does only what is
    missing. ``identity`` (what changes results) defaults to one derived from the
    environment, the solver and the repeat/problem counts. ``reduce`` defaults to True for
    an unsharded run; a shard of a larger run leaves merging to ``nel reduce``.
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
    directory = shard_dir(run_dir, shard.idx, shard.total)
    directory.mkdir(parents=True, exist_ok=True)
    skip = {key for key in finished_keys(directory) if key[0] in problems and key[1] < n_repeats}
    writer = ShardWriter(
        directory,
        metadata={**env.describe(), "nel.run_id": info.run_id},
        flush_rows=flush_rows,
        flush_seconds=flush_seconds,
    )
    counters = Counters(total=len(problems) * n_repeats, already=len(skip))
    runner = _ShardRun(env, solver, writer, counters, info.run_id, shard, n_repeats, concurrency)
    # The reducer learns from progress.json which keys this shard owes.
    owed = {"problems": [problems.start, problems.stop], "repeats": n_repeats}

    label = f"{env.name} shard {shard.idx + 1}/{shard.total}"
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
        writer.flush()
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
        self.constant = {
            "run_id": run_id,
            "benchmark": env.name,
            "shard_idx": shard.idx,
            "total_shards": shard.total,
        }
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
            if row["error_kind"] in TERMINAL_ERROR_KINDS:
                self.counters.done += 1
            else:
                self.counters.failed += 1
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
                self._flushing = asyncio.create_task(asyncio.to_thread(self.writer.write, *staged))

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

    async def _execute(self, task: Task) -> dict[str, Any]:
        seed = task.seed
        started = time.time()
        row: dict[str, Any] = {
            **self.constant,
            "problem_idx": task.problem_idx,
            "repeat": task.repeat,
            "subset": seed.subset,
            "expected_answer": _as_text(seed.expected_answer),
            "started_at": started,
            "error_kind": "none",
            "reward": 0.0,
            "correct": False,
        }
        try:
            solved = await self.solver.solve(task)
        except EndpointUnreachableError:
            raise  # the server was never reached: stop the shard, rows would only repeat it
        except ModelCallError as exc:
            row.update(_failed_call(exc))
        except Exception as exc:  # a solver bug must not kill the other 10,000 tasks
            row.update(error_kind="solver_error", error=f"{type(exc).__name__}: {exc}")
        else:
            row.update(_solved_fields(solved))
            row.update(await self._verify(solved.response, seed))
        row["finished_at"] = time.time()
        return row

    async def _verify(self, response: str, seed: SeedResult) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            verdict = await self.env.verify(response, seed.expected_answer, **seed.metadata)
        except Exception as exc:
            return {
                "error_kind": "scoring_error",
                "error": f"{type(exc).__name__}: {exc}",
                "verify_time_s": time.perf_counter() - t0,
            }
        return {**_verdict_fields(verdict, self.env.score_names), "verify_time_s": time.perf_counter() - t0}


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


def _solved_fields(solved: SolveResult) -> dict[str, Any]:
    calls = solved.calls
    if len(calls) == 1:  # the common case, on the hot path: no generators
        call = calls[0]
        return {
            "messages": orjson.dumps(solved.messages).decode(),
            "response": solved.response,
            "reasoning_content": solved.reasoning_content,
            "finish_reason": call.finish_reason,
            "prompt_tokens": call.prompt_tokens,
            "completion_tokens": call.completion_tokens,
            "reasoning_tokens": call.reasoning_tokens,
            "model_calls": 1,
            "attempts": call.attempts,
            "model_latency_s": call.latency_s,
            "attempt_latencies_s": call.attempt_latencies_s,
        }
    last = calls[-1] if calls else None
    return {
        "messages": orjson.dumps(solved.messages).decode(),
        "response": solved.response,
        "reasoning_content": solved.reasoning_content,
        "finish_reason": last.finish_reason if last else None,
        "prompt_tokens": _sum(c.prompt_tokens for c in calls),
        "completion_tokens": _sum(c.completion_tokens for c in calls),
        "reasoning_tokens": _sum(c.reasoning_tokens for c in calls),
        "model_calls": len(calls),
        "attempts": sum(c.attempts for c in calls),
        "model_latency_s": sum(c.latency_s for c in calls),
        "attempt_latencies_s": [lat for c in calls for lat in c.attempt_latencies_s],
    }


def _failed_call(exc: ModelCallError) -> dict[str, Any]:
    return {
        "messages": orjson.dumps(exc.messages).decode() if exc.messages else None,
        "error_kind": exc.kind,
        "error": str(exc),
        "model_calls": 1,
        "attempts": exc.attempts,
        "model_latency_s": exc.latency_s,
        "attempt_latencies_s": list(exc.attempt_latencies_s),
    }


def _verdict_fields(verdict: VerifyResult, score_names: tuple[str, ...]) -> dict[str, Any]:
    scores = verdict.scores or {score_names[0]: float(verdict.reward)}
    return {
        "reward": float(verdict.reward),
        "correct": verdict.correct,
        "extracted_answer": verdict.extracted_answer,
        "scores": {k: float(v) for k, v in scores.items()},
        "details": orjson.dumps(verdict.details, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        if verdict.details
        else None,
    }


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


def _counts(c: Counters) -> dict[str, int]:
    return {"total": c.total, "done": c.finished, "failed": c.failed}


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
