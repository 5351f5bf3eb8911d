"""TriviaQA / SQuAD-style normalized exact match against one or several accepted answers.

The definition is TriviaQA's official evaluation (``evaluation/triviaqa_evaluation.py`` of
mandarjoshi90/triviaqa, itself SQuAD v1.1's): a prediction is correct when its normalized form
equals the normalized form of any accepted answer. Normalization: lower case, punctuation
replaced by a space (not deleted: ``O'Neil`` -> ``o neil`` on both sides), the articles *a*,
*an*, *the* dropped, whitespace collapsed. On ASCII text nel's normalization is the official one
character for character; nel also applies Unicode NFKC and turns every Unicode punctuation mark
or symbol into a space (the official script: only ASCII punctuation and four quote marks), so
a curly-quoted or dash-joined answer matches too, and every match the official script counts,
nel counts, but one: an answer that normalizes to nothing never matches (the official script lets
``the`` match an alias such as ``The The``). A chat response is first cut down to the answer it states (``\\boxed{...}``, an
``Answer:`` / ``The answer is`` line), falling back to the whole response.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable

from nel.types import VerifyResult

__all__ = ["exact_match", "extract_short_answer", "normalize_answer", "score_exact_match"]

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_ASCII_PUNCT = set(string.punctuation)
_ANSWER_LINE = re.compile(
    r"(?:^|\n)[ \t>#*_]*(?:final\s+)?answer[*_]*\s*(?::|\bis\b)[ \t*_]*(?P<ans>[^\n]+)", re.IGNORECASE
)
_ANSWER_IS = re.compile(r"\bthe\s+(?:final\s+|correct\s+)?answer\s+is\s*:?\s*(?P<ans>[^\n]+)", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\s*\{")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|mathrm|mbox)\s*\{([^{}]*)\}")


def _is_punct(ch: str) -> bool:
    return ch in _ASCII_PUNCT or unicodedata.category(ch)[0] in ("P", "S")


def _punct_to_space(text: str) -> str:
    return "".join(" " if _is_punct(ch) else ch for ch in text)


def normalize_answer(text: str) -> str:
    """Lower-case, punctuation to spaces, drop articles, collapse whitespace."""
    # As TriviaQA does: punctuation becomes a space ("O'Neil" -> "o neil" on both sides). Before
    # NFKC too, which would turn an acute accent (official punctuation) into a combining mark.
    text = _punct_to_space(text.lower())
    text = _punct_to_space(unicodedata.normalize("NFKC", text).lower())
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _last_boxed(text: str) -> str | None:
    last = None
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            last = text[m.end() : i - 1]
    if last is None:
        return None
    for _ in range(3):
        last = _TEXT_CMD.sub(r"\1", last)
    return last.strip()


def extract_short_answer(response: str) -> str:
    """The answer a response states: the last ``\\boxed{}``, else the last ``Answer:`` line or
    ``the answer is ...`` sentence, else the whole response (reasoning before ``</think>``
    skipped)."""
    if "</think>" in response:
        response = response.rsplit("</think>", 1)[1]
    boxed = _last_boxed(response)
    if boxed:
        return boxed
    matches = list(_ANSWER_LINE.finditer(response)) or list(_ANSWER_IS.finditer(response))
    if matches:
        answer = matches[-1].group("ans").strip().strip("*_").strip()
        # "The answer is Paris. It is the capital..." -> "Paris"
        first_sentence = re.split(r"(?<=[^\s.])\.\s+(?=[A-Z])", answer, maxsplit=1)[0]
        return first_sentence.strip().rstrip(".").strip()
    return response.strip()


def exact_match(prediction: str, answers: str | Iterable[str]) -> bool:
    """True if the normalized prediction equals any normalized accepted answer."""
    accepted = [answers] if isinstance(answers, str) else list(answers)
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(a) for a in accepted)


def score_exact_match(
    response: str | None, answers: str | Iterable[str], *, extract: bool = True
) -> VerifyResult:
    """1.0 if the response's answer matches one of ``answers`` after normalization.

    ``extract=False`` compares the whole response (for prompts that ask for the bare answer).
    """
    accepted = [answers] if isinstance(answers, str) else list(answers)
    if not response or not response.strip():
        return VerifyResult(
            reward=0.0,
            extracted_answer=None,
            details={"accepted_answers": accepted, "no_answer": True},
            scores={"correct": 0.0},
        )
    predicted = extract_short_answer(response) if extract else response.strip()
    normalized = normalize_answer(predicted)
    matched = next((a for a in accepted if normalize_answer(a) == normalized), None)
    reward = 1.0 if matched is not None and normalized else 0.0
    return VerifyResult(
        reward=reward,
        extracted_answer=predicted,
        details={
            "accepted_answers": accepted,
            "normalized_prediction": normalized,
            "matched_answer": matched,
            "no_answer": False,
        },
        scores={"correct": reward},
    )
