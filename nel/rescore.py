"""`nel rescore RUN_DIR`: score a run's stored responses again with today's scorers, no model call.

A grader fixed or a judge changed should not cost a model run: every response is in the
trajectories. Rescoring reads each shard's rows (parts and uncompacted journal segments,
without touching them), re-verifies every row whose model call succeeded, and writes the same
rows with new scoring fields into a new run dir (default ``RUN_DIR/rescored/<scorer version>``),
then reduces it. A row that failed at the model call has no response and stays as it was.

The scorer version names what produced the scores: ``<nel version>+<metrics type>+<digest>``,
the digest (12 hex digits of SHA-256) over the source of every module that decides a score
(nel/scoring, nel/skills/scoring_types, nel/skills/judge.py, nel/execution, the skills
environment) and the judge's model id and sampling. Same code and judge, same version, same
default dir: rescoring twice is idempotent.

As a SLURM array, each task rescores the shard NEL_SHARD_IDX/SLURM_ARRAY_TASK_ID names (the
same variables as `nel eval run`) into the same ``--out``; `nel reduce OUT` merges them after.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import nel
from nel.environments.base import EvalEnvironment
from nel.errors import ConfigError, IncompleteRunError, RunConflictError
from nel.loop import verdict_fields  # the loop's own mapping of a verdict to a row
from nel.reduce import reduce_run
from nel.rundir import RunDir, atomic_file, data_digest, read_progress, read_run, write_json_atomic
from nel.runner import build_client, build_environment
from nel.sharding import shard_from_env
from nel.spec import ModelSpec, RunSpec
from nel.store import DATA_KEY, identity_problem, metadata_of, raise_foreign, read_part, row_sources
from nel.trajectory import SCHEMA, TrajectoryRow, schema_with_metadata
from nel.types import SeedResult
from nel.version import __version__

RESCORABLE_KINDS = frozenset({"none", "scoring_error"})
"""Rows whose model call succeeded (a scorer that raised is exactly what a rescore may fix)."""
_SCORING_FIELDS = ("extracted_answer", "reward", "correct", "scores", "details", "error_kind", "error",
                   "verify_time_s")  # fmt: skip
_SCORER_SOURCES = ("scoring", "skills/scoring_types", "skills/judge.py", "execution", "environments/skills.py")
SCORER_VERSION_KEY = "nel.scorer_version"


@dataclass(frozen=True)
class RescoreResult:
    source: Path
    target: Path
    scorer_version: str
    shards: list[int]
    rescored: int
    changed: int
    kept_failed: int
    metrics: dict[str, Any] | None
    incomplete: str | None


def scorer_version(metrics_type: str, judge: ModelSpec | None) -> str:
    """``<nel version>+<metrics type>+<digest of scorer code and judge>`` (see the module doc)."""
    root = Path(nel.__file__).parent
    sha = hashlib.sha256()
    for name in _SCORER_SOURCES:
        path = root / name
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            sha.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes() + b"\0")
    if judge is not None:
        sha.update(json.dumps({"judge": judge.model_id, "sampling": judge.sampling()}, sort_keys=True).encode())
    return f"{__version__}+{metrics_type or 'none'}+{sha.hexdigest()[:12]}"


def rescore_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    judge: ModelSpec | None = None,
    data_dir: str | None = None,
    concurrency: int = 16,
    shards: Sequence[int] | None = None,
    reduce: bool = True,
    allow_partial: bool = False,
) -> RescoreResult:
    """Rescore ``shards`` (default: all) of ``run_dir`` into ``out``; reduce it when every shard is there."""
    source = RunDir(run_dir)
    run = read_run(source.root)
    spec = RunSpec.from_dict(run.get("spec") or {})
    spec = dataclasses.replace(spec, judge=judge or spec.judge, data_dir=data_dir or spec.data_dir)
    total = int(run["total_shards"])
    wanted = list(range(total)) if shards is None else list(shards)
    if any(not 0 <= i < total for i in wanted):
        raise ConfigError(f"{source.root} has {total} shard(s); cannot rescore shard(s) {wanted}")
    return asyncio.run(_rescore(source, run, spec, out, wanted, concurrency, reduce, allow_partial))


async def _rescore(source: RunDir, run: dict[str, Any], spec: RunSpec, out: str | Path | None,
                   shards: list[int], concurrency: int, reduce: bool, allow_partial: bool) -> RescoreResult:  # fmt: skip
    judge = build_client(spec.judge, None, concurrency) if spec.judge is not None else None
    env = build_environment(spec, judge)
    try:
        version = scorer_version(env.metrics_type, spec.judge)
        target = RunDir(out if out is not None else source.rescore(version))
        _open_target(target, source, run, version, spec.judge)
        counts = [0, 0, 0]
        data = data_digest(env.data_files())
        total = int(run["total_shards"])
        for idx in shards:
            shard_counts = await _rescore_shard(env, source, target, run["run_id"], data, idx, total,
                                                version, concurrency)  # fmt: skip
            counts = [a + b for a, b in zip(counts, shard_counts)]
    finally:
        await env.aclose()
        if judge is not None:
            await judge.aclose()
    metrics, incomplete = None, None
    if reduce and len(shards) == total:
        try:
            reduced = reduce_run(target.root, allow_partial=allow_partial)
            metrics = reduced.metrics
            incomplete = None if reduced.complete else reduced.problem_summary
        except IncompleteRunError as exc:
            incomplete = str(exc)
    return RescoreResult(source.root, target.root, version, shards, counts[0], counts[1], counts[2], metrics,
                         incomplete)  # fmt: skip


def _open_target(target: RunDir, source: RunDir, run: dict[str, Any], version: str, judge: ModelSpec | None) -> None:
    """run.json of the rescore: the source's, plus what rescored it. Written without a timestamp, so the
    tasks of an array job that race to write it write the same bytes; a different run there is refused."""
    if target.root.resolve() == source.root.resolve():
        raise ConfigError(f"--out {target.root} is the run itself; a rescore never rewrites the original rows")
    record = {**run, "rescored": {"source": str(source.root), "scorer_version": version,
                                  "judge": None if judge is None else judge.model_id}}  # fmt: skip
    if target.run_file.exists():
        existing = read_run(target.root)
        if existing.get("run_id") != run["run_id"] or existing.get("rescored") != record["rescored"]:
            raise RunConflictError(
                f"{target.root} holds another run or rescore ({target.run_file}); pass another --out"
            )
        return
    if target.row_files():
        raise RunConflictError(f"{target.root} holds trajectory files but no run.json; pass another --out")
    write_json_atomic(target.run_file, record)


async def _rescore_shard(env: EvalEnvironment, source: RunDir, target: RunDir, run_id: str, data: dict[str, str],
                         idx: int, total: int, version: str, concurrency: int) -> list[int]:  # fmt: skip
    """Rescore one shard's files into the target's shard: (rescored, changed, kept failed)."""
    src, dst = source.shard(idx, total), target.shard(idx, total)
    dst.path.mkdir(parents=True, exist_ok=True)
    for stale in dst.parts():  # a rerun of this task replaces its own earlier output
        stale.unlink()
    counts = [0, 0, 0]
    foreign = []
    seeds: dict[int, SeedResult] = {}
    for path in row_sources(src):
        table = read_part(path)
        if not len(table):
            continue
        meta = metadata_of(table)
        problem = identity_problem(path, meta, run_id, data)
        if problem is not None:
            foreign.append(problem)
            continue
        table, file_counts = await _rescore_table(env, table, seeds, concurrency)
        counts = [a + b for a, b in zip(counts, file_counts)]
        meta = {**meta, **env.describe(), DATA_KEY: json.dumps(data), SCORER_VERSION_KEY: version}
        part = dst.path / (path.name if path.suffix == ".parquet" else src.part_of(path).name)
        with atomic_file(part, "wb") as handle:
            pq.write_table(table.cast(schema_with_metadata(meta)), handle, compression="zstd")
    if foreign:
        raise_foreign(src.path, foreign, run_id)
    progress = read_progress(src.path)
    if progress is not None:
        write_json_atomic(dst.progress, {**progress, "rescored_with": version})
    return counts


async def _rescore_table(env: EvalEnvironment, table: pa.Table, seeds: dict[int, SeedResult],
                         concurrency: int) -> tuple[pa.Table, list[int]]:  # fmt: skip
    columns = {name: table.column(name).to_pylist() for name in ("problem_idx", "response", *_SCORING_FIELDS)}
    todo = [i for i, (kind, response) in enumerate(zip(columns["error_kind"], columns["response"]))
            if kind in RESCORABLE_KINDS and response is not None]  # fmt: skip
    gate = asyncio.Semaphore(max(1, concurrency))

    async def score(i: int) -> TrajectoryRow:
        async with gate:
            problem = int(columns["problem_idx"][i])
            if problem not in seeds:
                seeds[problem] = await env.seed(problem)
            return await _verify(env, columns["response"][i], seeds[problem])

    rows = await asyncio.gather(*(score(i) for i in todo))
    before = [(columns["reward"][i], columns["extracted_answer"][i], columns["error_kind"][i]) for i in todo]
    for i, row in zip(todo, rows):
        for name in _SCORING_FIELDS:
            columns[name][i] = getattr(row, name)
    changed = sum(b != (columns["reward"][i], columns["extracted_answer"][i], columns["error_kind"][i])
                  for i, b in zip(todo, before))  # fmt: skip
    for name in _SCORING_FIELDS:
        at = table.column_names.index(name)
        table = table.set_column(at, SCHEMA.field(name), pa.array(columns[name], SCHEMA.field(name).type))
    return table, [len(todo), changed, len(table) - len(todo)]


async def _verify(env: EvalEnvironment, response: str, seed: SeedResult) -> TrajectoryRow:
    """One verdict as the loop records it (the same fields, the same scoring_error on a raise)."""
    row = TrajectoryRow()
    t0 = time.perf_counter()
    try:
        verdict = await env.verify(response, seed.expected_answer, **seed.metadata)
    except Exception as exc:  # a scorer bug scores this row scoring_error, as in the loop
        row.error_kind, row.error = "scoring_error", f"{type(exc).__name__}: {exc}"
    else:
        verdict_fields(row, verdict, env.score_names)
    row.verify_time_s = time.perf_counter() - t0
    return row


def rescore_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nel rescore", description="Score a run's stored responses again.")
    parser.add_argument("run_dir")
    parser.add_argument("--out", help="the new run dir (default: RUN_DIR/rescored/<scorer version>)")
    parser.add_argument("--judge-url", default=os.environ.get("NEL_JUDGE_URL"), help="judge endpoint (NEL_JUDGE_URL)")
    parser.add_argument("--judge-model", default=os.environ.get("NEL_JUDGE_MODEL"), help="judge model (NEL_JUDGE_MODEL)")
    parser.add_argument("--data-dir", help="where the benchmark's data lives (default: the run's)")
    parser.add_argument("--concurrency", type=int, default=16, help="rows scored at once (judge calls in flight)")
    parser.add_argument("--allow-partial", action="store_true", help="write metrics even if rows failed")
    args = parser.parse_args(argv)
    judge = None
    if args.judge_url or args.judge_model:
        judge = ModelSpec(url=args.judge_url or "", model_id=args.judge_model or "", api_key_env="NEL_JUDGE_API_KEY")
        judge.validate("judge")
    shard = shard_from_env()
    sharded = shard.total > 1 or "NEL_SHARD_IDX" in os.environ or "SLURM_ARRAY_TASK_ID" in os.environ
    if sharded and shard.total != int(read_run(Path(args.run_dir))["total_shards"]):
        raise ConfigError(f"NEL_TOTAL_SHARDS={shard.total}, but {args.run_dir} has "
                          f"{read_run(Path(args.run_dir))['total_shards']} shard(s)")  # fmt: skip
    result = rescore_run(args.run_dir, args.out, judge=judge, data_dir=args.data_dir, concurrency=args.concurrency,
                         shards=[shard.idx] if sharded else None, allow_partial=args.allow_partial)  # fmt: skip
    print(f"rescored {result.rescored} row(s) of {args.run_dir} with scorer {result.scorer_version}: "
          f"{result.changed} changed, {result.kept_failed} kept as they were (no response to score); "
          f"run dir {result.target}")  # fmt: skip
    if result.incomplete:
        print(f"nel: incomplete: {result.incomplete}", file=sys.stderr)
        return 1
    if result.metrics is None:
        print(f"when every shard is rescored: nel reduce {result.target}")
        return 0
    from nel.summary import print_summary

    print_summary(result.target)
    return 0
