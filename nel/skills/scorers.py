"""Row scorers by METRICS_TYPE: which ``nel.scoring`` module grades which benchmark.

A row scorer takes the model's response and the benchmark row and returns a
:class:`~nel.types.VerifyResult` whose ``scores`` use NeMo-Skills' metric names for the
type (``nel.skills.catalog.SCORE_NAMES``). :func:`make_scorer` picks the scorer by METRICS_TYPE
and nothing else: a type without a scorer here, or whose scorer cannot work on this machine
(missing package, no judge), is a :class:`~nel.errors.ConfigError` before the first request,
never a different scorer standing in.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from nel.client import ModelClient
from nel.errors import ConfigError, ScoringError
from nel.execution.pool import ScoringPool
from nel.execution.sandbox import CodeExecutor, LocalSandbox
from nel.scoring.exact_match import score_exact_match
from nel.scoring.livecodebench import LiveCodeBenchRowScorer
from nel.scoring.multichoice import DEFAULT_LETTERS, score_multichoice
from nel.skills.judge import VERDICTS, JudgeScorer
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
    extract_regex: str | None = None
    judge: ModelClient | None = None
    judge_template: str | None = None
    judge_prompt_config: str | None = None
    workers: int | None = None
    executor: CodeExecutor | None = None
    code_timeout: float = 10.0
    math_timeout: float = 10.0


class _PoolScorer:
    """Base for scorers that run CPU-bound work in a lazily started ScoringPool."""

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


class MathRowScorer(_PoolScorer):
    """``math``: last ``\\boxed{}`` (else the benchmark's regex), symbolic equivalence."""

    preload = ("nel.scoring.math",)

    def __init__(self, options: ScoringOptions) -> None:
        super().__init__(options)
        from nel.scoring.math import MathScorer

        self._scorer_cls = MathScorer
        self._scorer: Any = None

    async def score(self, response: str, row: Row, *, where: str) -> VerifyResult:
        if self._scorer is None:
            self._scorer = self._scorer_cls(self.pool, self.options.extract_regex, self.options.math_timeout)
        return await self._scorer.score(response, _expected_text(row, where))

    async def aclose(self) -> None:
        self._scorer = None
        await super().aclose()


class MultichoiceRowScorer:
    """``multichoice``: the option letter the response commits to, exact match."""

    def __init__(self, options: ScoringOptions) -> None:
        self.options = options

    async def score(self, response: str, row: Row, *, where: str) -> VerifyResult:
        # Only letters the row offers count (MMLU-Pro has 3 to 10 options).
        letters = "".join(letter for letter in DEFAULT_LETTERS if letter in row) or DEFAULT_LETTERS
        return score_multichoice(response, _expected_text(row, where), letters)

    async def aclose(self) -> None:
        pass


class ExactMatchRowScorer:
    """``exact_match`` (TriviaQA-style): normalized match against any accepted answer.

    No NeMo-Skills benchmark in the catalog has this METRICS_TYPE; it serves custom rows
    whose ``expected_answer`` is a string or a list of accepted strings.
    """

    def __init__(self, options: ScoringOptions) -> None:
        self.options = options

    async def score(self, response: str, row: Row, *, where: str) -> VerifyResult:
        expected = row.get("expected_answer")
        if not isinstance(expected, (str, list)):
            raise ScoringError(f"{where}: expected_answer must be a string or a list, got {expected!r}")
        return score_exact_match(response, expected)

    async def aclose(self) -> None:
        pass


class HumanEvalRowScorer:
    """``evalplus`` (HumanEval): the problem's tests against the response's code, sandboxed;
    EvalPlus rows (with ``base_input``/``plus_input``) get base and plus tests."""

    def __init__(self, options: ScoringOptions) -> None:
        self.options = options
        self.executor = options.executor or LocalSandbox(max_concurrency=os.cpu_count() or 1)
        self._plus: Any = None

    async def score(self, response: str, row: Row, *, where: str) -> VerifyResult:
        from nel.scoring.code import score_humaneval

        if "plus_input" in row and isinstance(self.executor, LocalSandbox):  # code helper: HumanEval+ rows
            if self._plus is None:
                from nel.scoring.evalplus import EvalPlusGrader

                self._plus = EvalPlusGrader(self.executor)
            return await self._plus.score(row, response)
        return await score_humaneval(row, response, executor=self.executor, timeout=self.options.code_timeout)

    async def aclose(self) -> None:
        close = getattr(self.executor, "aclose", None)
        if close is not None and self.options.executor is None:
            await close()


class InstructionFollowingRowScorer(_PoolScorer):
    """``if`` (IFBench): the package's checkers, strict and loose, in the scoring pool.

    Per row nel keeps counts, not ratios: ``prompt_*`` (0/1), ``instruction_*`` (followed
    instructions) and ``num_instructions``, because NeMo-Skills' instruction accuracy is a
    ratio over all instructions of the benchmark (``nel.metrics`` computes it).
    """

    preload = ("nel.scoring.instruction_following",)
    _FIELDS = ("key", "prompt", "instruction_id_list", "kwargs")

    async def score(self, response: str, row: Row, *, where: str) -> VerifyResult:
        from nel.scoring.instruction_following import score_instruction_following

        plain = {k: row[k] for k in self._FIELDS if k in row}
        result: VerifyResult = await self.pool.run(score_instruction_following, response, plain, timeout=60.0)
        strict, loose = result.details["strict_eval"], result.details["loose_eval"]
        scores = {
            "prompt_strict": float(strict["follow_all_instructions"]),
            "instruction_strict": float(sum(strict["follow_instruction_list"])),
            "prompt_loose": float(loose["follow_all_instructions"]),
            "instruction_loose": float(sum(loose["follow_instruction_list"])),
            "num_instructions": float(len(result.details["instruction_id_list"])),
        }
        return VerifyResult(result.reward, result.extracted_answer, result.details, scores)


def _judge_scorer(options: ScoringOptions) -> RowScorer:
    if options.judge is None:
        raise ConfigError(
            f"skills://{options.benchmark} is graded by an LLM judge ({options.judge_prompt_config}); "
            "pass --judge-url and --judge-model (or judge= to SkillsEnvironment)"
        )
    if options.judge_template is None or options.judge_prompt_config is None:
        raise ConfigError(
            f"skills://{options.benchmark}: METRICS_TYPE {options.metrics_type} has no judge prompt"
        )
    return JudgeScorer(
        options.judge, options.judge_template, options.metrics_type, options.judge_prompt_config
    )


SCORERS: dict[str, Callable[[ScoringOptions], RowScorer]] = {
    "math": MathRowScorer,
    "multichoice": MultichoiceRowScorer,
    "exact_match": ExactMatchRowScorer,
    "evalplus": HumanEvalRowScorer,
    "if": InstructionFollowingRowScorer,
    "livecodebench": LiveCodeBenchRowScorer,  # code helper: LiveCodeBench (nel/scoring/livecodebench.py)
    **{metrics_type: _judge_scorer for metrics_type in VERDICTS},
}

# Packages a scorer imports at scoring time; checked up front so a run fails before it starts.
_REQUIRES: dict[str, tuple[tuple[str, str], ...]] = {
    "if": (("ifbench", "nvidia-ifbench"), ("nel.scoring.instruction_following", "nel's IF scorer")),
}


def unsupported_reason(metrics_type: str) -> str | None:
    """Why nel cannot score ``metrics_type`` natively on this machine, or None if it can."""
    if metrics_type not in SCORERS:
        return f"nel has no scorer for METRICS_TYPE {metrics_type!r} (has: {', '.join(sorted(SCORERS))})"
    for module, what in _REQUIRES.get(metrics_type, ()):
        if importlib.util.find_spec(module) is None:
            return f"METRICS_TYPE {metrics_type!r} needs {what} ({module}), which is not installed"
    return None


def make_scorer(options: ScoringOptions) -> RowScorer:
    reason = unsupported_reason(options.metrics_type)
    if reason is not None:
        raise ConfigError(f"skills://{options.benchmark}: {reason}")
    return SCORERS[options.metrics_type](options)


def _expected_text(row: Row, where: str) -> str:
    expected = row.get("expected_answer")
    if expected is None:
        raise ScoringError(f"{where} has no expected_answer")
    return str(expected)
