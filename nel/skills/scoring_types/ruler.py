"""``ruler``: RULER's string match, as NeMo-Skills scores it (``evaluation/evaluator/ruler.py``).

Each row names its match type. ``all`` (needle, variable tracking, word extraction): the share
of the expected strings found in the response, case-insensitive, so a response with 2 of 4
needles scores 0.5. ``part`` (QA): 1 when any accepted answer occurs in it. The response is the
model's continuation after the answer prefix, matched whole (NeMo-Skills parses no answer out).
"""

from __future__ import annotations

from collections.abc import Sequence

from nel.errors import ScoringError
from nel.skills.scoring_types.base import InlineScorer, Row, ScoringType
from nel.types import VerifyResult

MATCH_TYPES = ("all", "part")


def string_match(response: str, references: Sequence[str], match_type: str) -> float:
    """RULER's score of one response: the fraction found (``all``) or any found (``part``)."""
    text = response.lower()
    found = [ref.lower() in text for ref in references]
    if match_type == "all":
        return sum(found) / len(found)
    return float(any(found))


class RulerRowScorer(InlineScorer):
    async def score(self, response: str, row: Row, *, where: str) -> VerifyResult:
        references, match_type = row.get("expected_answer"), row.get("match_type")
        if not isinstance(references, list) or not references or not all(isinstance(r, str) for r in references):
            raise ScoringError(f"{where}: expected_answer must be a non-empty list of strings, got {references!r}")
        if match_type not in MATCH_TYPES:
            raise ScoringError(f"{where}: match_type must be one of {', '.join(MATCH_TYPES)}, got {match_type!r}")
        score = string_match(response, references, match_type)
        # NeMo-Skills' predicted_answer: the response with control characters turned into newlines
        cleaned = "".join("\n" if ord(c) < 32 else c for c in response.strip()).strip()
        return VerifyResult(score, cleaned, {"match_type": match_type}, {"accuracy": score})


RULER = ScoringType(name="ruler", score_names=("accuracy",), scorer=RulerRowScorer)
