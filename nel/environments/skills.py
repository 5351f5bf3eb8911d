"""SkillsEnvironment: a NeMo-Skills benchmark as an EvalEnvironment.

It reads NeMo-Skills' prepared layout (preparing the data on first use when it is
missing), builds each prompt from the benchmark's prompt config, and scores with the
scorer of the benchmark's METRICS_TYPE. There is no fallback scorer: a METRICS_TYPE nel
cannot score is an error at construction, not a quiet zero at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nel.environments.base import EvalEnvironment
from nel.errors import ConfigError, DataError
from nel.scoring.math import MathScorer
from nel.scoring.pool import ScoringPool
from nel.skills.catalog import Benchmark, get_benchmark
from nel.skills.data import read_jsonl, resolve_data_dir, split_path
from nel.skills.prepare import prepare
from nel.skills.prompts import get_prompt_config, render
from nel.types import Message, SeedResult, VerifyResult


class SkillsEnvironment(EvalEnvironment):
    """``skills://NAME``: data, prompt and scorer of one NeMo-Skills benchmark."""

    def __init__(
        self,
        name: str,
        prompt_template: str | None = None,
        system_prompt: str | None = None,
        split: str | None = None,
        data_dir: str | Path | None = None,
        *,
        auto_prepare: bool = True,
        scoring_workers: int | None = None,
    ) -> None:
        self.bench: Benchmark = get_benchmark(name)
        if self.bench.not_runnable:
            raise ConfigError(f"skills://{name} cannot run natively yet: {self.bench.not_runnable}")
        self.name = name
        self.metrics_type = self.bench.metrics_type
        self.score_names = self.bench.score_names
        self.split = split or self.bench.eval_split
        self.data_dir = resolve_data_dir(data_dir)
        config = get_prompt_config(self.bench.prompt_config)
        self.user_template = prompt_template if prompt_template is not None else config.user
        self.system_prompt = system_prompt if system_prompt is not None else config.system
        self.auto_prepare = auto_prepare
        self._scoring_workers = scoring_workers
        self._rows: list[dict[str, Any]] | None = None
        self._pool: ScoringPool | None = None
        self._scorer: MathScorer | None = None
        if self.metrics_type != "math":
            raise ConfigError(f"skills://{name}: no scorer for METRICS_TYPE {self.metrics_type!r}")

    @property
    def path(self) -> Path:
        return split_path(self.data_dir, self.name, self.split)

    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            if not self.path.exists():
                if not self.auto_prepare or self.split != self.bench.eval_split:
                    raise DataError(
                        f"{self.path} does not exist; run `nel prepare {self.name} --data-dir {self.data_dir}`"
                    )
                prepare(self.bench, self.data_dir)
            self._rows = read_jsonl(self.path, self.bench.required_fields)
            if not self._rows:
                raise DataError(f"{self.path} has no rows")
        return self._rows

    def dataset_size(self) -> int:
        return len(self.rows())

    async def seed(self, idx: int) -> SeedResult:
        row = self.rows()[idx]
        where = f"row {idx} of {self.path}"
        user = render(self.user_template, row, where=where)
        metadata = {k: row[k] for k in ("subset_for_metrics",) if k in row}
        if self.system_prompt is None:
            return SeedResult(expected_answer=row["expected_answer"], prompt=user, metadata=metadata)
        messages: tuple[Message, ...] = (
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": user},
        )
        return SeedResult(expected_answer=row["expected_answer"], messages=messages, metadata=metadata)

    async def verify(self, response: str, expected: Any, **metadata: Any) -> VerifyResult:
        return await self._math_scorer().score(response, str(expected))

    def _math_scorer(self) -> MathScorer:
        if self._scorer is None:
            self._pool = ScoringPool(self._scoring_workers)
            self._scorer = MathScorer(self._pool, extract_regex=self.bench.extract_regex)
        return self._scorer

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
            self._scorer = None
