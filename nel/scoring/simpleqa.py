"""SimpleQA: the grading prompt for the judge and the verdict parser.

The judge answers with one letter: ``A`` (CORRECT), ``B`` (INCORRECT) or ``C`` (NOT_ATTEMPTED).
As in NeMo-Skills (``simpleqa_metrics.py``), a verdict that cannot be parsed counts as not
attempted. The aggregate metrics (``accuracy_given_attempted``, ``f1``) are the SimpleQA
scoring type's (``nel.skills.scoring_types.simpleqa``).
"""

from __future__ import annotations

import re

from nel.types import VerifyResult

__all__ = [
    "CORRECT",
    "INCORRECT",
    "NOT_ATTEMPTED",
    "parse_simpleqa_verdict",
    "score_simpleqa_verdict",
    "simpleqa_judge_prompt",
    "simpleqa_scores",
]

CORRECT, INCORRECT, NOT_ATTEMPTED = "CORRECT", "INCORRECT", "NOT_ATTEMPTED"
_LETTER_TO_VERDICT = {"A": CORRECT, "B": INCORRECT, "C": NOT_ATTEMPTED}
_VERDICT_TO_LETTER = {v: k for k, v in _LETTER_TO_VERDICT.items()}

_LEADING_LETTER = re.compile(r"^[\s*_`\"'(\[]*([ABC])(?![A-Za-z0-9])")
_VERDICT_WORD = re.compile(r"\b(NOT[_ ]ATTEMPTED|INCORRECT|CORRECT)\b")
_GRADE_LINE = re.compile(
    r"(?:grade|verdict|answer|judgement|judgment)[*_\s]*[:=][*_\s\"'(\[]*([ABC])(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_LAST_LETTER_LINE = re.compile(r"^[\s*_`\"'(\[]*([ABC])[\s*_`\"')\].:]*$")


def parse_simpleqa_verdict(judge_output: str | None) -> str | None:
    """``CORRECT`` / ``INCORRECT`` / ``NOT_ATTEMPTED``, or None if the output says none of them.

    Accepts a bare letter (``A``, ``**B**``, ``C.``, ``(A)``), the words (``CORRECT``,
    ``NOT_ATTEMPTED``, ``NOT ATTEMPTED``), ``Grade: B``-style lines, and a final line that is
    only a letter; reasoning before ``</think>`` is skipped.
    """
    if not judge_output:
        return None
    text = judge_output
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    text = text.strip()
    if not text:
        return None
    m = _LEADING_LETTER.match(text)
    if m and not re.match(r"[ \t]+[a-z]", text[m.end() :]):  # not "A careful reading ..."
        return _LETTER_TO_VERDICT[m.group(1)]
    grades = _GRADE_LINE.findall(text)
    if grades:
        return _LETTER_TO_VERDICT[grades[-1].upper()]
    last_line = text.splitlines()[-1]
    m = _LAST_LETTER_LINE.match(last_line)
    if m:
        return _LETTER_TO_VERDICT[m.group(1)]
    words = _VERDICT_WORD.findall(text.upper())
    if words:
        return words[-1].replace(" ", "_")
    return None


def simpleqa_scores(verdict: str | None) -> dict[str, float]:
    """The per-response score channels; an unparseable (None) verdict is not attempted."""
    verdict = verdict if verdict in _VERDICT_TO_LETTER else NOT_ATTEMPTED
    return {
        "correct": float(verdict == CORRECT),
        "incorrect": float(verdict == INCORRECT),
        "not_attempted": float(verdict == NOT_ATTEMPTED),
    }


def score_simpleqa_verdict(judge_output: str | None) -> VerifyResult:
    """Turn the judge's reply into a :class:`VerifyResult` (reward 1.0 only for CORRECT)."""
    verdict = parse_simpleqa_verdict(judge_output)
    scores = simpleqa_scores(verdict)
    return VerifyResult(
        reward=scores["correct"],
        extracted_answer=verdict,
        details={
            "judgement": judge_output,
            "verdict": verdict if verdict is not None else NOT_ATTEMPTED,
            "verdict_parsed": verdict is not None,
        },
        scores=scores,
    )


_JUDGE_TEMPLATE = """\
You are grading one answer to a short factual question. Compare the predicted answer with the \
gold target and decide which of three grades it earns.

A (CORRECT): the predicted answer states the gold target's meaning, in any wording, and \
contradicts nothing in it. Extra detail is fine as long as it is not wrong. Minor spelling \
differences in names, and numbers that agree with the target to the precision the target \
gives, still count as correct. Hedging is fine if the answer still clearly commits to the \
target.
B (INCORRECT): the predicted answer commits to something that contradicts the gold target, \
or lists several candidate answers of which at least one is wrong, or gives a number that \
does not match the target's value.
C (NOT_ATTEMPTED): the predicted answer does not give the information at all (it declines, \
says it does not know, or talks around the question) and contradicts nothing in the target.

Judge only the final answer against the gold target; do not re-answer the question yourself, \
and do not penalise omissions of information the question did not ask for.

Question: {question}
Gold target: {target}
Predicted answer: {predicted}

Reply with exactly one letter, A, B or C, and nothing else."""


def simpleqa_judge_prompt(question: str, target: str, predicted: str) -> str:
    """The user message for the judge model; its reply goes to :func:`parse_simpleqa_verdict`."""
    return _JUDGE_TEMPLATE.format(
        question=question.strip(), target=target.strip(), predicted=predicted.strip()
    )
