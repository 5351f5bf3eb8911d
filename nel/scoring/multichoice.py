"""Multiple-choice scoring (METRICS_TYPE ``multichoice``: MMLU, MMLU-Pro, GPQA, SuperGPQA, ...).

NeMo-Skills extracts the answer from ``\\boxed{}`` (keeping a lone letter, or the last
standalone capital letter inside it), else takes the last ``Answer: X`` match, and counts a
prediction correct when it equals the expected letter; its metrics call that score
``symbolic_correct``. We keep that score name and the "last explicit answer wins" rule, with
an extractor written for the way chat models really answer (bold/italic markdown, ``The
answer is (C)``, ``Final Answer: C``, lower-case letters, ``\\boxed{\\text{C}}``), and we never
read a letter out of a boxed expression such as ``\\boxed{2x+1}``.
"""

from __future__ import annotations

import re

from nel.types import VerifyResult

__all__ = ["DEFAULT_LETTERS", "extract_letter", "score_multichoice"]

DEFAULT_LETTERS = "ABCDEFGHIJ"  # MMLU-Pro has ten options

# "Answer: C", "**Answer:** C", "*Final Answer*: (c)", "The answer is C", "the correct answer is
# option (B)", "Answer - C". The lead-in must be "answer" followed by ":" or "is" (or a dash).
_LEAD_IN = re.compile(
    r"""
    (?:final\s+|correct\s+|best\s+|right\s+)?answer   # the keyword
    [\s*_]*                                           # markdown after it: **Answer**:
    (?::|：|\bis\b|\bwould\s+be\b|\s-\s|=)              # ':' / 'is' / ' - '
    """,
    re.IGNORECASE | re.VERBOSE,
)
# What may stand between the lead-in and the letter: spaces, markdown, "$", "option"/"choice".
_FILLER = re.compile(r"(?:[\s*_`$>]|\\\(|\\\[|(?:option|choice|letter)\b)*", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}")
_THINK_END = "</think>"
_OPTION = re.compile(r"([(\[{]?)[ \t]*([A-Za-z])(?:[ \t]*([)\]}]))?")
_PRONOUN_I = re.compile(r"\s+(?:think|believe|guess|would|am|'m|feel|suspect|need|can)\b")


def _letter_at(text: str, pos: int, letters: str) -> str | None:
    """The option letter starting at ``pos`` (``C``, ``(C)``, ``[c]``, ``C)``, ``C.``), if any."""
    m = _OPTION.match(text, pos)
    if m is None:
        return None
    opening, letter, closing = m.group(1), m.group(2), m.group(3) or ""
    if letter.upper() not in letters:
        return None
    rest = text[m.end() :]
    if opening or closing:  # "(c)" / "[B]" / "C)": unambiguous
        return letter.upper()
    # A bare letter must end there: not the start of a word ("The answer is Paris").
    if re.match(r"[A-Za-z0-9]", rest):
        return None
    if letter == "I" and _PRONOUN_I.match(rest):  # "The answer is I think (C)"
        return None
    # "the answer is a prime number": a lower-case letter followed by a word is an article.
    if letter.islower() and re.match(r"[ \t]+[A-Za-z]", rest):
        return None
    return letter.upper()


def _boxed_contents(text: str) -> list[tuple[int, str]]:
    """``(position, content)`` of every ``\\boxed{...}``, braces balanced."""
    found = []
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        if depth == 0:
            found.append((m.start(), text[m.end() : i - 1]))
    return found


def _letter_from_boxed(content: str, letters: str) -> str | None:
    """A letter only if the box holds just an option: ``C``, ``(C)``, ``\\text{C}``, ``C) Paris``."""
    inner = content
    for _ in range(3):  # unwrap nested \text{\textbf{C}}
        inner = _TEXT_CMD.sub(r"\1", inner)
    inner = inner.replace("\\", " ").strip().strip("$*_ ").strip()
    m = re.fullmatch(r"[(\[]?\s*([A-Za-z])\s*[)\]]?\.?", inner)
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    # "C) 42" / "C. Paris" / "(C) Paris": the option letter with its text.
    m = re.match(r"\(?([A-Z])(?:\)|\.|:)\s+\S", inner)
    if m and m.group(1) in letters:
        return m.group(1)
    return None


def _bare_response_letter(text: str, letters: str) -> str | None:
    """A response that is nothing but an option: ``C``, ``(C)``, ``**C**``, ``C. Paris``."""
    stripped = text.strip().strip("*_`$ ").strip()
    if not stripped or "\n" in stripped:
        return None
    m = re.fullmatch(r"[(\[]?([A-Za-z])[)\]]?\.?", stripped)
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    m = re.match(r"[(\[]?([A-Z])(?:[)\]]|\.|:)\s+\S", stripped)
    if m and m.group(1) in letters and len(stripped) <= 200:
        return m.group(1)
    return None


def extract_letter(text: str | None, letters: str = DEFAULT_LETTERS) -> str | None:
    """The option letter a response commits to, upper-cased, or None.

    Looks at explicit answer statements (``Answer: X``, ``The answer is (X)``, ``**Final
    Answer:** X``, any case and markdown) and at ``\\boxed{X}`` / ``\\boxed{\\text{X}}``; the one
    that comes last in the response wins (models restate and revise). A box that holds an
    expression rather than an option (``\\boxed{2x+1}``) is ignored. Reasoning before a
    ``</think>`` is skipped. A response that is only an option (``C`` or ``(C) Paris``) counts.
    """
    if not text:
        return None
    letters = letters.upper()
    if _THINK_END in text:
        text = text.rsplit(_THINK_END, 1)[1]
    candidates: list[tuple[int, str]] = []
    for m in _LEAD_IN.finditer(text):
        filler = _FILLER.match(text, m.end())
        pos = filler.end() if filler else m.end()
        if text.startswith("\\boxed", pos) or text.startswith("\\fbox", pos):
            continue  # the box itself is read below
        letter = _letter_at(text, pos, letters)
        if letter is not None:
            candidates.append((m.start(), letter))
    for pos, content in _boxed_contents(text):
        letter = _letter_from_boxed(content, letters)
        if letter is not None:
            candidates.append((pos, letter))
    if candidates:
        return max(candidates)[1]
    return _bare_response_letter(text, letters)


def score_multichoice(
    response: str | None, expected_letter: str, letters: str = DEFAULT_LETTERS
) -> VerifyResult:
    """1.0 when the extracted letter equals ``expected_letter`` (case-insensitive), else 0.0."""
    expected = expected_letter.strip().strip("()").strip().upper()
    predicted = extract_letter(response, letters)
    reward = 1.0 if predicted is not None and predicted == expected else 0.0
    return VerifyResult(
        reward=reward,
        extracted_answer=predicted,
        details={"expected_answer": expected, "no_answer": predicted is None},
        scores={"symbolic_correct": reward},
    )
