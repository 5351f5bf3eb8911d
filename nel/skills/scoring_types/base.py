"""What a scoring type is: everything nel knows about one METRICS_TYPE, in one frozen object.

A :class:`ScoringType` names its per-row scores (NeMo-Skills' metrics keys, so metrics.json
reads like ``ns summarize_results``), builds the row scorer that fills them, says how an LLM
judge's reply becomes a verdict (judged types), which metrics it adds to the generic pass@k
set, and what the machine must have for it to work (packages, a sandbox, a judge). The
registry (``nel.skills.scoring_types``) maps METRICS_TYPE to it; nothing else keys on the name.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from nel.client import ModelClient
from nel.errors import ConfigError, ScoringError
from nel.execution.pool import ScoringPool
from nel.execution.sandbox import CodeExecutor
from nel.metrics import MetricsHook
from nel.skills.judge import JudgeScorer, Verdict
from nel.types import VerifyResult

Row = dict[str, Any]


class RowScorer(Protocol):
    async def score(self, response: str, row: Row, *, where: str) -> VerifyResult: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class ScoringOptions:
    """What a scorer may need besides the row: set by the environment from its arguments.

    ``judge_template`` is the judge prompt (already resolved by the backend);
    ``workers`` sizes the scoring process pool (None: one per core); ``executor`` runs
    generated code (None: a local sandbox, one run per core at a time).
    """

    benchmark: str
    metrics_type: str
    eval_type: str | None = None  # which evaluator of the METRICS_TYPE (NeMo-Skills' ++eval_type)
    extract_regex: str | None = None
    judge: ModelClient | None = None
    judge_template: str | None = None
    judge_prompt_config: str | None = None
    workers: int | None = None
    executor: CodeExecutor | None = None
    code_timeout: float = 10.0
    math_timeout: float = 10.0


@dataclass(frozen=True)
class Package:
    """A module a scorer imports at scoring time, checked before the first request."""

    module: str
    what: str


@dataclass(frozen=True)
class ScoringType:
    """One METRICS_TYPE.

    ``scorer`` builds the row scorer; a judged type has ``verdict`` instead (the judge's
    reply and the response -> the row's result) and gets nel's judge scorer. ``row_scores``
    turns an evaluator's output fields into the per-row scores where nel defines them
    (the nemo_skills backend uses NeMo-Skills' metrics class otherwise). ``answer_key`` is
    the field majority@k votes on in NeMo-Skills' metrics (``generation``: the response).
    """

    name: str
    score_names: tuple[str, ...]
    scorer: Callable[[ScoringOptions], RowScorer] | None = None
    verdict: Verdict | None = None
    extra_metrics: MetricsHook | None = None
    row_scores: Callable[[Mapping[str, Any]], dict[str, float]] | None = None
    answer_key: str = "predicted_answer"
    packages: tuple[Package, ...] = ()
    sandbox: bool = False
    available: Callable[[], str | None] | None = None  # another need than a package (a data file): why not, or None
    eval_type_packages: Mapping[str, tuple[Package, ...]] | None = None  # more packages per eval_type
    judged_by_scorer: bool = False
    """The ``scorer`` calls the judge itself (several calls per row): the type needs a judge."""

    def __post_init__(self) -> None:
        if (self.scorer is None) == (self.verdict is None):
            raise ValueError(f"scoring type {self.name!r} needs exactly one of scorer and verdict")
        if not self.score_names:
            raise ValueError(f"scoring type {self.name!r} names no scores")

    @property
    def needs_judge(self) -> bool:
        return self.verdict is not None or self.judged_by_scorer

    def missing(self, eval_type: str | None = None) -> str | None:
        """Why this type cannot score on this machine (a package is not installed), or None."""
        more = (self.eval_type_packages or {}).get(eval_type or "", ())
        for package in (*self.packages, *more):
            if importlib.util.find_spec(package.module) is None:
                return f"METRICS_TYPE {self.name!r} needs {package.what} ({package.module}), which is not installed"
        return self.available() if self.available is not None else None

    def make_scorer(self, options: ScoringOptions) -> RowScorer:
        reason = self.missing(options.eval_type)
        if reason is not None:
            raise ConfigError(f"skills://{options.benchmark}: {reason}")
        if self.needs_judge and options.judge is None:
            raise ConfigError(
                f"skills://{options.benchmark} is graded by an LLM judge ({options.judge_prompt_config}); "
                "pass --judge-url and --judge-model (or judge= to SkillsEnvironment)"
            )
        if self.scorer is not None:
            return self.scorer(options)
        assert self.verdict is not None and options.judge is not None
        if options.judge_template is None or options.judge_prompt_config is None:
            raise ConfigError(f"skills://{options.benchmark}: METRICS_TYPE {self.name} has no judge prompt")
        return JudgeScorer(options.judge, options.judge_template, self.verdict, options.judge_prompt_config)


class PoolScorer:
    """Base for row scorers that run CPU-bound work in a lazily started ScoringPool."""

    preload: tuple[str, ...] = ()

    def __init__(self, options: ScoringOptions) -> None:
        self.options = options
        self._pool: ScoringPool | None = None

    @property
    def pool(self) -> ScoringPool:
        if self._pool is None:
            self._pool = ScoringPool(self.options.workers, preload=self.preload)
        return self._pool

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


class InlineScorer:
    """Base for row scorers that need nothing to start or release."""

    def __init__(self, options: ScoringOptions) -> None:
        self.options = options

    async def aclose(self) -> None:
        pass


def expected_text(row: Row, where: str) -> str:
    expected = row.get("expected_answer")
    if expected is None:
        raise ScoringError(f"{where} has no expected_answer")
    return str(expected)
