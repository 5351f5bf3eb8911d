"""``multichoice`` (MMLU, MMLU-Pro, GPQA): the option letter the response commits to, exact match."""

from __future__ import annotations

from nel.scoring.multichoice import DEFAULT_LETTERS, score_multichoice
from nel.skills.scoring_types.base import InlineScorer, Row, ScoringType, expected_text
from nel.types import VerifyResult


class MultichoiceRowScorer(InlineScorer):
    async def score(self, response: str, row: Row, *, where: str) -> VerifyResult:
        # Only letters the row offers count (MMLU-Pro has 3 to 10 options).
        letters = "".join(letter for letter in DEFAULT_LETTERS if letter in row) or DEFAULT_LETTERS
        return score_multichoice(response, expected_text(row, where), letters)


MULTICHOICE = ScoringType(name="multichoice", score_names=("symbolic_correct",), scorer=MultichoiceRowScorer)
