"""``exact_match`` (TriviaQA-style): normalized match against any accepted answer.

No NeMo-Skills benchmark in the catalog has this METRICS_TYPE; it serves rows whose
``expected_answer`` is a string or a list of accepted strings.
"""

from __future__ import annotations

from nel.errors import ScoringError
from nel.scoring.exact_match import score_exact_match
from nel.skills.scoring_types.base import InlineScorer, Row, ScoringType
from nel.types import VerifyResult


class ExactMatchRowScorer(InlineScorer):
    async def score(self, response: str, row: Row, *, where: str) -> VerifyResult:
        expected = row.get("expected_answer")
        if not isinstance(expected, (str, list)):
            raise ScoringError(f"{where}: expected_answer must be a string or a list, got {expected!r}")
        return score_exact_match(response, expected)


EXACT_MATCH = ScoringType(name="exact_match", score_names=("correct",), scorer=ExactMatchRowScorer)
