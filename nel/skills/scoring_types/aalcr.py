"""``aalcr``: an LLM judge says CORRECT or INCORRECT (NeMo-Skills' ``judge/aalcr``).

As NeMo-Skills' AALCRMetrics: ``judge_correct`` when the judgement, stripped and upper-cased,
starts with ``CORRECT``, and only for a non-blank response (``generation_valid``); majority
voting keys on the whole response, and a blank response counts as no answer.
"""

from __future__ import annotations

from nel.skills.scoring_types.base import ScoringType
from nel.types import VerifyResult


def aalcr_verdict(judgement: str, response: str) -> VerifyResult:
    valid = bool(response.strip())
    verdict = judgement.strip().upper()
    correct = 1.0 if valid and verdict.startswith("CORRECT") else 0.0
    return VerifyResult(
        reward=correct,
        extracted_answer=response if valid else None,
        details={"judgement": judgement, "verdict_parsed": verdict.startswith(("CORRECT", "INCORRECT"))},
        scores={"judge_correct": correct, "generation_valid": float(valid)},
    )


AALCR = ScoringType(
    name="aalcr",
    score_names=("judge_correct", "generation_valid"),
    verdict=aalcr_verdict,
    answer_key="generation",
)
