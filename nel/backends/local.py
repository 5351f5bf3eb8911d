"""The local backend: run the shards in this process, one after another, then the reducer.

``hydra/launcher=basic``, ``backend=local``, ``nel resume --local`` and ``mode: local`` sweeps.
It keeps no jobs: ``submit`` returns once the reducer has run, so the state of the run is
what its shards wrote (progress.json, parts) and whether the reducer wrote metrics.json.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar, TextIO

from nel.backends.base import JobState, ShardRequest, Submission, ranges
from nel.errors import NelError
from nel.rundir import RunDir


class LocalBackend:
    name: ClassVar[str] = "local"
    keeps_jobs: ClassVar[bool] = False

    def check(self) -> None:
        return None

    def describe(self, request: ShardRequest) -> str:
        todo = (
            f"shard(s) {ranges(request.shards)} of {request.total_shards}" if request.shards else "no shard"
        )
        spec = request.spec
        return "\n".join(
            [
                f"run dir:  {request.run_dir}",
                f"bench:    {spec.bench}   model: {spec.model.model_id} @ {spec.model.url}   repeats: {spec.repeats}",
                f"config:   {spec.config_hash()}   api key from: ${spec.model.api_key_env}",
                f"local:    {todo} in this process, one after another, then the reducer",
            ]
        )

    def submit(self, request: ShardRequest, out: TextIO) -> Submission | None:
        """Run the shards (a failing one is noted and the others still run, like a failed
        array task), then the reducer, which names what is missing or failed."""
        from nel.reduce import reduce_run
        from nel.runner import run_shard

        spec = request.spec
        api_key = os.environ.get(spec.model.api_key_env)
        print(f"nel: run dir {request.run_dir}; running shard(s) {ranges(request.shards) or 'none'} here",
              file=out, flush=True)  # fmt: skip
        for idx in request.shards:
            print(f"nel: shard {idx} of {request.total_shards}", file=out, flush=True)
            try:
                result = run_shard(spec, shard_idx=idx, total_shards=request.total_shards, api_key=api_key)
            except NelError as exc:
                print(f"nel: error: shard {idx} failed: {exc}", file=sys.stderr, flush=True)
                continue
            print(f"nel: shard {idx}: {result.done}/{result.total} done, {result.failed} failed",
                  file=out, flush=True)  # fmt: skip
        try:
            reduce_run(spec.output_dir, allow_partial=request.allow_partial)
        except NelError as exc:
            print(f"nel: error: reduce: {exc}", file=sys.stderr, flush=True)
            return None
        print(RunDir(spec.output_dir).report.read_text(), file=out, flush=True)
        return None

    def states(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        return {}

    def cancel(self, job_ids: Iterable[str]) -> None:
        return None

    def log_tail(self, run_dir: Path, job: str) -> str:
        return "(the local backend keeps no job logs: the shard's error is in its progress.json)"
