"""``hle`` (Humanity's Last Exam): an LLM judge says yes or no; no ``no_answer`` metric."""

from __future__ import annotations

from nel.metrics import MetricInputs, Metrics, drop_no_answer
from nel.skills.scoring_types.base import ScoringType
from nel.types import VerifyResult


def hle_verdict(judgement: str, response: str) -> VerifyResult:
    """``judge_correct`` when the text after the last ``Judgement:`` starts with "yes".

    As NeMo-Skills' ``is_correct_judgement``: anything else (``no``, or no ``Judgement:``
    line at all) is incorrect. Majority voting keys on the whole response, as NeMo-Skills'
    HLE metrics do (``answer_key="generation"``).
    """
    parts = judgement.split("Judgement:")
    verdict = parts[-1].strip().lower() if len(parts) > 1 else ""
    parsed = verdict.startswith(("yes", "no"))
    correct = 1.0 if verdict.startswith("yes") else 0.0
    return VerifyResult(
        reward=correct,
        extracted_answer=response,
        details={"judgement": judgement, "verdict": "yes" if correct else "no", "verdict_parsed": parsed},
        scores={"judge_correct": correct},
    )


def hle_metrics(data: MetricInputs, out: Metrics) -> Metrics:
    """NeMo-Skills' HLE metrics are its math metrics with ``compute_no_answer=False``."""
    drop_no_answer(out)
    return out


HLE = ScoringType(
    name="hle",
    score_names=("judge_correct",),
    verdict=hle_verdict,
    extra_metrics=hle_metrics,
    answer_key="generation",
)
