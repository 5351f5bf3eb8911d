"""``exact_match`` (TriviaQA): normalized match against any accepted answer.

No NeMo-Skills benchmark has this METRICS_TYPE. A row's ``expected_answer`` is one string or
the list of every accepted string (TriviaQA: its aliases and normalized aliases, as the
converter writes them): that one field is all the scorer reads, and the trajectory keeps it
(a list as JSON) beside the answer the response was reduced to and the alias it matched.
"""

from __future__ import annotations

from nel.errors import ScoringError
from nel.scoring.exact_match import score_exact_match
from nel.skills.scoring_types.base import InlineScorer, Row, ScoringType
from nel.types import VerifyResult


class ExactMatchRowScorer(InlineScorer):
    async def score(self, response: str, row: Row, *, where: str) -> VerifyResult:
        expected = row.get("expected_answer")
        accepted = [expected] if isinstance(expected, str) else expected
        if not isinstance(accepted, list) or not accepted or not all(isinstance(a, str) for a in accepted):
            raise ScoringError(
                f"{where}: expected_answer must be a string or a non-empty list of strings, got {expected!r}"
            )
        return score_exact_match(response, accepted)


EXACT_MATCH = ScoringType(name="exact_match", score_names=("correct",), scorer=ExactMatchRowScorer)
