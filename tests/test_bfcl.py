"""BFCL v3/v4 on real parts: the data of the installed packages, BFCL's AST checker, the
sandboxed simulated APIs, real tool calls from the test model server, `nel eval run`.

Ground truth (the possible answer sent back as tool calls) scores 100%, a wrong call 0%.
benchmarks/bfcl_ground_truth.py gives the same figure for every single-turn row.
"""

from __future__ import annotations

import ast
import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from nel.cli import main
from nel.errors import ExitCode
from nel.scoring.bfcl import V3_CATEGORIES, V4_CATEGORIES, Category, category_rows, ground_truth_calls
from nel.skills.bfcl import package_data
from nel.skills.bfcl_multi_turn import check, play
from nel.skills.scoring_types.base import ScoringOptions
from nel.skills.scoring_types.bfcl import BFCL
from nel.testing.model_server import ModelServer, Rule

pytest.importorskip("bfcl")
ROWS_PER_CATEGORY = 3


def rows_of(version: str, category: Category, n: int = ROWS_PER_CATEGORY) -> list[dict[str, Any]]:
    data, prefix = package_data(version)
    rows = category_rows(data, prefix, category)
    return [next(rows) for _ in range(n)]


def right_calls(row: dict[str, Any]) -> list[dict[str, Any]]:
    if row["bfcl_kind"] == "irrelevance":
        return []
    if row["bfcl_kind"] == "relevance":
        return [{"name": row["tools"][0]["function"]["name"], "arguments": {}}]
    return ground_truth_calls(json.loads(row["expected_answer"]), row["function"], row["language"])


def wrong_calls(row: dict[str, Any]) -> list[dict[str, Any]]:
    if row["bfcl_kind"] == "relevance":
        return []
    return [{"name": row["tools"][0]["function"]["name"] + "_not", "arguments": {"x": 1}}]


def openai(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": f"call_{i}", "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}} for i, c in enumerate(calls)]  # fmt: skip


def score(row: dict[str, Any], response: str) -> float:
    async def go() -> float:
        scorer = BFCL.make_scorer(ScoringOptions(benchmark="bfcl_v3", metrics_type="bfcl"))
        try:
            return (await scorer.score(response, row, where="test row")).reward
        finally:
            await scorer.aclose()

    return asyncio.run(go())


SINGLE_TURN = [("v3", c) for c in V3_CATEGORIES if c.kind != "multi_turn"] + [
    ("v4", c) for c in V4_CATEGORIES if c.name.startswith("simple_")
]


@pytest.mark.parametrize(("version", "category"), SINGLE_TURN, ids=lambda x: getattr(x, "name", x))
def test_ground_truth_calls_score_100_and_wrong_calls_0(version: str, category: Category) -> None:
    if version == "v4":
        pytest.importorskip("bfcl_eval")
    for row in rows_of(version, category):
        right = json.dumps({"content": "", "tool_calls": openai(right_calls(row))})
        wrong = json.dumps({"content": "", "tool_calls": openai(wrong_calls(row))})
        assert score(row, right) == 1.0, row["id"]
        assert score(row, wrong) == 0.0, row["id"]


def test_tools_are_openai_functions_with_dots_replaced() -> None:
    row = rows_of("v3", V3_CATEGORIES[0], 2)[1]  # simple_1 calls math.factorial
    (tool,) = row["tools"]
    assert tool["type"] == "function" and tool["function"]["name"] == "math_factorial"
    assert tool["function"]["parameters"]["type"] == "object"
    assert tool["function"]["description"].endswith("Note that the provided function is in Python 3 syntax.")


# --------------------------------------------------------------------------- multi-turn


def as_tool_call(call: str, tools: list[dict[str, Any]]) -> dict[str, Any]:
    """BFCL's call string (``sort('a.pdf')``) as a tool call; positional args named from the tool."""
    node = ast.parse(call, mode="eval").body
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    names = next(list(t["function"]["parameters"]["properties"]) for t in tools if t["function"]["name"] == node.func.id)
    args = {names[i]: ast.literal_eval(a) for i, a in enumerate(node.args)}
    args.update({k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg})
    return {"name": node.func.id, "arguments": args}


def multi_turn_answerer(row: dict[str, Any], truth: list[list[str]]):
    """Play the ground truth: each turn's calls at its first step, then a text reply."""
    tools = list(row["tools"]) + [t for ts in row.get("held_out_tools", {}).values() for t in ts]

    def answer(body: dict[str, Any]) -> Rule:
        messages = body["messages"]
        if messages[-1]["role"] == "tool":
            return Rule(content="Done.")
        turn = sum(1 for m in messages if m["role"] == "user") - 1
        calls = [as_tool_call(c, tools) for c in truth[turn]]
        return Rule(content=None, tool_calls=calls) if calls else Rule(content="Nothing to do.")

    return answer


@pytest.mark.parametrize("version", ["v3", "v4"])
@pytest.mark.parametrize("broken", [False, True], ids=["ground_truth", "wrong_call"])
def test_a_multi_turn_entry_played_to_the_end(broken: bool, version: str) -> None:
    if version == "v4":
        pytest.importorskip("bfcl_eval")
    categories = V3_CATEGORIES if version == "v3" else V4_CATEGORIES
    (row,) = rows_of(version, next(c for c in categories if c.name == "multi_turn_miss_func"), 1)
    truth = json.loads(row["expected_answer"])
    played = [list(t) for t in truth]
    if broken:  # the last turn moves the wrong file
        played[-1] = [c.replace("previous_report.pdf", "final_report.pdf") if c.startswith("mv") else c for c in played[-1]]

    async def go() -> tuple[Any, float]:
        from nel.client import ModelClient

        async with ModelClient(server.base_url, "m", max_retries=0) as client:
            solved = await play(client, row)
        verdict = await check(row, json.loads(solved.response)["turns"], truth)
        return solved, float(verdict[0])

    with ModelServer(answer_fn=multi_turn_answerer(row, played)) as server:
        solved, reward = asyncio.run(go())
        # the held-out function came back in turn 3, with BFCL's words
        assert any("updated some more functions" in str(m.get("content")) for m in solved.messages)
        assert len(server.requests[-1].body["tools"]) == len(row["tools"]) + 1
    assert [m["role"] for m in solved.messages].count("tool") == sum(len(t) for t in played)
    assert reward == (0.0 if broken else 1.0)


# --------------------------------------------------------------------------- end to end


def test_nel_eval_run_scores_tool_calls_end_to_end(tmp_path: Path) -> None:
    """A prepared file with a few rows of several categories, one of them multi-turn; the model
    answers every other single-turn row right."""
    picks = ["simple", "parallel_multiple", "javascript", "live_multiple", "irrelevance", "multi_turn_base"]
    rows = [r for name in picks for r in rows_of("v3", next(c for c in V3_CATEGORIES if c.name == name), 2)]
    (tmp_path / "data" / "bfcl_v3").mkdir(parents=True)
    (tmp_path / "data" / "bfcl_v3" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    by_text = {json.dumps(r["turns"][0]): r for r in rows if r["bfcl_kind"] != "multi_turn"}
    multi = [r for r in rows if r["bfcl_kind"] == "multi_turn"]
    players = {json.dumps(r["turns"][0]): multi_turn_answerer(r, json.loads(r["expected_answer"])) for r in multi}

    def answer(body: dict[str, Any]) -> Rule:
        first = [m for m in body["messages"] if m["role"] != "assistant" and m["role"] != "tool"]
        for key, player in players.items():
            if json.dumps(first[: len(json.loads(key))]) == key:
                return player(body)
        row = by_text[json.dumps(body["messages"])]
        calls = right_calls(row) if int(row["id"].split("_")[-1].split("-")[0]) % 2 == 0 else wrong_calls(row)
        return Rule(content=None, tool_calls=calls) if calls else Rule(content="I cannot help with that.")

    out = tmp_path / "run"
    with ModelServer(answer_fn=answer) as server:
        code = main(["eval", "run", "--bench", "skills://bfcl_v3", "--model-url", server.base_url, "--model-id", "m",
                     "--data-dir", str(tmp_path / "data"), "--output-dir", str(out), "--progress", "none",
                     "--skills-backend", "native"])  # fmt: skip
        assert "tools" in server.requests[0].body
    assert code == ExitCode.OK
    metrics = json.loads((out / "metrics.json").read_text())
    # ids end in 0 and 1: the even one right, the odd one wrong; irrelevance answers no call for
    # the right half and a call for the other; the multi-turn entries both play the ground truth
    for name in picks[:-1]:
        assert metrics[f"bfcl_v3-{name}"]["pass@1"]["accuracy"] == pytest.approx(50.0), name
    assert metrics["bfcl_v3-multi_turn_base"]["pass@1"]["accuracy"] == pytest.approx(100.0)
    summary = metrics["bfcl_v3"]["pass@1"]
    assert "bfcl_category" not in summary
    # non-live: mean of (simple+javascript averaged), parallel_multiple, irrelevance; live: live_multiple
    assert summary["overall_non_live"] == pytest.approx(50.0)
    assert summary["overall_live"] == pytest.approx(50.0)
    assert summary["overall_multi_turn"] == pytest.approx(100.0)
    assert summary["overall_accuracy"] == pytest.approx((50 + 50 + 100) / 3)
