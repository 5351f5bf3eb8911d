"""The native benchmark catalog: one entry per NeMo-Skills benchmark nel can run itself.

An entry says where the data comes from, how to convert it to NeMo-Skills' prepared
layout, which prompt config and METRICS_TYPE apply, and how many problems to expect,
so preparation can check its own output.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nel.errors import UnknownBenchmarkError
from nel.skills.data import read_jsonl

Row = dict[str, Any]


@dataclass(frozen=True)
class Source:
    """One upstream file. ``mirror_name`` is its path under a mirror (``NEL_DATA_MIRROR``)."""

    url: str
    mirror_name: str


@dataclass(frozen=True)
class Benchmark:
    name: str
    metrics_type: str
    prompt_config: str
    score_names: tuple[str, ...]
    eval_split: str = "test"
    num_problems: int | None = None
    required_fields: tuple[str, ...] = ("problem", "expected_answer")
    sources: tuple[Source, ...] = ()
    convert: Callable[[list[Any]], Iterable[Row]] | None = None
    extract_regex: str | None = None
    not_runnable: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _gsm8k_rows(paths: list[Any]) -> Iterable[Row]:
    for row in read_jsonl(paths[0], required=("question", "answer")):
        solution, _, answer = row["answer"].rpartition("####")
        value = float(answer.strip().replace(",", ""))
        yield {
            "problem": row["question"],
            "expected_answer": int(value) if value.is_integer() else value,
            "reference_solution": re.sub(r"<<.*?>>", "", solution).strip(),
        }


def _copy_rows(paths: list[Any]) -> Iterable[Row]:
    return read_jsonl(paths[0], required=("problem", "expected_answer"))


_RAW = "https://raw.githubusercontent.com"
_NS_DATA = f"{_RAW}/NVIDIA/NeMo-Skills/main/nemo_skills/dataset"

CATALOG: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            name="gsm8k",
            metrics_type="math",
            prompt_config="generic/math",
            score_names=("symbolic_correct",),
            num_problems=1319,
            sources=(Source(f"{_RAW}/openai/grade-school-math/master/grade_school_math/data/test.jsonl",
                            "gsm8k/test.jsonl"),),  # fmt: skip
            convert=_gsm8k_rows,
        ),
        Benchmark(
            name="aime24",
            metrics_type="math",
            prompt_config="generic/math",
            score_names=("symbolic_correct",),
            num_problems=30,
            sources=(Source(f"{_NS_DATA}/aime24/test.txt", "aime24/test.jsonl"),),
            convert=_copy_rows,
        ),
        Benchmark(
            name="aime25",
            metrics_type="math",
            prompt_config="generic/math",
            score_names=("symbolic_correct",),
            num_problems=30,
            sources=(Source(f"{_NS_DATA}/aime25/test.txt", "aime25/test.jsonl"),),
            convert=_copy_rows,
        ),
    )
}


def get_benchmark(name: str) -> Benchmark:
    try:
        return CATALOG[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(CATALOG), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(CATALOG))}"
        raise UnknownBenchmarkError(f"unknown benchmark {name!r}{hint}") from None
