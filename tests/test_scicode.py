"""SciCode: problems from the installed nvidia-scicode package, a small test_data.h5 made with h5py,
the multi-step solver against the test model server, sub-step tests in the sandbox with the targets
and verdicts in nel."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("scicode.parse.parse", reason="needs nvidia-scicode (tools/setup.sh) and h5py")

from nel.cli import EXIT_OK, main  # noqa: E402
from nel.errors import ConfigError  # noqa: E402
from nel.execution.sandbox import LocalSandbox  # noqa: E402
from nel.scoring.scicode import SciCodeGrader  # noqa: E402
from nel.scoring.scicode_plan import plan_test  # noqa: E402
from nel.skills.catalog import get_benchmark  # noqa: E402
from nel.skills.data import read_jsonl, write_jsonl_atomic  # noqa: E402
from nel.skills.prepare import prepare  # noqa: E402
from nel.skills.scicode import step_fields  # noqa: E402
from nel.testing.model_server import ModelServer, Rule  # noqa: E402
from tests import scicode_fixture as fx  # noqa: E402

needs_numpy = pytest.mark.skipif(not fx.sandbox_has_numpy(), reason="the sandbox's python lacks numpy/scipy")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare(get_benchmark("scicode"), tmp_path_factory.mktemp("scicode-all"), show_progress=False)


@pytest.fixture(scope="module")
def rows(prepared: Path) -> list[dict[str, Any]]:
    return fx.rows_from_prepared(prepared)


@pytest.fixture(scope="module")
def h5(rows: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.write_test_data(tmp_path_factory.mktemp("scicode-h5") / "test_data.h5", rows)


def grade(rows: list[dict[str, Any]], responses: list[dict[str, str]], h5: Path, **kw: Any) -> list[Any]:
    grader = SciCodeGrader(LocalSandbox(max_concurrency=2), h5_path=h5, **kw)

    async def run() -> list[Any]:
        return list(await asyncio.gather(*[grader.score(r, json.dumps(p)) for r, p in zip(rows, responses)]))

    return asyncio.run(run())


def test_prepare_gives_80_problems_and_the_prefilled_steps(prepared: Path) -> None:
    every = read_jsonl(prepared)
    assert len(every) == 80 and sum(r["num_subtasks"] for r in every) == 338  # 341 steps, 3 shipped
    assert {r["problem_id"]: sorted(r["prefilled_steps"]) for r in every if r["prefilled_steps"]} == {
        "13": ["5"], "62": ["0"], "76": ["2"]
    }  # fmt: skip


def test_no_target_ever_reaches_the_sandbox(prepared: Path) -> None:
    """Over all 1,082 upstream tests: the sandbox part never names ``target``; every target test
    is asserted in nel."""
    plans = [plan_test(t) for r in read_jsonl(prepared) for s in r["sub_steps"] for t in s["test_cases"]]
    assert len(plans) == 1082
    assert not [p for p in plans if any(re.search(r"\btarget\b", src) for _, src in p.sandbox)]
    in_nel = [p for p in plans if any(kind == "assert" for kind, _ in p.nel)]
    assert len(in_nel) == 1076  # the 6 others (problem 78) compare no target: their asserts run in the sandbox


@needs_numpy
def test_reference_passes_broken_fails_wrong_and_slow_get_their_verdicts(
    rows: list[dict[str, Any]], h5: Path
) -> None:
    reference = [fx.ground_truth_programs(r) for r in rows]
    broken = [{k: "import numpy as np\n" for k in p} for p in reference]
    wrong = [dict(p) for p in reference]
    wrong[0]["29.2"] = wrong[0]["29.2"] + "\n\ndef inner_product(u, v):\n    return float(np.dot(u, v)) + 1e-3\n"
    slow = [dict(p) for p in reference]
    slow[1]["38.1"] = slow[1]["38.1"] + "\n\nimport time\n_cross = cross\ndef cross(a, b):\n" \
        "    time.sleep(5)\n    return _cross(a, b)\n"  # fmt: skip
    good = grade(rows, reference, h5)
    bad, off, late = grade([rows[0], rows[0], rows[1]], [broken[0], wrong[0], slow[1]], h5, step_timeout=3.0)
    assert [g.scores for g in good] == [{"problem_accuracy": 1.0, "subtask_accuracy": 3.0, "num_subtasks": 3.0}] * 2
    assert bad.scores["subtask_accuracy"] == 0.0
    steps = {s["step"]: s for s in off.details["steps"]}
    assert steps["29.2"]["status"] == "wrong_answer" and off.scores["subtask_accuracy"] == 2.0  # 29.3 recomputes
    timed = {s["step"]: s["status"] for s in late.details["steps"]}
    assert timed["38.1"] == "timeout" and late.scores["problem_accuracy"] == 0.0


def test_missing_test_data_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"test_data\.h5.*NEL_SCICODE_TEST_DATA"):
        SciCodeGrader(h5_path=tmp_path / "none.h5")


def _step_of(text: str, rows: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
    upcoming = text.split("NEXT STEP", 1)[1]
    for row in rows:
        for i, step in enumerate(row["sub_steps"]):
            if step["function_header"] in upcoming:
                return row, i
    raise AssertionError("no step matches the request")


@needs_numpy
def test_nel_eval_run_end_to_end(
    tmp_path: Path, rows: list[dict[str, Any]], h5: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    write_jsonl_atomic(data / "scicode" / "test_aai.jsonl", rows)
    monkeypatch.setenv("NEL_SCICODE_TEST_DATA", str(h5))

    def answer(body: dict[str, Any]) -> Rule:
        row, i = _step_of(body["messages"][-1]["content"], rows)
        code = row["sub_steps"][i]["ground_truth_code"]
        if row["problem_id"] == "38" and i == 2:
            code = "def reciprocal(*args):\n    return None\n"
        return Rule(content=_answer(code))

    out = tmp_path / "run"
    with ModelServer(answer_fn=answer) as server:
        code = main(["eval", "run", "--bench", "skills://scicode", "--model-url", server.base_url, "--model-id", "m",
                     "--data-dir", str(data), "--output-dir", str(out), "--progress", "none",
                     "--skills-backend", "native"])  # fmt: skip
        sent = [r.body["messages"][-1]["content"] for r in server.requests]
    assert code == EXIT_OK and len(sent) == 6
    third = next(s for s in sent if "def orthogonalize" in s.split("NEXT STEP", 1)[1])
    assert "def normalize" in third.split("NEXT STEP", 1)[0] and "import numpy" not in third.split("------")[0]
    assert third == get_prompt(rows[0], 2, third)
    metrics = json.loads((out / "metrics.json").read_text())["scicode"]["pass@1"]
    assert metrics["problem_accuracy"] == pytest.approx(50.0)
    assert metrics["subtask_accuracy"] == pytest.approx(500 / 6)
    assert (metrics["num_problems"], metrics["num_subtasks"], metrics["no_answer"]) == (2, 6, 0.0)


def _answer(code: str) -> str:
    return f"Background first.\n```python\n# Background: ...\nimport numpy as np\n{code}\n```\nDone."


def get_prompt(row: dict[str, Any], index: int, sent: str) -> str:
    """The request NeMo-Skills builds for step ``index`` given the code the earlier answers held."""
    from nel.skills.prompts import get_prompt_config
    from nel.skills.scicode import extract_step_code

    code = [extract_step_code(_answer(s["ground_truth_code"])) for s in row["sub_steps"]]
    return get_prompt_config("eval/scicode/default").user.format(**step_fields(row, index, code, True))


@needs_numpy
def test_python_m_nel_launch_end_to_end(tmp_path: Path, rows: list[dict[str, Any]], h5: Path) -> None:
    import os
    import subprocess
    import sys

    data = tmp_path / "data"
    write_jsonl_atomic(data / "scicode" / "test_aai.jsonl", rows)

    def answer(body: dict[str, Any]) -> Rule:
        row, i = _step_of(body["messages"][-1]["content"], rows)
        return Rule(content=_answer(row["sub_steps"][i]["ground_truth_code"]))

    root = Path(__file__).resolve().parents[1]
    with ModelServer(answer_fn=answer) as server:
        done = subprocess.run(
            [sys.executable, "-m", "nel.launch", "bench=skills/scicode", f"model.url={server.base_url}",
             "model.model_id=m", f"data_dir={data}", f"output_root={tmp_path}", "hydra/launcher=basic"],
            capture_output=True, text=True, timeout=300, cwd=root,
            env={**os.environ, "PYTHONPATH": str(root), "NEL_SCICODE_TEST_DATA": str(h5)},
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (metrics_file,) = tmp_path.rglob("metrics.json")
    metrics = json.loads(metrics_file.read_text())["scicode"]["pass@1"]
    assert (metrics["problem_accuracy"], metrics["subtask_accuracy"]) == (100.0, 100.0)


def test_a_malformed_problem_names_its_file_and_line(tmp_path: Path) -> None:
    from nel.errors import DataError
    from nel.skills.scicode import scicode_rows

    bad = tmp_path / "problems_dev.jsonl"
    bad.write_text('{"problem_id": "1", "required_dependencies": "", "sub_steps": [{"step_number": "1.1"}]}\n')
    with pytest.raises(DataError, match=r"problems_dev\.jsonl line 1: a sub-step lacks step_description_prompt"):
        list(scicode_rows([bad]))
