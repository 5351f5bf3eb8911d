"""The scoring-type registry is the one table keyed by METRICS_TYPE.

Every catalog benchmark nel runs resolves through it; each type's declared score names are the
ones its real scorer returns on a sample row; and no module outside the registry's package
looks anything up by METRICS_TYPE (the six tables it replaced would fail the last test).
"""

from __future__ import annotations

import ast
import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from nel.client import ModelClient
from nel.errors import ConfigError
from nel.scoring.alpaca_eval import switched
from nel.scoring.instruction_following import load_ifbench_rows, load_ifbench_sample_outputs
from nel.skills.backends import NativeBackend
from nel.skills.catalog import CATALOG
from nel.skills.scoring_types import SCORING_TYPES, ScoringOptions, find_scoring_type, scoring_type
from nel.testing.model_server import ModelServer, Rule

NEL = Path(__file__).resolve().parent.parent / "nel"
REGISTRY_PACKAGE = NEL / "skills" / "scoring_types"


def _humaneval_row() -> dict[str, Any]:
    return {"task_id": "t/0", "entry_point": "add", "prompt": 'def add(a, b):\n    """a + b"""\n',
            "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n", "question": "add"}  # fmt: skip


def _livecodebench_row() -> dict[str, Any]:
    tests = '[{"input": "2 3\\n", "output": "5\\n", "testtype": "stdin"}]'
    return {"task_id": "lcb/0", "difficulty": "easy", "question": "add", "public_test_cases": tests,
            "private_test_cases": "[]", "metadata": "{}"}  # fmt: skip


def _if_sample() -> tuple[str, dict[str, Any]]:
    row = load_ifbench_rows()[6]  # its sample response follows its one instruction
    reply = {r["prompt"]: r["response"] for r in load_ifbench_sample_outputs()}[row["prompt"]]
    return reply, row


def _scicode_sample() -> tuple[str, dict[str, Any]]:
    """SciCode problem 29 (shipped in nvidia-scicode) answered with its ground truth, step by step."""
    import importlib.resources
    import importlib.util

    if importlib.util.find_spec("scicode") is None:
        return "{}", {}
    text = importlib.resources.files("scicode").joinpath("data/problems_dev.jsonl").read_text(encoding="utf-8")
    row = next(r for r in map(json.loads, text.splitlines()) if r["problem_id"] == "29")
    row["prefilled_steps"] = {}
    code = [s["ground_truth_code"] for s in row["sub_steps"]]
    programs = {f"29.{i + 1}": "import numpy as np\n" + "\n".join(code[: i + 1]) for i in range(len(code))}
    return json.dumps(programs), row


# METRICS_TYPE -> (response, row, judge reply or None). A new scoring type needs a sample here.
SAMPLES: dict[str, tuple[str, dict[str, Any], str | None]] = {
    "math": ("so \\boxed{2}", {"problem": "1+1", "expected_answer": "2"}, None),
    "multichoice": ("Answer: B", {"problem": "q", "expected_answer": "B", "A": "x", "B": "y"}, None),
    "exact_match": ("The answer is Paris.", {"question": "q", "expected_answer": ["Paris"]}, None),
    "evalplus": ("```python\ndef add(a, b):\n    return a + b\n```", _humaneval_row(), None),
    "if": (*_if_sample(), None),
    "livecodebench": ("```python\na, b = map(int, input().split())\nprint(a + b)\n```", _livecodebench_row(), None),
    "simpleqa": ("Paris", {"question": "q", "expected_answer": "Paris"}, "A"),
    "hle": ("Answer: 2", {"problem": "q", "expected_answer": "2"}, "Judgement: yes"),
    "ruler": (" 1234 and 5678", {"question": "q", "expected_answer": ["1234", "5678"], "match_type": "all"}, None),
    "aalcr": ("Paris", {"question": "q", "original_question": "q", "expected_answer": "Paris"}, "CORRECT"),
    "scicode": (*_scicode_sample(), None),
    "arena": ("MODEL", {"question": "q", "baseline_answer": "b"}, "[[A=B]]"),  # a tie in both games: 0.5
    "alpaca_eval": ("MODEL", {"instruction": "q", "baseline_answer": "b", "instruction_difficulty": 0.3,
                              "gamed": [{"preference": 0.4, "std_delta_len": 0.5, "instruction_difficulty": 0.3, "row": 0},
                                        {"preference": 0.6, "std_delta_len": -0.5, "instruction_difficulty": 0.3, "row": 805}]},
                    "m" if switched("q") else "M"),  # the judge picks the model's output: preference 2
    "bfcl": ('{"content": "no call", "tool_calls": []}', {"bfcl_kind": "irrelevance", "subset_for_metrics": "irrelevance"}, None),
}


def test_every_runnable_catalog_type_resolves_and_the_others_are_named():
    assert set(SAMPLES) == set(SCORING_TYPES)
    for bench in CATALOG.values():
        if NativeBackend(bench).unsupported_reason() is None:
            assert scoring_type(bench.metrics_type).name == bench.metrics_type
            assert bool(bench.judge_prompt_config) == scoring_type(bench.metrics_type).needs_judge, bench.name
        elif find_scoring_type(bench.metrics_type) is None:
            with pytest.raises(ConfigError, match=f"METRICS_TYPE '{bench.metrics_type}'; known: "):
                scoring_type(bench.metrics_type)


def test_an_unknown_type_suggests_a_close_one():
    with pytest.raises(ConfigError, match=r"METRICS_TYPE 'multichoise'; did you mean 'multichoice'\?"):
        scoring_type("multichoise")


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_declared_score_names_are_what_the_scorer_returns(name: str):
    response, row, judge_reply = SAMPLES[name]
    stype = SCORING_TYPES[name]
    if stype.missing() is not None:
        pytest.skip(stype.missing() or "")

    async def score(judge: ModelClient | None) -> Any:
        options = ScoringOptions(benchmark="sample", metrics_type=name, judge=judge, workers=1,
                                 judge_template="grade {generation}", judge_prompt_config="judge/x")  # fmt: skip
        scorer = stype.make_scorer(options)
        try:
            return await scorer.score(response, row, where="sample row")
        finally:
            await scorer.aclose()

    if judge_reply is None:
        result = asyncio.run(score(None))
    else:
        with ModelServer(rules=[Rule(content=judge_reply)]) as server:
            client = ModelClient(server.base_url, "judge", max_retries=0)
            try:
                result = asyncio.run(score(client))
            finally:
                asyncio.run(client.aclose())
    assert tuple(result.scores) == stype.score_names
    assert result.reward == (0.5 if name == "arena" else 1.0), result  # every sample is a right answer


def _looked_up_by_metrics_type(tree: ast.AST) -> list[int]:
    """Lines that key a table or compare a literal by something called ``metrics_type``."""

    def is_type(node: ast.AST) -> bool:
        return (isinstance(node, ast.Name) and node.id == "metrics_type") or (
            isinstance(node, ast.Attribute) and node.attr == "metrics_type"
        )

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and is_type(node.slice):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            if node.args and is_type(node.args[0]):
                lines.append(node.lineno)
        elif isinstance(node, ast.Compare) and is_type(node.left):
            if all(
                isinstance(c, (ast.Constant, ast.Set, ast.Tuple, ast.List, ast.Dict, ast.Name))
                for c in node.comparators
            ) and not all(isinstance(o, (ast.Is, ast.IsNot)) for o in node.ops):
                lines.append(node.lineno)  # fmt: skip
    return lines


def test_no_other_table_is_keyed_by_metrics_type():
    offenders = []
    for path in NEL.rglob("*.py"):
        if REGISTRY_PACKAGE in path.parents:
            continue
        for line in _looked_up_by_metrics_type(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(f"{path.relative_to(NEL.parent)}:{line}")
    assert offenders == []


def test_the_check_would_see_the_old_tables():
    old = "x = SCORE_NAMES[self.metrics_type]\nh = EXTRA_METRICS.get(metrics_type)\nj = metrics_type in _JUDGED\n"
    assert _looked_up_by_metrics_type(ast.parse(old)) == [1, 2, 3]
