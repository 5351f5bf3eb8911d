"""Arena-Hard: verdict parsing, the Bradley-Terry score against an independent logistic fit,
and the benchmark end to end through ``nel eval run`` with a rule-driven judge server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.optimize import minimize_scalar

from nel.cli import EXIT_INCOMPLETE, EXIT_OK, main
from nel.errors import ExitCode
from nel.scoring.arena import arena_score, battles, model_margin, parse_verdict
from nel.skills.converters import arena_hard_rows
from nel.skills.data import write_jsonl_atomic
from nel.testing.model_server import ModelServer, Rule


def test_verdict_is_the_one_distinct_label():
    assert parse_verdict("long reasoning... My final verdict is: [[B>>A]]") == "B>>A"
    assert parse_verdict("[[A>B]] and again [[A>B]]") == "A>B"
    assert parse_verdict("[[A>B]] or maybe [[A=B]]") is None
    assert parse_verdict("no label at all") is None
    assert parse_verdict("[[A<B]]") is None
    assert model_margin("A>>B", model_is_a=False) == -2 and model_margin("B>A", model_is_a=False) == 1


def _logistic_fit_share(points: np.ndarray) -> float:
    """NeMo-Skills' construction fitted directly: battles duplicated, a tie is one win in the first
    copy and one loss in the second, one Elo difference (baseline anchored) fit by maximum likelihood."""
    y = np.concatenate([np.where(points == 0.5, 1.0, points), np.where(points == 0.5, 0.0, points)])

    def nll(d: float) -> float:
        z = d * np.log(10) / 400
        return float(np.sum(np.logaddexp(0, z) - y * z))

    d = minimize_scalar(nll, bounds=(-2000, 2000), method="bounded", options={"xatol": 1e-9}).x
    return 100 / (1 + 10 ** (-d / 400))


def test_bradley_terry_matches_a_direct_logistic_fit():
    rng = np.random.default_rng(7)
    labels = ["A>>B", "A>B", "A=B", "B>A", "B>>A", None]
    margins = [model_margin(labels[i], bool(j % 2 == 0)) for j, i in enumerate(rng.integers(0, 6, 400))]
    points = battles(margins)
    result = arena_score(points)
    assert result is not None
    assert result.score == pytest.approx(_logistic_fit_share(points), abs=0.01)
    low, high = result.ci95
    assert low < 0 < high and high - low < 15
    assert battles([2, -1, 0, None]).tolist() == [1.0, 1.0, 1.0, 0.0, 0.5]


def _write_upstream(folder: Path, questions: list[str]) -> None:
    folder.mkdir(parents=True)
    with (folder / "question.jsonl").open("w") as out:
        for i, q in enumerate(questions):
            out.write(
                json.dumps({"uid": f"u{i}", "category": "arena-hard-v0.1", "cluster": "c", "prompt": q})
                + "\n"
            )
    with (folder / "gpt-4-0314.jsonl").open("w") as out:
        for i in range(len(questions)):
            turns = [{"role": "user", "content": questions[i]},
                     {"role": "assistant", "content": {"answer": f"BASELINE answer {i}"}}]  # fmt: skip
            out.write(
                json.dumps({"uid": f"u{i}", "ans_id": "x", "model": "gpt-4-0314", "messages": turns}) + "\n"
            )


def _prepare(tmp_path: Path, questions: list[str]) -> None:
    """Upstream-format questions and baseline answers, converted into ``tmp_path/data``."""
    upstream = tmp_path / "upstream"
    _write_upstream(upstream, questions)
    rows = list(arena_hard_rows([upstream / "question.jsonl", upstream / "gpt-4-0314.jsonl"]))
    write_jsonl_atomic(tmp_path / "data" / "arena-hard" / "test.jsonl", rows)


def _run(tmp_path: Path, model: ModelServer, *extra: str) -> int:
    """``nel eval run`` of skills://arena-hard on ``tmp_path/data`` into ``tmp_path/run``."""
    return main(["eval", "run", "--bench", "skills://arena-hard", "--model-url", model.base_url, "--model-id", "m",
                 "--data-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path / "run"), "--progress", "none",
                 "--skills-backend", "native", *extra])  # fmt: skip


def _answer_of(text: str, side: str) -> str:
    return text.split(f"<|The Start of Assistant {side}'s Answer|>\n")[1].split("\n<|The End")[0]


def _judge(prefer_model: dict[str, str]):
    """Judges by which answer is the model's: ``prefer_model[question]`` is the label for
    'model better' ('>>' strong, '>' slight, '=' tie, '<' baseline better)."""

    def answer(body: dict[str, Any]) -> Rule:
        text = body["messages"][-1]["content"]
        question = text.split("<|User Prompt|>\n")[1].split("\n")[0]
        model_is_a = not _answer_of(text, "A").startswith("BASELINE")
        how = prefer_model[question]
        label = {">>": ("A>>B", "B>>A"), ">": ("A>B", "B>A"), "=": ("A=B", "A=B"), "<": ("B>A", "A>B")}[how]
        return Rule(content=f"My own answer first. My final verdict is: [[{label[0 if model_is_a else 1]}]]")

    return answer


QUESTIONS = ["Write a haiku about rust.", "Explain TCP slow start.", "Sort a list in C.", "What is a monad?"]


@pytest.mark.parametrize(
    ("prefs", "expected"),
    [((">>", ">>", ">>", ">>"), 100.0), (("<", "<", "<", "<"), 0.0), ((">>", ">", "=", "<"), None)],
)
def test_arena_hard_end_to_end(tmp_path: Path, prefs: tuple[str, ...], expected: float | None):
    _prepare(tmp_path, QUESTIONS)
    out = tmp_path / "run"
    with ModelServer(default=Rule(content="MODEL answer")) as model, \
            ModelServer(answer_fn=_judge(dict(zip(QUESTIONS, prefs)))) as judge:  # fmt: skip
        code = _run(tmp_path, model, "--judge-url", judge.base_url, "--judge-model", "judge-m")
        judge_requests = judge.requests
    assert code == EXIT_OK
    assert len(judge_requests) == 2 * len(QUESTIONS)
    assert judge_requests[0].body["messages"][0]["role"] == "system"
    metrics = json.loads((out / "metrics.json").read_text())["arena-hard"]["pass@1"]
    if expected is None:  # 3+1 strong-win battles, 1+1 slight wins, 2 ties, 2 losses per the rules above
        share = (6 + 2 + 1 + 0) / 12
        expected = round(_logistic_fit_share(battles([2, 2, 1, 1, 0, 0, -1, -1])), 2)
        assert expected == pytest.approx(100 * share, abs=0.01)
    assert metrics["score"] == pytest.approx(expected, abs=0.01)
    assert metrics["score_ci95"] == pytest.approx([metrics["score"] + metrics["95_CI"][0], metrics["score"] + metrics["95_CI"][1]])
    assert metrics["invalid_scores"] == 0 and metrics["num_entries"] == 4
    table = pq.read_table(out / "trajectories.parquet").to_pylist()
    calls = json.loads(table[0]["details"])["judge_calls"]
    assert [c["order"] for c in calls] == ["gen-base", "base-gen"]
    assert "MODEL answer" in calls[0]["judge_prompt"].split("Assistant A's Answer|>")[1]
    assert all(c["verdict"] and c["attempts"] == 1 and c["latency_s"] >= 0 for c in calls)


def test_a_failing_judge_call_is_a_scoring_error_naming_the_game(tmp_path: Path):
    _prepare(tmp_path, QUESTIONS[:2])
    out = tmp_path / "run"
    with (
        ModelServer(default=Rule(content="MODEL answer")) as model,
        ModelServer(default=Rule(status=500)) as judge,
    ):
        code = _run(tmp_path, model, "--judge-url", judge.base_url, "--judge-model", "j", "--max-retries", "0")
    assert code == EXIT_INCOMPLETE
    parts = [r for path in sorted(out.rglob("part-*.parquet")) for r in pq.read_table(path).to_pylist()]
    assert len(parts) == 2 and {r["error_kind"] for r in parts} == {"scoring_error"}
    assert "game gen-base" in parts[0]["error"] or "game base-gen" in parts[0]["error"]
    assert "server_error" in parts[0]["error"] and parts[0]["response"] == "MODEL answer"


def test_arena_hard_needs_a_judge(tmp_path: Path):
    write_jsonl_atomic(
        tmp_path / "data" / "arena-hard" / "test.jsonl", [{"question": "q", "baseline_answer": "b"}]
    )
    with ModelServer(default=Rule(content="x")) as model:
        code = _run(tmp_path, model)
    assert code == ExitCode.USAGE
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_question_the_model_did_not_answer_loses_both_games(tmp_path: Path):
    _prepare(tmp_path, QUESTIONS)
    out = tmp_path / "run"
    too_long = Rule(match=QUESTIONS[0], status=400, message="This model's maximum context length is 4096 tokens")
    with ModelServer(rules=[too_long], default=Rule(content="MODEL answer")) as model, \
            ModelServer(answer_fn=_judge(dict.fromkeys(QUESTIONS, ">>"))) as judge:  # fmt: skip
        code = _run(tmp_path, model, "--judge-url", judge.base_url, "--judge-model", "judge-m")
    assert code == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())["arena-hard"]["pass@1"]
    assert metrics["no_answer"] == 1 and metrics["invalid_scores"] == 0
    # three questions won strongly in both games (3 battles each), the fourth lost twice
    assert metrics["battles"] == 3 * 2 * 3 + 2
    assert metrics["score"] == pytest.approx(round(_logistic_fit_share(battles([2] * 6 + [-1, -1])), 2), abs=0.01)
