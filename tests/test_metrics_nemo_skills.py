"""nel's metrics against NeMo-Skills' own MathMetrics on random runs (needs nemo_skills)."""

from __future__ import annotations

import numpy as np
import pytest

from nel.metrics import MetricInputs, compute_metrics

pytestmark = pytest.mark.nemo_skills
math_metrics = pytest.importorskip(
    "nemo_skills.evaluation.metrics.math_metrics", reason="nemo_skills is not installed (see docs/benchmarks.md)"
)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("repeats", [1, 2, 5])
def test_same_numbers_as_nemo_skills(seed: int, repeats: int) -> None:
    rng = np.random.default_rng(seed)
    problems = 40
    answers = rng.integers(-1, 4, size=(problems, repeats))  # -1: no answer; few values → ties
    correct_answer = rng.integers(0, 4, size=problems)
    scores = ((answers == correct_answer[:, None]) & (answers >= 0)).astype(float)
    tokens = rng.integers(10, 500, size=(problems, repeats))

    ns = math_metrics.MathMetrics()
    for p in range(problems):
        ns.update([
            {"symbolic_correct": bool(scores[p, r]), "predicted_answer": None if answers[p, r] < 0 else str(answers[p, r]),
             "num_generated_tokens": int(tokens[p, r])}
            for r in range(repeats)
        ])  # fmt: skip
    theirs = ns.get_metrics()
    theirs.pop("pass@1[avg-of-1]", None)  # as their ComputeMetrics does

    ours = compute_metrics(MetricInputs(
        scores={"symbolic_correct": scores}, answers=answers, completion_tokens=tokens.astype(float),
        reasoning_tokens=np.zeros(tokens.shape),
    ))  # fmt: skip
    assert set(ours) == set(theirs)
    for mode, values in theirs.items():
        for key, value in values.items():
            if isinstance(value, dict):
                for stat, number in value.items():
                    assert ours[mode][key][stat] == pytest.approx(number), (mode, key, stat)
            else:
                assert ours[mode][key] == pytest.approx(value), (mode, key)
