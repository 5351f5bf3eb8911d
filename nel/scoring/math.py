r"""Math answer scoring: NeMo-Skills' METRICS_TYPE "math" (GSM8K, MATH-500, AIME, HMMT).

Two steps, as in NeMo-Skills:

1. :func:`extract_answer` takes the content of the last ``\boxed{...}`` of a response (else
   the benchmark's regex) — NeMo-Skills' ``predicted_answer``.
2. :func:`math_equal` decides whether it matches the expected answer — ``symbolic_correct``.

:func:`math_equal` first tries a cheap literal path: both answers are normalised (dollar
signs, ``\text{}`` units, percent signs, degree signs, ``\left``/``\right``, ``\dfrac``,
``\frac12``, spacing, ...) and compared as strings, as exact numbers (integers, decimals,
fractions, thousands separators) or as sets/tuples of numbers. The literal path only answers
when the answer is certain; everything else goes to math-verify (``parse`` + ``verify``,
SymPy underneath), which is slow (milliseconds) and can hang on adversarial input. Hence
:class:`MathScorer` runs comparisons in a :class:`~nel.execution.pool.ScoringPool`. For two
plain expressions, a numeric evaluation and an ``expand`` between math-verify's ``parse`` and
``verify`` give math-verify's verdict without its ``simplify`` where that is provably the same
answer (:func:`_quick_verdict`).

Deliberate choices where NeMo-Skills' grader differs: leading zeros (``016`` = ``16``) and
``\$`` are normalised away before anything else. Like NeMo-Skills, bare-word answers
(``Monday``, ``A``) are compared as strings, case included, never through SymPy (which reads
``ab`` as the product ``a*b`` = ``ba`` and lower-cases letters).
"""

from __future__ import annotations

import cmath
import functools
import logging
import re
import signal
import threading
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from nel.errors import ScoringError
from nel.execution.pool import ScoringPool, ScoringTimeoutError
from nel.types import VerifyResult

__all__ = [
    "MathScorer",
    "compare_answers",
    "extract_answer",
    "extract_boxed",
    "math_equal",
    "normalize_answer",
]

# ============================================================================================
# extraction

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_BRACE_TOKENS = re.compile(r"\\.|[{}]", re.DOTALL)
_BRACES = re.compile(r"[{}]")
_BARE_ARG = re.compile(r"[^\s$]+")


def _find_last_box(text: str) -> tuple[int, int] | None:
    """(start, end) of the last ``\\boxed``/``\\fbox`` command name, ignoring ``\\boxedfoo``."""
    best: tuple[int, int] | None = None
    for command in _BOX_COMMANDS:
        end = len(text)
        while True:
            idx = text.rfind(command, 0, end)
            if idx < 0:
                break
            after = idx + len(command)
            if after < len(text) and text[after].isalpha():
                end = idx  # another command, e.g. \boxedsymbol: look further left
                continue
            if best is None or idx > best[0]:
                best = (idx, after)
            break
    return best


def extract_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{...}`` / ``\fbox{...}`` in ``text``.

    Braces are matched (escaped ``\{``/``\}`` do not count). A box that only closes when
    they do count (``\boxed{185\}``) is read the way NeMo-Skills reads it, every brace
    counted: ``185\``. ``\boxed 5`` (argument without braces) gives the token after the space,
    up to whitespace or ``$``. Returns None when there is no box, the last box is unbalanced,
    or it is empty.
    """
    if not text:
        return None
    found = _find_last_box(text)
    if found is None:
        return None
    pos = found[1]
    n = len(text)
    while pos < n and text[pos].isspace():
        pos += 1
    if pos >= n:
        return None
    if text[pos] != "{":
        match = _BARE_ARG.match(text, pos)
        return match.group(0) if match else None
    for tokens in (_BRACE_TOKENS, _BRACES):
        depth = 0
        for token in tokens.finditer(text, pos):
            char = token.group(0)
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    content = text[pos + 1 : token.start()].strip()
                    return content or None
    return None


def extract_answer(text: str, extract_regex: str | None = None) -> str | None:
    """The predicted answer: last ``\\boxed{}`` content, else the last match of ``extract_regex``.

    With the regex, group 1 is used when the pattern has a group, else the whole match (like
    ``re.findall``). Matching uses no flags (NeMo-Skills' default ``The final answer is (.+)$``
    therefore only matches on the last line). Returns None when nothing is found.
    """
    if not text:
        return None
    answer = extract_boxed(text)
    if answer is not None or not extract_regex:
        return answer
    matches = list(re.finditer(extract_regex, text))
    if not matches:
        return None
    last = matches[-1]
    value = last.group(1) if last.re.groups else last.group(0)
    if value is None:
        return None
    value = value.strip()
    return value or None


# ============================================================================================
# normalisation

_UNICODE = str.maketrans({"\u2212": "-", "\u2013": "-", "\u00a0": " ", "\u2009": " "})
_DELIMS = (("\\(", "\\)"), ("\\[", "\\]"))
_DFRAC = re.compile(r"\\[dt]frac(?![a-zA-Z])")
_LEFT_RIGHT = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])\.?")
_THOUSANDS_MARKUP = re.compile(r"\{,\}|,\\!|(?<=\d)\\,(?=\d{3}(?!\d))")
_SPACING = re.compile(r"(?<!\\)\\[,;:! ]|\\q?quad(?![a-zA-Z])|~")
_DEGREE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])|°")
# a trailing unit in text markup, optionally squared/cubed: 5\text{ cm}^2
_TEXT_CMD = r"\\(?:text|textrm|textnormal|mbox)"
_WHOLE_TEXT_CMD = r"\\(?:text|textrm|textnormal|textbf|mbox|mathrm|mathbf)"
_TRAILING_UNIT = re.compile(
    r"(?<=\S)\s*"
    + _TEXT_CMD
    + r"\s*\{(?:\s+[a-zA-Z]|[a-zA-Z]{2})[a-zA-Z .\-/]*\}\s*(?:\^\s*\{?\s*[23]\s*\}?)?\s*$"
)
_WHOLE_TEXT = re.compile(r"^\s*" + _WHOLE_TEXT_CMD + r"\s*\{([^{}]*)\}\s*$")
_PERCENT = re.compile(r"\s*\\?%\s*$")
_CONTROL_SPACE = re.compile(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z0-9])")
_DIGIT_SPACE = re.compile(r"(?<=\d)\s+(?=\d)")
_WHITESPACE = re.compile(r"\s+")
# pmatrix and bmatrix differ only in the brackets drawn: the same matrix (NeMo-Skills agrees).
_BMATRIX = re.compile(r"\\(begin|end)\{bmatrix\}")
_FRAC_SHORT = (
    (re.compile(r"\\frac([0-9a-zA-Z])([0-9a-zA-Z])"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\frac([0-9a-zA-Z])\{"), r"\\frac{\1}{"),
    (re.compile(r"\\frac(\{(?:[^{}]|\{[^{}]*\})*\})([0-9a-zA-Z])"), r"\\frac\1{\2}"),
    (re.compile(r"\\sqrt([0-9a-zA-Z])"), r"\\sqrt{\1}"),
)


def _strip_outer_braces(s: str) -> str:
    while len(s) >= 2 and s[0] == "{" and s[-1] == "}":
        depth = 0
        for i, c in enumerate(s):
            if c == "{" and (i == 0 or s[i - 1] != "\\"):
                depth += 1
            elif c == "}" and (i == 0 or s[i - 1] != "\\"):
                depth -= 1
                if depth == 0 and i != len(s) - 1:
                    return s  # "{a}{b}": the first brace closes early
        s = s[1:-1]
    return s


def normalize_answer(answer: str) -> str:
    r"""Canonical LaTeX-ish form used by the literal path (also fed to math-verify).

    Every step keeps the mathematical meaning, except the ones that drop decorations on
    purpose: ``$``/``\$``, a trailing ``\text{unit}``, a trailing ``%``, degree signs, a final
    period.
    """
    s = answer.translate(_UNICODE).strip()
    for left, right in _DELIMS:
        if s.startswith(left) and s.endswith(right):
            s = s[len(left) : -len(right)].strip()
    if "$" in s:
        s = s.replace("\\$", "").replace("$", "")
    if "{," in s or "\\" in s:
        s = _THOUSANDS_MARKUP.sub(",", s)
    if "\\" in s:
        s = _DFRAC.sub(r"\\frac", s)
        s = _LEFT_RIGHT.sub("", s)
        s = _SPACING.sub(" ", s)
        s = _DEGREE.sub("", s)
        previous = None
        while previous != s:
            previous = s
            s = _TRAILING_UNIT.sub("", s)
        whole = _WHOLE_TEXT.match(s)
        if whole:
            s = whole.group(1)
    elif "°" in s:
        s = _DEGREE.sub("", s)
    s = _PERCENT.sub("", s)
    # A trailing backslash ends no LaTeX answer ("185\\" from \boxed{185\}): NeMo-Skills drops it.
    s = s.strip().rstrip("\\").rstrip().rstrip(".").rstrip()
    if "matrix" in s:
        s = _BMATRIX.sub(r"\\\1{pmatrix}", s)
    if "\\" in s:
        s = _CONTROL_SPACE.sub("\\1\x00", s)
    s = _DIGIT_SPACE.sub("\x00", s)
    s = _WHITESPACE.sub("", s).replace("\x00", " ")
    s = _strip_outer_braces(s)
    if "\\frac" in s or "\\sqrt" in s:
        for pattern, replacement in _FRAC_SHORT:
            s = pattern.sub(replacement, s)
    return s


# ============================================================================================
# literal comparison

_INT = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+)")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_NUM = r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)"
_FRAC = re.compile(r"([+-]?)\\frac\{(" + _NUM + r")\}\{(" + _NUM + r")\}")
_SLASH = re.compile(r"(" + _NUM + r")/(" + _NUM + r")")
_ASSIGNMENT = re.compile(r"[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?=([^=<>]+)")
_WORD = re.compile(r"[a-zA-Z]+")
_TWO_MILLIONTHS = Fraction(2, 10**6)

# a number: (value, exact) where exact means integer or ratio of integers (no decimal point)
_Number = tuple[Fraction, bool]


def _plain_number(s: str) -> _Number | None:
    if _INT.fullmatch(s):
        return Fraction(int(s)), True
    if _DECIMAL.fullmatch(s):
        return Fraction(Decimal(s)), False
    if _THOUSANDS.fullmatch(s):
        plain = s.replace(",", "")
        return (Fraction(int(plain)), True) if "." not in plain else (Fraction(Decimal(plain)), False)
    return None


def _number(s: str) -> _Number | None:
    """Parse an exact number: 12, -0.5, 1,000, \\frac{3}{4}, -\\frac{1}{2}, 3/4. Else None."""
    if not s or len(s) > 60:
        return None
    try:
        plain = _plain_number(s)
        if plain is not None:
            return plain
        match = _FRAC.fullmatch(s) or _SLASH.fullmatch(s)
        if match is None:
            return None
        if match.re is _FRAC:
            sign, num, den = match.groups()
        else:
            sign, (num, den) = "", match.groups()
        top, bottom = _plain_number(num), _plain_number(den)
        if top is None or bottom is None or bottom[0] == 0:
            return None
        value = top[0] / bottom[0]
        return (-value if sign == "-" else value), top[1] and bottom[1]
    except (ValueError, InvalidOperation, ZeroDivisionError):  # e.g. int() digit limit
        return None


def _numbers_equal(a: _Number, b: _Number) -> bool | None:
    if a[0] == b[0]:
        return True
    if a[1] and b[1]:
        return False  # two exact values that differ
    # A decimal is involved: math-verify compares floats rounded to 6 places. A difference
    # above 2e-6 survives that rounding, anything closer is left to math-verify.
    if abs(a[0] - b[0]) > _TWO_MILLIONTHS:
        return False
    return None


def _split_top_level(s: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, c in enumerate(s):
        if c in "{([":
            depth += 1
        elif c in "})]":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def _collection(s: str) -> tuple[str, list[_Number]] | None:
    """``\\{1,2\\}`` -> ("set", ...), ``(1,2)`` -> ("()", ...), ``[1,2]`` -> ("[]", ...)."""
    if s.startswith("\\{") and s.endswith("\\}"):
        kind, inner = "set", s[2:-2]
    elif len(s) >= 2 and s[0] + s[-1] in ("()", "[]"):
        kind, inner = s[0] + s[-1], s[1:-1]
    else:
        return None
    if "," not in inner:
        return None
    values = []
    for part in _split_top_level(inner):
        value = _number(part)
        if value is None:
            return None
        values.append(value)
    return kind, values


def _collections_equal(a: tuple[str, list[_Number]], b: tuple[str, list[_Number]]) -> bool | None:
    kind, xs = a
    other_kind, ys = b
    if kind != other_kind:
        return None  # (1,2) vs [1,2]: intervals and tuples are math-verify's call
    if kind == "set":
        if {x[0] for x in xs} == {y[0] for y in ys}:
            return True
        if all(x[1] for x in xs) and all(y[1] for y in ys):
            return False
        return None
    if len(xs) != len(ys):
        return False
    verdicts = [_numbers_equal(x, y) for x, y in zip(xs, ys)]
    if all(v is True for v in verdicts):
        return True
    if any(v is False for v in verdicts):
        return False
    return None


def _strip_assignment(p: str, e: str) -> tuple[str, str]:
    """``x=5`` vs ``5``: compare the right-hand side (only when exactly one side assigns)."""
    if ("=" in p) == ("=" in e):
        return p, e
    if "=" in p:
        match = _ASSIGNMENT.fullmatch(p)
        return (match.group(1), e) if match else (p, e)
    match = _ASSIGNMENT.fullmatch(e)
    return (p, match.group(1)) if match else (p, e)


def _literal_equal(p: str, e: str) -> bool | None:
    """True/False when certain from the normalised strings, None to defer to math-verify."""
    if not p or not e:
        return False
    p, e = _strip_assignment(p, e)
    if p == e:
        return True
    a, b = _number(p), _number(e)
    if a is not None and b is not None:
        return _numbers_equal(a, b)
    if a is not None or b is not None:
        return None
    ca = _collection(p)
    if ca is not None:
        cb = _collection(e)
        if cb is not None:
            return _collections_equal(ca, cb)
    if _WORD.fullmatch(p) and _WORD.fullmatch(e):
        return False  # different words (case counts, as in NeMo-Skills: "a" is not "A")
    return None


# ============================================================================================
# symbolic comparison (math-verify)

_mv = None  # the math_verify module, imported on first use (it pulls in SymPy, ~1 s)
_mv_config: list = []


class _TimerExpired(BaseException):
    """Raised by our SIGALRM handler; BaseException so math-verify's ``except Exception`` passes it."""


def _on_timer(signum, frame):
    raise _TimerExpired()


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once per process when its own timeout is off; we time it ourselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


def _math_verify():
    global _mv
    if _mv is None:
        import math_verify

        for name in ("math_verify.parser", "math_verify.grader"):
            logging.getLogger(name).addFilter(_DropTimeoutDisabledWarning())
        _mv_config.append(math_verify.LatexExtractionConfig())
        _mv = math_verify
    return _mv


# Evaluations sample every problem several times, so the same expected answer (and often the
# same prediction) comes back again and again; math-verify's own parse cache holds 20 entries.
# Exceptions (timeouts) are not cached.
@functools.lru_cache(maxsize=4096)
def _parse(latex: str) -> tuple:
    mv = _math_verify()
    return tuple(mv.parse(f"${latex}$", _mv_config, parsing_timeout=None))


# Distinct positive sample values for up to 8 free symbols (7/13, 11/17, ...).
_SAMPLE_POINTS = tuple((a, a + 6) for a in (7, 11, 13, 17, 19, 23, 29, 31))
_MAX_EXPANDED_POWER = 32


def _plain_expression(expr) -> bool:
    """A SymPy expression math-verify compares only by value (see :func:`_quick_verdict`)."""
    import sympy

    return (
        isinstance(expr, sympy.Expr)
        and not isinstance(expr, (sympy.Symbol, sympy.MatrixExpr))
        and not expr.has(sympy.Float, sympy.UnevaluatedExpr)
    )


def _quick_verdict(gold, pred) -> bool | None:
    """Decide two parsed expressions without math-verify's ``simplify``, when that is sound.

    math-verify's ``verify`` decides two plain expressions (no relation, set, tuple, matrix,
    lone symbol, float or percentage) equal exactly when string equality, numeric equality or
    ``simplify(gold - pred) == 0`` holds, and each of those means equal values everywhere.
    ``simplify`` is its slowest step (10-40 ms). Two cheap checks give the same answer:

    * evaluated with 30 digits at one sample point (a distinct positive rational per free
      symbol) the two sides differ by more than 1e-9 relative -> they are not equal (False);
    * ``expand(gold - pred)`` is exactly 0 -> they are equal (True): a proof, and then
      ``simplify`` finds 0 too.

    Everything else (undefined values, close values, other kinds of objects, large powers)
    gives None: math-verify decides.
    """
    import sympy

    if not (_plain_expression(gold) and _plain_expression(pred)):
        return None
    symbols = sorted(gold.free_symbols | pred.free_symbols, key=str)
    if len(symbols) > len(_SAMPLE_POINTS):
        return None
    point = {s: sympy.Rational(*_SAMPLE_POINTS[i]) for i, s in enumerate(symbols)}
    try:
        a = complex(gold.subs(point).evalf(30))
        b = complex(pred.subs(point).evalf(30))
    except (TypeError, ValueError, ArithmeticError):  # not a number at this point
        return None
    if not (cmath.isfinite(a) and cmath.isfinite(b)):
        return None
    if abs(a - b) > 1e-9 * max(1.0, abs(a), abs(b)):
        return False
    if gold == pred:
        return True
    difference = gold - pred
    if difference.has(sympy.Integral, sympy.Sum, sympy.Product, sympy.Limit, sympy.Derivative):
        return None
    # math-verify parses without evaluating (sqrt(18) stays sqrt(18)): doit() evaluates.
    difference = difference.doit()
    if difference == 0:
        return True
    if any(
        isinstance(power.exp, sympy.Integer) and abs(power.exp) > _MAX_EXPANDED_POWER
        for power in difference.atoms(sympy.Pow)
    ):
        return None  # (x+1)^1000: expanding could take longer than math-verify itself
    if sympy.expand(difference) == 0:
        return True
    return None


@functools.lru_cache(maxsize=8192)
def _symbolic_equal(p: str, e: str) -> bool:
    mv = _math_verify()
    gold, target = _parse(e), _parse(p)
    if not gold or not target:
        return False
    # parse() gives [expression, matched string]; verify() compares every gold/target pair,
    # expression with expression and string with string, and is True if any pair is equal.
    if len(gold) == 2 and len(target) == 2 and isinstance(gold[1], str) and isinstance(target[1], str):
        verdict = _quick_verdict(gold[0], target[0])
        if verdict is True or (verdict is False and gold[1].strip() != target[1].strip()):
            return verdict
    return bool(mv.verify(list(gold), list(target), timeout_seconds=None))


def _symbolic_equal_timed(p: str, e: str, timeout: float | None) -> bool:
    """Run math-verify under a SIGALRM timer when we own one.

    A timer is only possible in the main thread. If a timer is already running (inside a
    ScoringPool worker, which times every item itself) we leave it alone and rely on it.
    """
    if (
        not timeout
        or timeout <= 0
        or threading.current_thread() is not threading.main_thread()
        or signal.getitimer(signal.ITIMER_REAL)[0] > 0
    ):
        return _symbolic_equal(p, e)
    previous = signal.signal(signal.SIGALRM, _on_timer)
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            return _symbolic_equal(p, e)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _TimerExpired:
        raise ScoringTimeoutError(f"math-verify did not finish within {timeout}s", timeout=timeout) from None
    finally:
        signal.signal(signal.SIGALRM, previous)


# ============================================================================================
# public comparison API


def compare_answers(predicted: str, expected: str, timeout: float | None = 10.0) -> tuple[bool, str]:
    """Like :func:`math_equal`, also saying which path decided: ``"literal"`` or ``"symbolic"``.

    Module-level and picklable, so it can be sent to a :class:`ScoringPool`.
    """
    p = normalize_answer(predicted)
    e = normalize_answer(expected)
    verdict = _literal_equal(p, e)
    if verdict is not None:
        return verdict, "literal"
    return _symbolic_equal_timed(p, e, timeout), "symbolic"


def math_equal(predicted: str, expected: str, *, timeout: float = 10.0) -> bool:
    r"""Whether ``predicted`` is mathematically equal to ``expected`` (both LaTeX-ish strings).

    Cheap literal checks first; math-verify only when they cannot decide. ``timeout`` bounds
    the math-verify step with a SIGALRM timer, which Python only allows in the main thread:
    elsewhere the call is untimed (use :class:`MathScorer` / :class:`ScoringPool` for that).
    Raises :class:`~nel.execution.pool.ScoringTimeoutError` when the timer expires.
    """
    return compare_answers(predicted, expected, timeout)[0]


# ============================================================================================
# scorer


class MathScorer:
    r"""Scores math responses: ``\boxed{}`` (or regex) extraction + equivalence in a pool.

    ``score`` returns reward 1.0/0.0, ``extracted_answer`` (None when no answer was found),
    ``scores={"symbolic_correct": reward}`` and ``details`` with ``path`` ("literal" /
    "symbolic"), or ``no_answer: True``, or ``error`` ("timeout" / "exception") plus a message.
    Extraction runs in the calling process (it is linear-time string scanning); the
    comparison runs in the pool, under ``timeout`` seconds.
    """

    def __init__(self, pool: ScoringPool, extract_regex: str | None = None, timeout: float = 10.0) -> None:
        self.pool = pool
        self.extract_regex = extract_regex
        self.timeout = timeout
        if extract_regex is not None:
            re.compile(extract_regex)  # fail fast on a bad benchmark config

    async def score(self, response: str, expected: str) -> VerifyResult:
        extracted = extract_answer(response or "", self.extract_regex)
        if extracted is None:
            return VerifyResult(
                reward=0.0,
                extracted_answer=None,
                details={"no_answer": True},
                scores={"symbolic_correct": 0.0},
            )
        if expected is None:
            return _failed(extracted, {"error": "exception", "message": "no expected answer"})
        try:
            equal, path = await self.pool.run(
                compare_answers, extracted, str(expected), self.timeout, timeout=self.timeout
            )
        except ScoringTimeoutError as exc:
            return _failed(extracted, {"error": "timeout", "timeout_s": self.timeout, "message": str(exc)})
        except ScoringError as exc:
            details = {"error": "exception", "message": str(exc)}
            exc_type = getattr(exc, "exc_type", "")
            if exc_type:
                details["exception_type"] = exc_type
            return _failed(extracted, details)
        reward = 1.0 if equal else 0.0
        return VerifyResult(
            reward=reward,
            extracted_answer=extracted,
            details={"path": path},
            scores={"symbolic_correct": reward},
        )


def _failed(extracted: str | None, details: dict) -> VerifyResult:
    return VerifyResult(
        reward=0.0, extracted_answer=extracted, details=details, scores={"symbolic_correct": 0.0}
    )
