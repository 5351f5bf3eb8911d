"""LiveCodeBench data: the ``livecodebench/code_generation_lite`` release files, NeMo-Skills' way.

Upstream publishes one JSONL file per release delta (``test.jsonl``, ``test2.jsonl`` ...
``test6.jsonl``); release ``vN`` is the first N files (what its HF loading script's
``version_tag=release_vN`` reads). NeMo-Skills' ``dataset/livecodebench/prepare.py`` keeps the
problems whose ``contest_date`` falls in a month window (both ends inclusive) and names the
split ``test_<release>_<yymm>_<yymm>``; :data:`SPLITS` lists the windows it prepares.

Rows keep NeMo-Skills' fields (``question`` with its formatting lines, ``task_id``,
``contest_date``, ``difficulty``, ``subset_for_metrics`` = difficulty, ``release_version``)
plus what grading needs, as upstream stores it: ``public_test_cases`` (JSON),
``private_test_cases`` (JSON, or base64 + zlib + pickle) and ``metadata`` (``func_name`` for
call-based problems).

Private tests: upstream pickles them. nel never runs ``pickle.loads`` on downloaded data:
:func:`load_private_tests` unpickles with an unpickler that refuses every global (so no
object, function or module can be built) and then checks that the result is only ``str``,
``list``, ``dict``, ``int``, ``float``, ``bool`` or ``None``, then reads the JSON inside.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import pickle
import zlib
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from nel.errors import DataError

__all__ = [
    "RELEASE_FILES",
    "SPLITS",
    "load_private_tests",
    "livecodebench_rows",
    "problem_tests",
    "question_text",
]

RELEASE_FILES = {
    f"v{n}": tuple("test.jsonl" if i == 1 else f"test{i}.jsonl" for i in range(1, n + 1)) for n in range(1, 7)
}

# (release, first month, last month) of each split NeMo-Skills prepares; the first is the default.
SPLITS = {
    "test_v6_2408_2505": ("v6", "2024-08", "2025-05"),
    "test_v5_2408_2502": ("v5", "2024-08", "2025-02"),
    "test_v5_2407_2412": ("v5", "2024-07", "2024-12"),
    "test_v5_2410_2502": ("v5", "2024-10", "2025-02"),
}

_WITH_STARTER = (
    "You will use the following starter code to write the solution to the problem and enclose your code "
    "within delimiters."
)
_WITHOUT_STARTER = (
    "Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test on "
    "the sample inputs). Enclose your code within delimiters as follows. Ensure that when the python program "
    "runs, it reads the inputs, runs the algorithm and writes output to STDOUT."
)
MAX_PRIVATE_BYTES = 1024**3  # decompressed; upstream's largest problems hold a few hundred MB


def question_text(content: str, starter_code: str) -> str:
    """The ``question`` field exactly as NeMo-Skills' prepare builds it (4 spaces become a tab)."""
    question = content + "\n\n"
    if starter_code:
        question += f"{_WITH_STARTER}\n```python\n{starter_code}\n```\n\n"
    else:
        question += f"{_WITHOUT_STARTER}\n\n```python\n# YOUR CODE HERE\n```\n\n"
    return question.replace("    ", "\t")


def _month_window(first: str, last: str) -> tuple[date, date]:
    start = datetime.strptime(first, "%Y-%m").date()
    end_month = datetime.strptime(last, "%Y-%m").date()
    following = end_month.replace(year=end_month.year + end_month.month // 12, month=end_month.month % 12 + 1)
    return start, date.fromordinal(following.toordinal() - 1)


def livecodebench_rows(paths: list[Path], split: str = "test_v6_2408_2505") -> Iterator[dict[str, Any]]:
    """The rows of ``split`` from the release files (``paths``, in release order)."""
    release, first, last = SPLITS[split]
    start, end = _month_window(first, last)
    if len(paths) < len(RELEASE_FILES[release]):
        raise DataError(f"release {release} needs {len(RELEASE_FILES[release])} files, got {len(paths)}")
    for path in paths[: len(RELEASE_FILES[release])]:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                where = f"{path.name} line {number}"
                try:
                    raw = json.loads(line)
                    day = datetime.strptime(raw["contest_date"], "%Y-%m-%dT%H:%M:%S").date()
                except (ValueError, KeyError, TypeError) as exc:
                    raise DataError(f"{where}: not a LiveCodeBench problem ({exc})") from exc
                if start <= day <= end:
                    yield _row(raw, release, where)


def _row(raw: dict[str, Any], release: str, where: str) -> dict[str, Any]:
    try:
        row = {
            "task_id": raw["question_id"],
            "question": question_text(raw["question_content"], raw.get("starter_code") or ""),
            "contest_date": raw["contest_date"],
            "difficulty": raw["difficulty"],
            "subset_for_metrics": raw["difficulty"],
            "release_version": release,
            "platform": raw.get("platform"),
            "public_test_cases": raw["public_test_cases"],
            "private_test_cases": raw["private_test_cases"],
            "metadata": raw.get("metadata") or "{}",
        }
        problem_tests(row)  # a corrupt test blob fails preparation, naming the problem
    except (KeyError, TypeError) as exc:
        raise DataError(f"{where}: LiveCodeBench problem lacks {exc}") from exc
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from exc
    return row


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing {module}.{name}: private tests must be plain data")


def _check_plain(value: Any, depth: int = 0) -> None:
    if depth > 50:
        raise DataError("private tests nested too deep")
    if value is None or type(value) in (str, int, float, bool):
        return
    if type(value) is list:
        for item in value:
            _check_plain(item, depth + 1)
        return
    if type(value) is dict:
        for key, item in value.items():
            _check_plain(key, depth + 1)
            _check_plain(item, depth + 1)
        return
    raise DataError(f"private tests hold a {type(value).__name__}, not plain data")


def load_private_tests(blob: str) -> list[dict[str, Any]]:
    """Upstream's ``private_test_cases``: JSON, or base64 + zlib + pickle of JSON (see the module doc)."""
    try:
        tests = json.loads(blob)
    except ValueError:
        try:
            inflater = zlib.decompressobj()
            packed = inflater.decompress(base64.b64decode(blob.encode("ascii")), MAX_PRIVATE_BYTES)
            if inflater.unconsumed_tail:
                raise DataError(f"private tests larger than {MAX_PRIVATE_BYTES} bytes")
            value = _PlainUnpickler(io.BytesIO(packed)).load()
        except (
            binascii.Error,
            zlib.error,
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            UnicodeError,
        ) as exc:
            raise DataError(f"private tests are neither JSON nor base64/zlib/pickle: {exc}") from exc
        _check_plain(value)
        tests = json.loads(value) if isinstance(value, str) else value
    if not isinstance(tests, list) or not all(
        isinstance(t, dict) and "input" in t and "output" in t for t in tests
    ):
        raise DataError("private tests are not a list of {input, output}")
    return tests


def problem_tests(row: dict[str, Any]) -> tuple[list[str], list[str], str | None]:
    """``(inputs, outputs, func_name)``: public then private tests, as LiveCodeBench runs them."""
    try:
        public = json.loads(row["public_test_cases"])
        metadata = json.loads(row.get("metadata") or "{}")
    except ValueError as exc:
        raise DataError(f"public tests or metadata are not JSON: {exc}") from exc
    tests = list(public) + load_private_tests(row["private_test_cases"])
    return [t["input"] for t in tests], [t["output"] for t in tests], metadata.get("func_name")
