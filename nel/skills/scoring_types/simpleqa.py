"""``simpleqa``: an LLM judge grades A/B/C; NeMo-Skills' SimpleQA metrics on top of pass@k.

A reply nobody can parse counts as not attempted (``nel.scoring.simpleqa``). Majority voting
keys on the judgement, as NeMo-Skills' SimpleQA metrics do.
"""

from __future__ import annotations

from nel.metrics import MetricInputs, Metrics, drop_no_answer
from nel.scoring.simpleqa import score_simpleqa_verdict
from nel.skills.scoring_types.base import ScoringType
from nel.types import VerifyResult


def simpleqa_verdict(judgement: str, response: str) -> VerifyResult:
    return score_simpleqa_verdict(judgement)


def simpleqa_metrics(data: MetricInputs, out: Metrics) -> Metrics:
    """``accuracy_given_attempted = correct / (correct + incorrect)`` (0 when nothing was
    attempted) and ``f1``, the harmonic mean of it and ``correct``, from each bucket's
    percentages; NeMo-Skills computes no ``no_answer`` for SimpleQA."""
    drop_no_answer(out)
    for bucket in out.values():
        correct = float(bucket.get("correct", 0.0)) / 100  # type: ignore[arg-type]
        incorrect = float(bucket.get("incorrect", 0.0)) / 100  # type: ignore[arg-type]
        attempted = correct + incorrect
        given = correct / attempted if attempted > 0 else 0.0
        f1 = 2 * given * correct / (given + correct) if given + correct > 0 else 0.0
        bucket["accuracy_given_attempted"] = 100.0 * given
        bucket["f1"] = 100.0 * f1
    return out


SIMPLEQA = ScoringType(
    name="simpleqa",
    score_names=("correct", "incorrect", "not_attempted"),
    verdict=simpleqa_verdict,
    extra_metrics=simpleqa_metrics,
    answer_key="judgement",
)
