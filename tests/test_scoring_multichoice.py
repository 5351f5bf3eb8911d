"""Letter extraction on responses shaped like what chat models actually write."""

from __future__ import annotations

import pytest

from nel.scoring.multichoice import extract_letter, score_multichoice

CASES = [
    # (id, response, expected extraction)
    (
        "reasoning-mentions-other-letters",
        (
            "Let's go through the options.\nA) Mitochondria produce ATP, but this is not about the "
            "membrane.\nB) The Golgi apparatus modifies proteins.\nC) The nucleus stores DNA.\n"
            "Option B looks tempting, but the question asks about storage, so A and B are out.\n\n"
            "Answer: C"
        ),
        "C",
    ),
    (
        "answer-then-trailing-explanation",
        (
            "Answer: C\n\nExplanation: A is wrong because the reaction is exothermic, and B "
            "confuses enthalpy with entropy. D would require a catalyst."
        ),
        "C",
    ),
    ("bold-label", "The integral diverges for p <= 1.\n\n**Answer:** D", "D"),
    ("bold-whole-line", "Comparing the two rates...\n\n**Answer: B**", "B"),
    ("italic-label", "So the pressure doubles.\n\n*Answer*: A", "A"),
    ("lowercase-parenthesised", "after simplifying we get 12, which is option (b).\n\nanswer: (b)", "B"),
    ("the-answer-is", "Both statements are true, and the second explains the first. The answer is D.", "D"),
    ("correct-answer-is-option", "Therefore, the correct answer is option (C) 3.2 m/s.", "C"),
    (
        "final-answer-markdown-heading",
        "### Step 3\nOnly J satisfies all constraints.\n\n**Final Answer: J**",
        "J",
    ),
    ("boxed-letter", "Hence the limit equals 1/2, which matches choice B.\n\n$$\\boxed{B}$$", "B"),
    ("boxed-text-letter", "The final answer is $\\boxed{\\text{C}}$.", "C"),
    ("boxed-textbf-paren", "Thus: $\\boxed{\\textbf{(A)}}$", "A"),
    ("boxed-letter-with-option-text", "\\boxed{D) 42}", "D"),
    (
        "answer-line-beats-boxed-expression",
        "We solve for y: $\\boxed{2x+1}$. Substituting x = 3 gives 7, which is option A.\n\nAnswer: A",
        "A",
    ),
    ("boxed-expression-only", "The derivative is $\\boxed{2x+1}$.", None),
    (
        "revised-answer-last-wins",
        (
            "Answer: B\n\nWait, I mis-read the sign of the charge. Re-doing the calculation gives a "
            "repulsive force.\n\nAnswer: D"
        ),
        "D",
    ),
    (
        "boxed-after-answer-line-last-wins",
        "Answer: A\n\nHmm, on reflection the units do not match; correcting: $\\boxed{C}$",
        "C",
    ),
    ("answer-with-dollar-boxed", "Answer: $\\boxed{B}$", "B"),
    ("lowercase-bare-letter-answer", "answer: c", "C"),
    ("no-answer", "I'm not sure. The options all seem plausible to me and I cannot decide.", None),
    ("article-not-a-letter", "The answer is a prime number, but none of the options lists one.", None),
    ("word-not-a-letter", "The answer is Paris, the capital of France.", None),
    ("bare-letter-response", "C", "C"),
    ("bare-parenthesised-with-text", "(B) The Treaty of Westphalia", "B"),
    (
        "think-block-skipped",
        (
            "<think>Maybe the answer is A... no wait. Answer: A is wrong since the mass is "
            "conserved.</think>\nThe mass is conserved, so the answer is B."
        ),
        "B",
    ),
    ("letter-out-of-range", "Answer: K", None),
    ("answer-is-not-letter", "The answer is not B; it is the one with the larger radius.", None),
    ("answer-colon-no-space", "Answer:E", "E"),
    ("option-prefix", "Answer: Option G", "G"),
    ("pronoun-I-not-option", "The answer is I think between two options.", None),
]


@pytest.mark.parametrize(("response", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_extract_letter(response: str, expected: str | None) -> None:
    assert extract_letter(response) == expected


def test_letters_restrict_the_options() -> None:
    assert extract_letter("Answer: E", letters="ABCD") is None
    assert extract_letter("Answer: E", letters="ABCDE") == "E"
    assert extract_letter("Answer: d", letters="abcd") == "D"


def test_empty_and_none() -> None:
    assert extract_letter("") is None
    assert extract_letter(None) is None


def test_score_correct_case_insensitive() -> None:
    result = score_multichoice("Reasoning...\n\n**Answer:** c", "C")
    assert result.reward == 1.0
    assert result.scores == {"symbolic_correct": 1.0}
    assert result.extracted_answer == "C"
    assert result.details["no_answer"] is False
    assert score_multichoice("Answer: C", "c").reward == 1.0


def test_score_wrong_letter() -> None:
    result = score_multichoice("A and C look wrong, so... Answer: B", "C")
    assert result.reward == 0.0
    assert result.scores == {"symbolic_correct": 0.0}
    assert result.extracted_answer == "B"


def test_score_no_answer() -> None:
    result = score_multichoice("I cannot determine this from the given information.", "A")
    assert result.reward == 0.0
    assert result.extracted_answer is None
    assert result.details["no_answer"] is True
    assert result.scores["symbolic_correct"] == 0.0
