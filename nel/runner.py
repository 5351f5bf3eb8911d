"""From a RunSpec to a finished shard: build the environment, client and solver, run.

The CLI and the cluster launcher both come through here, so a shard behaves the same
whether a person typed the command or SLURM started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

from nel.client import ModelClient, resolve_api_key
from nel.concurrency import AdaptiveLimit, parse_concurrency
from nel.environments.base import EvalEnvironment
from nel.environments.registry import resolve
from nel.loop import EvalResult, run_evaluation
from nel.progress import Reporter
from nel.rundir import RunDir, RunInfo, open_run
from nel.sharding import Shard
from nel.solvers import ChatSolver
from nel.spec import ModelSpec, RunSpec


class Interrupted(Exception):
    """The shard was stopped by SIGINT/SIGTERM after writing what it had finished."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}; rerun the same command to resume")
        self.signum = signum


def open_spec_run(spec: RunSpec, total_shards: int, *, overwrite: bool = False) -> RunInfo:
    """Create or check run.json for ``spec`` (the launcher calls this before submitting)."""
    return open_run(
        Path(spec.output_dir),
        spec.identity(),
        total_shards=total_shards,
        config=spec.to_dict(),
        overwrite=overwrite,
    )


def build_environment(spec: RunSpec, judge: ModelClient | None = None) -> EvalEnvironment:
    return resolve(
        spec.bench,
        prompt_template=spec.prompt_template,
        system_prompt=spec.system_prompt,
        data_dir=spec.data_dir,
        backend=spec.skills_backend,
        judge=judge,
    )


def build_client(
    model: ModelSpec, api_key: str | None, concurrency: int, limiter: AdaptiveLimit | None = None
) -> ModelClient:
    return ModelClient(
        model.url,
        model.model_id,
        resolve_api_key(api_key, model.api_key_env) or "",
        timeout=model.timeout,
        max_retries=model.max_retries,
        concurrency=concurrency,
        sampling=model.sampling(),
        limiter=limiter,
    )


async def run_spec(
    spec: RunSpec,
    shard: Shard,
    *,
    api_key: str | None = None,
    overwrite: bool = False,
    allow_partial: bool = False,
    progress: Reporter | str = "auto",
    flush_rows: int = 2000,
    flush_seconds: float = 10.0,
    recorded: RunSpec | None = None,
) -> EvalResult:
    """Run one shard of ``spec``. ``recorded`` is the spec as the user wrote it, for run.json,
    when ``spec`` points at a server nel started for this shard (an address that dies with it)."""
    plan = parse_concurrency(spec.concurrency or 0)
    judge = build_client(spec.judge, None, plan.max_in_flight) if spec.judge is not None else None
    try:
        env = build_environment(spec, judge)
    except BaseException:
        if judge is not None:
            await judge.aclose()
        raise
    limiter = plan.limiter()
    client = build_client(spec.model, api_key, plan.max_in_flight, limiter)
    try:
        # Load (or prepare) the data and build one prompt before run.json exists: a bad dataset or
        # --prompt-template must not lock the output dir to a run that never started.
        if env.dataset_size():
            await env.seed(0)
        return await run_evaluation(
            env,
            env.solver(client) or ChatSolver(client),
            n_repeats=spec.repeats,
            max_problems=spec.max_problems,
            output_dir=spec.output_dir,
            concurrency=plan.max_in_flight,
            limiter=limiter,
            shard=shard,
            identity=spec.identity(),
            config=(recorded or spec).to_dict(),
            overwrite=overwrite,
            allow_partial=allow_partial,
            progress=progress,
            flush_rows=flush_rows,
            flush_seconds=flush_seconds,
        )
    finally:
        await client.aclose()
        await env.aclose()
        if judge is not None:
            await judge.aclose()


def run_shard(spec: RunSpec, *, shard_idx: int = 0, total_shards: int = 1, **options: Any) -> EvalResult:
    """Run one shard to completion in a fresh event loop; SIGTERM/SIGINT stop it cleanly.

    ``options`` are `run_spec`'s (api_key, overwrite, allow_partial, progress, flush_rows,
    flush_seconds).
    """
    spec.validate()
    shard = Shard(shard_idx, total_shards)
    with _served_model(spec, shard) as served:
        return _run_loop(_cancellable(run_spec(served, shard, recorded=spec, **options)))


def _run_loop(coro: Coroutine[Any, Any, EvalResult]) -> EvalResult:
    """uvloop where it exists (Linux, macOS): ~7% more requests/s at zero latency, see
    benchmarks/README.md. The loop code itself is plain asyncio."""
    if sys.platform == "win32":
        return asyncio.run(coro)
    import uvloop

    return uvloop.run(coro)


async def _cancellable(coro: Coroutine[Any, Any, EvalResult]) -> EvalResult:
    """Run ``coro`` so that SIGTERM (SLURM preemption) and SIGINT cancel it like Ctrl-C."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro)
    received: list[int] = []

    def stop(signum: int) -> None:
        received.append(signum)
        task.cancel()

    installed = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop, signum)
            installed.append(signum)
    try:
        return await task
    except asyncio.CancelledError:
        if received:
            raise Interrupted(received[0]) from None
        raise
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


@contextlib.contextmanager
def _served_model(spec: RunSpec, shard: Shard) -> Iterator[RunSpec]:
    """Serve the model (and judge) for the duration of the shard when nel is to start it:
    a ``deployment`` (nel.deployment: any server command), of which a ``local://`` URL is one
    (``nel serve``). The yielded spec points at the running server; otherwise it is ``spec``."""
    with contextlib.ExitStack() as stack:
        model = _serve(stack, spec.model, spec, shard, "model")
        judge = None if spec.judge is None else _serve(stack, spec.judge, spec, shard, "judge")
        if model is spec.model and judge is spec.judge:
            yield spec
        else:
            yield dataclasses.replace(spec, model=model, judge=judge)


def _serve(stack: contextlib.ExitStack, model: ModelSpec, spec: RunSpec, shard: Shard, role: str) -> ModelSpec:
    deployment = model.deployment
    if deployment is None and model.url.startswith("local://"):
        from nel.serving.launcher import local_deployment

        deployment = local_deployment(model.url)
    if deployment is None:
        return model
    from nel.deployment import deployed

    log = RunDir(spec.output_dir).deployment_log(role, shard.idx, shard.total)
    url = stack.enter_context(deployed(deployment, model_id=model.model_id, log_path=log))
    return dataclasses.replace(model, url=url)
