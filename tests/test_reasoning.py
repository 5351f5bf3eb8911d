"""Reasoning kept apart from the answer: the split rules, and a GSM8K run over real HTTP whose
model thinks in each way servers send it (reasoning_content, inline <think>, unclosed)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from nel.cli import main
from nel.errors import ConfigError
from nel.reasoning import THINK, ReasoningTags, parse_tags, split_reasoning
from nel.skills.data import read_jsonl
from nel.testing.model_server import ModelServer, Rule
from nel.types import Completion
from tests.test_cli import run_args


def split(content: str, reasoning: str | None = None, finish: str = "stop", tags: ReasoningTags | None = THINK):
    got = split_reasoning(Completion(content=content, reasoning_content=reasoning, finish_reason=finish), tags)
    return got.answer, got.reasoning, got.unfinished


def test_split_rules() -> None:
    assert split("<think>a\nb</think>\n\nThe answer is 4.") == ("The answer is 4.", "a\nb", False)
    assert split("chain of thought</think>4") == ("4", "chain of thought", False)  # <think> was in the prompt
    assert split("<think>1</think>x<think>2</think> 4") == ("4", "1</think>x<think>2", False)  # the last close
    assert split("  <think>still going, maybe \\boxed{4}", finish="length") == ("", "still going, maybe \\boxed{4}", True)
    assert split("The answer is 4.") == ("The answer is 4.", None, False)
    assert split("4", reasoning="served thinking") == ("4", "served thinking", False)
    assert split("", reasoning="served, cut off", finish="length") == ("", "served, cut off", True)
    assert split("", reasoning="thought, then said nothing") == ("", "thought, then said nothing", False)
    assert split("<think>a</think>4", tags=None) == ("<think>a</think>4", None, False)
    custom = parse_tags("<reasoning>, </reasoning>")
    assert custom == ReasoningTags("<reasoning>", "</reasoning>")
    assert split("<reasoning>r</reasoning>4", tags=custom) == ("4", "r", False)
    assert parse_tags("none") is None and parse_tags(None) is None and parse_tags("<think>,</think>") == THINK
    with pytest.raises(ConfigError, match="--reasoning-tags"):
        parse_tags("<think>")


def test_where_a_closing_tag_exists_the_answer_is_nemo_skills_answer() -> None:
    def nemo_skills(text: str, end: str = "</think>") -> str:  # its parse_reasoning rule, written out again
        return text.split(end)[-1].strip() if end in text else ""

    for text in ("<think>x</think>  A", "x</think>A</think>B", "<think>\n</think>\n\\boxed{3}\n"):
        assert split(text)[0] == nemo_skills(text)
    assert split("plain answer")[0] == "plain answer" != nemo_skills("plain answer")  # the documented difference


def thinking_answerer(data_dir: Path):
    """Problem i's reply, by i % 5: inline think, served reasoning_content, unclosed think,
    reasoning then null content (out of tokens), a plain answer. All answers are right."""
    rows = read_jsonl(data_dir / "gsm8k" / "test.jsonl")
    answers = {row["problem"]: (i, row["expected_answer"]) for i, row in enumerate(rows)}

    def answer(body: dict) -> Rule:
        idx, expected = answers[body["messages"][-1]["content"].split("\n\n", 1)[1]]
        right = f"\\boxed{{{expected}}}"
        return [
            Rule(content=f"<think>wrong path \\boxed{{-1}}</think>So {right}."),
            Rule(content=f"So {right}.", reasoning_content="served thinking",
                 usage={"prompt_tokens": 9, "completion_tokens": 30, "completion_tokens_details": {"reasoning_tokens": 21}}),
            Rule(content=f"<think>nearly there: {right}", finish_reason="length"),
            Rule(content=None, reasoning_content=f"thinking about {right}", finish_reason="length"),
            Rule(content=f"It is {right}."),
        ][idx % 5]  # fmt: skip

    return answer


def test_a_run_scores_answers_only_and_counts_unfinished_reasoning(gsm8k_data_dir: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    with ModelServer(answer_fn=thinking_answerer(gsm8k_data_dir)) as srv:
        assert main(run_args(srv, gsm8k_data_dir, tmp_path / "run", "--max-problems", "10")) == 0
        assert srv.request_count == 10  # the unfinished ones are not retried
        out = capsys.readouterr().out
        assert main(run_args(srv, gsm8k_data_dir, tmp_path / "off", "--max-problems", "5",
                             "--reasoning-tags", "none")) == 0  # fmt: skip
        capsys.readouterr()
    rows = pd.read_parquet(tmp_path / "run" / "trajectories.parquet").set_index("problem_idx").sort_index()
    kinds = rows.error_kind.tolist()
    assert kinds == ["none", "none", "unfinished_reasoning", "unfinished_reasoning", "none"] * 2
    assert rows.correct.tolist() == [True, True, False, False, True] * 2
    assert rows.loc[0, "response"].startswith("So \\boxed{") and rows.loc[0, "reasoning_content"] == "wrong path \\boxed{-1}"
    assert rows.loc[1, "reasoning_content"] == "served thinking" and rows.loc[1, "reasoning_tokens"] == 21
    assert pd.isna(rows.loc[0, "reasoning_tokens"])  # the server gave no count: none is made up
    assert rows.loc[2, "response"] == "" and "nearly there" in rows.loc[2, "reasoning_content"]
    assert "inside <think> with no </think>" in rows.loc[2, "error"] and pd.isna(rows.loc[2, "extracted_answer"])
    assert rows.loc[3, "finish_reason"] == "length" and "while reasoning" in rows.loc[3, "error"]

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["gsm8k"]["pass@1"]
    assert metrics["symbolic_correct"] == pytest.approx(60.0) and metrics["no_answer"] == pytest.approx(40.0)
    runtime = json.loads((tmp_path / "run" / "runtime.json").read_text())
    assert runtime["complete"] and runtime["error_kinds"]["unfinished_reasoning"] == 4
    assert "unfinished reasoning: 4 row(s)" in out

    off = pd.read_parquet(tmp_path / "off" / "trajectories.parquet").set_index("problem_idx").sort_index()
    assert off.loc[0, "response"].startswith("<think>")  # tags off: the content is the answer, as sent
    assert off.loc[2, "error_kind"] == "none" and off.loc[2, "correct"]  # the unclosed thinking was scored
    assert off.loc[3, "error_kind"] == "unfinished_reasoning"  # served reasoning needs no tags


def test_the_launcher_config_takes_both_keys_and_only_custom_tags_change_the_run_id() -> None:
    from nel.launch import compose_plan

    base = ["bench=skills/gsm8k", "output_dir=/tmp/unused"]
    default = compose_plan(base).spec
    cached = compose_plan([*base, "cache_dir=/shared/nel-cache"]).spec
    custom = compose_plan([*base, "reasoning_tags='<r>,</r>'"]).spec
    assert default.reasoning_tags == "<think>,</think>" and cached.cache_dir == "/shared/nel-cache"
    assert cached.config_hash() == default.config_hash() != custom.config_hash()
    with pytest.raises(ConfigError, match="reasoning_tags"):
        compose_plan([*base, "reasoning_tags=oops"])


def test_compare_counts_a_row_without_an_answer_as_zero() -> None:
    from nel.compare import _per_problem

    table = {"problem_idx": [0, 0, 0, 0, 1], "expected_answer": ["4"] * 5, "subset": [None] * 5,
             "scores": [[("symbolic_correct", 1.0)], None, [("symbolic_correct", 1.0)], None, None]}  # fmt: skip
    scores, _, _ = _per_problem({"table": table, "run": {}})
    assert scores[0]["symbolic_correct"] == [1.0, 1.0, 0.0, 0.0]  # two unfinished repeats: 50%, not 100%
    assert scores[1]["symbolic_correct"] == [0.0]
