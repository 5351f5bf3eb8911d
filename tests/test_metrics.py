"""Metrics against values computed by hand (and NeMo-Skills' documented example)."""

from __future__ import annotations

import numpy as np
import pytest

from nel.metrics import MetricInputs, compute_metrics


def inputs(scores: list[list[float]], answers: list[list[int]] | None = None) -> MetricInputs:
    matrix = np.array(scores, dtype=float)
    codes = np.array(answers) if answers is not None else np.where(matrix > 0, 0, 1)
    return MetricInputs(
        scores={"symbolic_correct": matrix},
        answers=codes,
        completion_tokens=np.full(matrix.shape, 10.0),
        reasoning_tokens=np.zeros(matrix.shape),
    )


def test_pass_at_k_uses_the_unbiased_estimator() -> None:
    m = compute_metrics(inputs([[1, 0, 1, 0], [1, 1, 0, 0], [0, 1, 1, 1]]))
    assert m["pass@1"]["symbolic_correct"] == pytest.approx(100 * (0.5 + 0.5 + 0.75) / 3)
    # 1 - C(n-c, 2)/C(4, 2): c=2 → 5/6, c=2 → 5/6, c=3 → 1
    assert m["pass@2"]["symbolic_correct"] == pytest.approx(100 * (5 / 6 + 5 / 6 + 1) / 3)
    assert m["pass@4"]["symbolic_correct"] == pytest.approx(100.0)
    assert m["pass@1[avg-of-2]"]["symbolic_correct"] == pytest.approx(100 * (0.5 + 1 + 0.5) / 3)
    assert "pass@1[avg-of-1]" not in m  # NeMo-Skills drops it: it equals pass@1
    assert m["pass@1"]["num_entries"] == 3
    assert m["pass@1"]["avg_tokens"] == 10


def test_statistics_match_the_nemo_skills_worked_example() -> None:
    # Run averages (column means) are 2/3, 2/3, 2/3, 1/3; their sample stdev is exactly 1/6.
    # (NeMo-Skills' docstring prints 0.1925 for this example; its code, like ours, gives 1/6.)
    m = compute_metrics(inputs([[1, 0, 1, 0], [1, 1, 0, 0], [0, 1, 1, 1]]))
    stats = m["pass@1[avg-of-4]"]["symbolic_correct_statistics"]
    assert stats["avg"] == pytest.approx(7 / 12)
    assert stats["std_dev_across_runs"] == pytest.approx(1 / 6)
    assert stats["std_err_across_runs"] == pytest.approx(1 / 12)
    assert stats["avg_sample_std_dev"] == pytest.approx(0.5515, abs=1e-4)
    assert "symbolic_correct_statistics" not in m["pass@1"]


def test_majority_ties_average_the_tied_answers() -> None:
    # answers a=0, b=1; a is right. Two of each among 4: a tie → 0.5.
    m = compute_metrics(inputs([[1, 0, 1, 0]], answers=[[0, 1, 0, 1]]))
    assert m["majority@2"]["symbolic_correct"] == pytest.approx(50.0)  # a, b
    assert m["majority@3"]["symbolic_correct"] == pytest.approx(100.0)  # a, b, a
    assert m["majority@4"]["symbolic_correct"] == pytest.approx(50.0)  # tie again
    assert "majority@1" not in m


def test_majority_ignores_missing_answers_and_counts_no_answer() -> None:
    m = compute_metrics(inputs([[0, 0, 1, 1], [0, 1, 0, 0]], answers=[[-1, -1, 2, 2], [3, 4, 3, -1]]))
    # problem 0: first 2 all missing → 0 and no_answer; first 3 → answer 2 (right)
    # problem 1: first 2: tie between 3 (wrong) and 4 (right) → 0.5; first 3: 3 wins → 0
    assert m["majority@2"]["symbolic_correct"] == pytest.approx(100 * (0 + 0.5) / 2)
    assert m["majority@3"]["symbolic_correct"] == pytest.approx(100 * (1 + 0) / 2)
    assert m["majority@2"]["no_answer"] == pytest.approx(50.0)
    assert m["pass@1[avg-of-4]"]["no_answer"] == pytest.approx(100 * (0.5 + 0.25) / 2)
    assert m["pass@2"]["no_answer"] == pytest.approx(50.0)


def test_non_binary_scores_use_max_of_first_k() -> None:
    m = compute_metrics(inputs([[0.2, 0.9, 0.5]]))
    assert m["pass@1"]["symbolic_correct"] == pytest.approx(20.0)
    assert m["pass@2"]["symbolic_correct"] == pytest.approx(90.0)


def test_confidence_interval_brackets_the_estimate_and_shrinks_with_data() -> None:
    rng = np.random.default_rng(1)
    small = compute_metrics(inputs(rng.integers(0, 2, size=(50, 1)).tolist()))["pass@1"]
    large = compute_metrics(inputs(rng.integers(0, 2, size=(5000, 1)).tolist()))["pass@1"]
    for m in (small, large):
        low, high = m["symbolic_correct_ci95"]
        assert low <= m["symbolic_correct"] <= high
    assert (large["symbolic_correct_ci95"][1] - large["symbolic_correct_ci95"][0]) < (
        small["symbolic_correct_ci95"][1] - small["symbolic_correct_ci95"][0]
    ) / 5
    p = small["symbolic_correct"] / 100
    assert small["symbolic_correct_std_err"] == pytest.approx(100 * np.sqrt(p * (1 - p) / 49), rel=0.05)
