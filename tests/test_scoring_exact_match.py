"""Normalized exact match (TriviaQA style) and the SimpleQA verdict parser and metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nel.metrics import MetricInputs, compute_metrics
from nel.scoring.exact_match import exact_match, extract_short_answer, normalize_answer, score_exact_match
from nel.scoring.simpleqa import (
    CORRECT,
    INCORRECT,
    NOT_ATTEMPTED,
    parse_simpleqa_verdict,
    score_simpleqa_verdict,
    simpleqa_judge_prompt,
    simpleqa_scores,
)
from nel.skills.scoring_types import extra_metrics


def simpleqa_metrics(verdicts: list[str | None]) -> dict[str, float]:
    """The SimpleQA scoring type's metrics of one repeat of ``verdicts``, as fractions."""
    scored = [score_simpleqa_verdict(v).scores for v in verdicts]
    data = MetricInputs(
        scores={name: np.array([[s[name]] for s in scored]) for name in ("correct", "incorrect", "not_attempted")},
        answers=np.zeros((len(verdicts), 1), dtype=int),
        completion_tokens=np.zeros((len(verdicts), 1)),
        reasoning_tokens=np.zeros((len(verdicts), 1)),
    )
    out = compute_metrics(data, extra_metrics("simpleqa"))["pass@1"]
    fractions = {k: float(v) / 100 for k, v in out.items() if isinstance(v, float) and not k.endswith("_err")}
    return {**fractions, "num_entries": out["num_entries"]}  # type: ignore[dict-item]


# --------------------------------------------------------------------------- exact match


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("The Beatles", "beatles"),
        ("  Mount   Everest. ", "mount everest"),
        ("O'Neil", "o neil"),
        ("an apple a day", "apple day"),
        ("Washington, D.C.", "washington d c"),
        ("“Hamlet”", "hamlet"),
        ("New_York", "new york"),
        ("ＡＢＣ", "abc"),  # full-width letters fold under NFKC
        ("Theatre", "theatre"),  # "the" inside a word is not an article
    ],
)
def test_normalize_answer(raw: str, normalized: str) -> None:
    assert normalize_answer(raw) == normalized


@pytest.mark.parametrize(
    ("response", "answer"),
    [
        ("Paris", "Paris"),
        ("The answer is Paris. It has been the capital since 987.", "Paris"),
        ("Let me recall the tallest mountain.\n\n**Answer:** Mount Everest", "Mount Everest"),
        ("Reasoning...\nFinal answer: Leonardo da Vinci", "Leonardo da Vinci"),
        ("He painted it in 1503.\n\n$\\boxed{\\text{Leonardo da Vinci}}$", "Leonardo da Vinci"),
        ("<think>Could be Adams? The answer is Adams.</think>\nAnswer: Jefferson", "Jefferson"),
    ],
)
def test_extract_short_answer(response: str, answer: str) -> None:
    assert extract_short_answer(response) == answer


def test_score_single_answer_with_noise() -> None:
    result = score_exact_match("The answer is the Beatles.", "Beatles")
    assert result.reward == 1.0
    assert result.scores == {"correct": 1.0}
    assert result.extracted_answer == "the Beatles"
    assert result.details["matched_answer"] == "Beatles"


def test_score_alias_list() -> None:
    aliases = ["Mount Everest", "Everest", "Chomolungma", "Sagarmatha"]
    assert score_exact_match("Answer: Sagarmatha", aliases).reward == 1.0
    assert score_exact_match("Answer: everest!", aliases).reward == 1.0
    assert score_exact_match("Answer: K2", aliases).reward == 0.0


def test_score_partial_is_not_exact() -> None:
    result = score_exact_match("Answer: Everest base camp", ["Mount Everest", "Everest"])
    assert result.reward == 0.0
    assert result.scores == {"correct": 0.0}
    assert result.details["normalized_prediction"] == "everest base camp"


def test_score_whole_response_without_extraction() -> None:
    assert score_exact_match("I believe it is Lincoln.", "Lincoln").reward == 0.0
    assert score_exact_match("  lincoln  ", "Abraham Lincoln").reward == 0.0
    assert score_exact_match("Abraham Lincoln.", "Abraham Lincoln", extract=False).reward == 1.0


def test_score_empty_response() -> None:
    for empty in ("", "   ", None):
        result = score_exact_match(empty, "Paris")
        assert result.reward == 0.0
        assert result.details["no_answer"] is True


def test_punctuation_only_answers_do_not_match_empty() -> None:
    assert score_exact_match("...", "!!!").reward == 0.0
    assert exact_match("U.S.", ["u s"]) is True


# --------------------------------------------------------------------------- SimpleQA


@pytest.mark.parametrize(
    ("output", "verdict"),
    [
        ("A", CORRECT),
        ("B", INCORRECT),
        ("C", NOT_ATTEMPTED),
        ("  **B**\n", INCORRECT),
        ("A.", CORRECT),
        ("(C)", NOT_ATTEMPTED),
        ("A: CORRECT", CORRECT),
        ("CORRECT", CORRECT),
        ("INCORRECT", INCORRECT),
        ("NOT_ATTEMPTED", NOT_ATTEMPTED),
        ("not attempted", NOT_ATTEMPTED),
        ("<think>The target is 1889, the answer says 1887, so B.</think>\nB", INCORRECT),
        ("The prediction names a different city than the target.\nGrade: B", INCORRECT),
        ("The predicted answer matches the gold target exactly.\n\nA", CORRECT),
        ("A careful look shows the predicted answer is INCORRECT.", INCORRECT),
        ("I cannot grade this.", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_verdict(output: str | None, verdict: str | None) -> None:
    assert parse_simpleqa_verdict(output) == verdict


def test_scores_and_result() -> None:
    assert simpleqa_scores(CORRECT) == {"correct": 1.0, "incorrect": 0.0, "not_attempted": 0.0}
    assert simpleqa_scores(None) == {"correct": 0.0, "incorrect": 0.0, "not_attempted": 1.0}
    result = score_simpleqa_verdict("B")
    assert result.reward == 0.0
    assert result.scores["incorrect"] == 1.0
    assert result.extracted_answer == INCORRECT
    garbled = score_simpleqa_verdict("¯\\_(ツ)_/¯")
    assert garbled.scores["not_attempted"] == 1.0
    assert garbled.details["verdict_parsed"] is False
    assert score_simpleqa_verdict("A").reward == 1.0


def test_metrics_match_definitions() -> None:
    verdicts = ["A"] * 6 + ["B"] * 2 + ["C"] * 2  # 10 graded
    m = simpleqa_metrics(verdicts)
    assert m["num_entries"] == 10
    assert m["correct"] == pytest.approx(0.6)
    assert m["incorrect"] == pytest.approx(0.2)
    assert m["not_attempted"] == pytest.approx(0.2)
    assert m["accuracy_given_attempted"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))


def test_metrics_mixed_inputs_and_unparseable_counts_not_attempted() -> None:
    m = simpleqa_metrics([CORRECT, "B", "garbage", None])
    assert m["correct"] == 0.25
    assert m["incorrect"] == 0.25
    assert m["not_attempted"] == 0.5
    assert m["accuracy_given_attempted"] == 0.5
    assert math.isclose(m["f1"], 2 * 0.25 * 0.5 / 0.75)


def test_metrics_edge_cases() -> None:
    assert compute_metrics(
        MetricInputs({"correct": np.zeros((0, 1))}, np.zeros((0, 1), int), np.zeros((0, 1)), np.zeros((0, 1))),
        extra_metrics("simpleqa"),
    ) == {}  # no rows, no metrics (there was an f1 of 0.0 here when SimpleQA had a second implementation)
    nothing_attempted = simpleqa_metrics(["C", "C"])
    assert nothing_attempted["accuracy_given_attempted"] == 0.0
    assert nothing_attempted["f1"] == 0.0
    all_right = simpleqa_metrics(["A", "A"])
    assert all_right["f1"] == 1.0


def test_judge_prompt() -> None:
    prompt = simpleqa_judge_prompt(" Who wrote Hamlet? ", "William Shakespeare", "Shakespeare, I think.")
    assert "Question: Who wrote Hamlet?" in prompt
    assert "Gold target: William Shakespeare" in prompt
    assert "Predicted answer: Shakespeare, I think." in prompt
    assert "exactly one letter" in prompt
    for grade in ("A (CORRECT)", "B (INCORRECT)", "C (NOT_ATTEMPTED)"):
        assert grade in prompt
    # braces in the inputs must not break formatting
    assert "{x}" in simpleqa_judge_prompt("What is {x}?", "1", "1")
