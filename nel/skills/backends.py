"""Two backends behind one interface: nel's native catalog, or the nemo_skills package.

A backend answers, for one benchmark: its METRICS_TYPE and eval split, how a row becomes a
chat request, how the split is prepared, and which scorer grades a response.
:class:`SkillsEnvironment <nel.environments.skills.SkillsEnvironment>` talks only to this
interface. ``auto`` picks nemo_skills when the package is importable and its backend can
score the benchmark here, else the native catalog; the choice is recorded in every
Parquet part (``nel.skills_backend``) and shown by ``nel list``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

from nel.client import ModelClient
from nel.errors import ConfigError, UnknownBenchmarkError
from nel.execution.sandbox import CodeExecutor
from nel.skills.catalog import CATALOG, Benchmark, get_benchmark
from nel.skills.prepare import prepare
from nel.skills.prompts import build_messages, get_prompt_config
from nel.skills.scoring_types import SCORING_TYPES, RowScorer, ScoringOptions
from nel.types import Message

BACKENDS = ("auto", "native", "nemo_skills")
Row = dict


class SkillsBackend(Protocol):
    kind: str
    name: str
    metrics_type: str
    eval_split: str
    prompt_config: str | None
    required_fields: tuple[str, ...]
    num_problems: int | None

    @property
    def score_names(self) -> tuple[str, ...]:
        """The per-row scores of its METRICS_TYPE (empty when nel has no scoring type for it)."""

    @property
    def needs_judge(self) -> bool: ...

    def unsupported_reason(self) -> str | None:
        """Why this backend cannot run the benchmark here (None: it can)."""

    def build_messages(
        self, row: Row, *, where: str, user_template: str | None, system: str | None
    ) -> tuple[Message, ...]:
        """The request for ``row``; ``user_template``/``system`` override the prompt config's."""

    def prepare(self, data_dir: Path, *, mirror: str | None, show_progress: bool) -> Path:
        """Write ``<data_dir>/<name>/<eval_split>.jsonl`` and return its path."""

    def make_scorer(
        self, *, judge: ModelClient | None, workers: int | None, executor: CodeExecutor | None
    ) -> RowScorer: ...


class NativeBackend:
    """nel's own catalog, prompts, preparation and scorers."""

    kind = "native"

    def __init__(self, bench: Benchmark) -> None:
        self.bench = bench
        self.name = bench.name
        self.metrics_type = bench.metrics_type
        self.eval_split = bench.eval_split
        self.prompt_config = bench.prompt_config
        self.required_fields = bench.required_fields
        self.num_problems = bench.num_problems
        self.score_names = bench.score_names
        self.needs_judge = bench.needs_judge
        self.solver = bench.solver

    def unsupported_reason(self) -> str | None:
        if self.bench.not_runnable:
            return self.bench.not_runnable
        if self.bench.scoring is None:
            known = ", ".join(sorted(SCORING_TYPES))
            return f"nel has no scorer for METRICS_TYPE {self.metrics_type!r} (has: {known})"
        return self.bench.scoring.missing(self.bench.eval_type)

    def build_messages(
        self, row: Row, *, where: str, user_template: str | None, system: str | None
    ) -> tuple[Message, ...]:
        if user_template is None or system is None:
            if self.prompt_config is None:
                raise ConfigError(f"skills://{self.name} has no prompt config; pass a prompt template")
            config = get_prompt_config(self.prompt_config)
            user_template = config.user if user_template is None else user_template
            system = config.system if system is None else system
        return build_messages(user_template, system, row, where=where)

    def prepare(self, data_dir: Path, *, mirror: str | None, show_progress: bool) -> Path:
        return prepare(self.bench, data_dir, mirror=mirror, show_progress=show_progress)

    def make_scorer(
        self, *, judge: ModelClient | None, workers: int | None, executor: CodeExecutor | None
    ) -> RowScorer:
        reason, scoring = self.unsupported_reason(), self.bench.scoring
        if reason is not None or scoring is None:
            raise ConfigError(f"skills://{self.name}: {reason}")
        judge_config = self.bench.judge_prompt_config
        options = ScoringOptions(
            benchmark=self.name,
            metrics_type=self.metrics_type,
            eval_type=self.bench.eval_type,
            extract_regex=self.bench.extract_regex,
            judge=judge,
            # A type that calls the judge itself reads its own prompt (Arena's pair, AlpacaEval's package file).
            judge_template=get_prompt_config(judge_config).user if judge_config and not scoring.judged_by_scorer else None,
            judge_prompt_config=judge_config,
            workers=workers,
            executor=executor,
        )
        return scoring.make_scorer(options)


def nemo_skills_available() -> bool:
    return importlib.util.find_spec("nemo_skills") is not None


def select_backend(name: str, choice: str = "auto") -> SkillsBackend:
    """The backend that serves ``name`` under ``choice`` (auto, native or nemo_skills)."""
    if choice not in BACKENDS:
        raise ConfigError(f"skills backend {choice!r} is not one of {', '.join(BACKENDS)}")
    if choice == "native":
        return NativeBackend(get_benchmark(name))
    if choice == "nemo_skills":
        if not nemo_skills_available():
            raise ConfigError(
                "--skills-backend nemo_skills: the nemo_skills package is not importable; install NeMo-Skills "
                "(docs/benchmarks.md) or use --skills-backend native"
            )
        from nel.skills.nemo_backend import NemoSkillsBackend

        return NemoSkillsBackend(name)
    if nemo_skills_available():
        from nel.skills.nemo_backend import NemoSkillsBackend

        try:
            candidate = NemoSkillsBackend(name)
        except UnknownBenchmarkError:
            candidate = None
        if candidate is not None and (candidate.unsupported_reason() is None or name not in CATALOG):
            return candidate
    return NativeBackend(get_benchmark(name))
