"""``math``: the last ``\\boxed{}`` (else the benchmark's regex), symbolic equivalence, in the pool."""

from __future__ import annotations

from typing import Any

from nel.scoring.math import MathScorer
from nel.skills.scoring_types.base import PoolScorer, Row, ScoringOptions, ScoringType, expected_text
from nel.types import VerifyResult


class MathRowScorer(PoolScorer):
    preload = ("nel.scoring.math",)

    def __init__(self, options: ScoringOptions) -> None:
        super().__init__(options)
        self._scorer: Any = None

    async def score(self, response: str, row: Row, *, where: str) -> VerifyResult:
        if self._scorer is None:
            self._scorer = MathScorer(self.pool, self.options.extract_regex, self.options.math_timeout)
        return await self._scorer.score(response, expected_text(row, where))

    async def aclose(self) -> None:
        self._scorer = None
        await super().aclose()


MATH = ScoringType(name="math", score_names=("symbolic_correct",), scorer=MathRowScorer)
