"""LiveCodeBench scoring (METRICS_TYPE ``livecodebench``): LiveCodeBench's grading, verdicts in nel.

The semantics are those of LiveCodeBench's ``evaluation/testing_util.py`` (the reference in
``tests/test_livecodebench.py``, from the ``nvidia-livecodebench`` package):

* the code is the response's first ```python block (NeMo-Skills' ``preprocess_code``),
  nothing after an unfinished ``<think>``;
* call-based problems (``metadata.func_name``, LeetCode): the code, after LiveCodeBench's
  import prelude, is loaded once; ``Solution()`` is made once when the code says
  ``class Solution``; each test's input is one JSON value per line (the arguments), the
  return value (a tuple counts as a list) must ``==`` the JSON output;
* stdin problems: a trailing ``if __name__ == '__main__':`` block is unwrapped, everything
  but the imports becomes the body of one function, loaded once (module name ``tmp_sol``)
  and called per test with ``sys.stdin`` reading the input and ``sys.stdout`` captured; a
  ``SystemExit`` ends the test normally; outputs match when, stripped and split into stripped
  lines, they have as many lines and each line is equal or equal number by number
  (``Decimal``);
* tests run in order, public then private, each within ``timeout`` seconds (6, as NeMo-Skills
  runs it); the first failure stops the problem; the whole problem has
  ``(timeout + 1) * tests + 5`` seconds.

Unlike the reference, the code runs in nel's sandbox and only reports outputs
(:mod:`nel.execution.testcases`); the comparison with the expected outputs happens here.
Departures, where running the code outside its own grader process shows: the reference also
disables ``os.kill``, ``os.remove``, ``subprocess.Popen``, ``quit`` and friends
(``reliability_guard``) where nel relies on the sandbox instead, and it has no memory limit
where nel's sandbox has one (1 GiB per process by default).
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from nel.errors import ConfigError, DataError, ScoringError
from nel.execution import harness
from nel.execution.sandbox import LocalSandbox
from nel.execution.testcases import CaseResults, Program, run_test_cases
from nel.skills.livecodebench import problem_tests
from nel.types import VerifyResult

__all__ = [
    "DEFAULT_TIMEOUT",
    "LiveCodeBenchRowScorer",
    "build_program",
    "extract_code",
    "score_livecodebench",
]

DEFAULT_TIMEOUT = 6.0

_PRELUDE_MODULES = (
    "string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random", "statistics",
    "itertools", "functools", "operator", "io", "sys", "json",
)  # fmt: skip
# What LiveCodeBench puts in front of every solution: star imports (builtins last among them,
# then typing), the modules themselves, and a deep recursion limit.
PRELUDE = (
    "".join(f"from {m} import *\n" for m in (*_PRELUDE_MODULES, "builtins", "typing"))
    + "".join(f"import {m}\n" for m in _PRELUDE_MODULES)
    + "sys.setrecursionlimit(50000)\n"
)
# LiveCodeBench's error codes; a return value that is not plain data cannot equal the expected
# JSON value, so it is a wrong answer there too.
ERROR_CODES = {"wrong_answer": -2, "not_plain_data": -2, "timeout": -3, "runtime_error": -4, "crashed": -4}


def extract_code(response: str | None) -> str:
    """The code NeMo-Skills grades: after ``</think>``, the first ```python block (else the
    first ``` block, else the text), stripped; "" after an unfinished ``<think>``."""
    text = (response or "").strip().replace("\r", "")
    if "<think>" in text:
        if "</think>" not in text:
            return ""
        text = text.split("</think>", 1)[1].strip()
    for fence in ("```python", "```"):
        if fence in text:
            text = text[text.index(fence) + len(fence) :].strip()
            if "```" in text:
                text = text[: text.index("```")].strip()
            break
    return text.strip() if text.startswith(" ") else text


def _module(body: Sequence[ast.stmt]) -> ast.Module:
    return ast.Module(body=list(body), type_ignores=[])


def _unwrap_main(code: str) -> str:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.If) and ast.unparse(last.test).strip() == "__name__ == '__main__'":
        return ast.unparse(_module(tree.body[:-1])) + "\n" + ast.unparse(_module(last.body))
    return code


def _as_function(code: str) -> str:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    imports = [s for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom))]
    rest = [s for s in tree.body if not isinstance(s, (ast.Import, ast.ImportFrom))]
    args = ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[])
    function = ast.FunctionDef(name="wrapped_function", args=args, body=rest, decorator_list=[], lineno=1)
    try:
        return PRELUDE + "\n" + ast.unparse(_module(imports)) + "\n" + ast.unparse(function)
    except Exception:  # an empty body does not unparse: the reference then runs the code as is
        return code


def build_program(code: str, func_name: str | None) -> Program:
    """The program the sandbox loads for ``code`` (see the module doc)."""
    if func_name:
        owner = "Solution" if "class Solution" in code else None
        return Program(f"{PRELUDE}\n\n{code}", "call", func_name, instantiate=owner, module_name="tmp_sol")
    return Program(_as_function(_unwrap_main(code)), "stdio", "wrapped_function", module_name="tmp_sol")


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(item) for item in line.split()]
    except (InvalidOperation, ValueError):
        return None


def stdio_verdict(output: str, expected: str) -> tuple[str, str]:
    got = [line.strip() for line in output.strip().split("\n")]
    want = [line.strip() for line in expected.strip().split("\n")]
    if len(got) != len(want):
        return "wrong_answer", f"{len(got)} output lines, expected {len(want)}"
    for number, (line, target) in enumerate(zip(got, want)):
        if line == target:
            continue
        numbers, targets = _decimals(line), _decimals(target)
        if numbers is None or targets is None or numbers != targets:
            return "wrong_answer", f"line {number}: {line[:150]!r} != {target[:150]!r}"
    return "passed", ""


def _call_verdict(reply: dict[str, Any], expected: Any) -> tuple[str, str]:
    try:
        value = harness.decode(reply.get("value"))
    except (ValueError, TypeError) as exc:
        return "not_plain_data", str(exc)
    if isinstance(value, tuple):
        value = list(value)
    if value == expected:
        return "passed", ""
    return "wrong_answer", f"{str(value)[:150]} != {str(expected)[:150]}"


async def score_livecodebench(
    row: dict[str, Any], response: str | None, *, sandbox: LocalSandbox | None = None, timeout: float = DEFAULT_TIMEOUT,
    workers: int = 1,
) -> VerifyResult:  # fmt: skip
    """Score one response to a LiveCodeBench row (prepared by :mod:`nel.skills.livecodebench`)."""
    code = extract_code(response)
    details: dict[str, Any] = {"task_id": row.get("task_id"), "difficulty": row.get("difficulty")}
    if not code:
        details.update(status="no_code", no_answer=True)
        return VerifyResult(0.0, None, details, {"accuracy": 0.0})
    try:
        inputs, outputs, func_name = await asyncio.to_thread(problem_tests, row)
        if func_name:
            requests = [{"args": harness.encode([json.loads(a) for a in i.split("\n")])} for i in inputs]
            expected: list[Any] = [json.loads(o) for o in outputs]
        else:
            requests, expected = [{"input": i} for i in inputs], list(outputs)
    except (DataError, ValueError, KeyError) as exc:
        raise ScoringError(f"LiveCodeBench problem {row.get('task_id')}: bad tests: {exc}") from exc

    def judge(index: int, reply: dict[str, Any]) -> tuple[str, str]:
        if func_name:
            return _call_verdict(reply, expected[index])
        return stdio_verdict(str(reply.get("stdout", "")), expected[index])

    run = await run_test_cases(
        build_program(code, func_name), requests, judge, test_timeout=timeout, setup_timeout=timeout,
        overall_timeout=(timeout + 1) * len(requests) + 5, workers=workers,
        limits=sandbox.limits if sandbox else None, slot=sandbox.slot if sandbox else None,
    )  # fmt: skip
    _describe(run, details)
    reward = 1.0 if run.passed else 0.0
    return VerifyResult(reward, code, details, {"accuracy": reward})


def _describe(run: CaseResults, details: dict[str, Any]) -> None:
    failure = run.first_failure
    details.update(
        no_answer=False,
        tests=run.total,
        tests_passed=sum(o.passed for o in run.outcomes),
        duration_s=round(run.duration_s, 3),
        network_isolated=bool(run.isolation.get("network_namespace")),
        verdict_by="nel",
    )
    if run.setup_error is not None:
        details.update(
            status="setup_" + (run.setup_status or "error"), error_code=-4, error=run.setup_error[-2000:]
        )
    elif failure is not None:
        details.update(
            status=failure.status, error_code=ERROR_CODES.get(failure.status, -4), failed_test=failure.index,
            error=failure.detail[-2000:],
        )  # fmt: skip
    elif run.passed:
        details.update(status="passed")
    else:
        details.update(status="overall_timeout", error_code=-1)
    if run.stderr_tail and not run.passed:
        details["stderr_tail"] = run.stderr_tail[-1000:]


class LiveCodeBenchRowScorer:
    """``livecodebench``: :func:`score_livecodebench` on nel's local sandbox."""

    def __init__(self, options: Any) -> None:
        executor = getattr(options, "executor", None)
        if executor is not None and not isinstance(executor, LocalSandbox):
            raise ConfigError(
                "LiveCodeBench needs nel's local sandbox (it times each test case and compares outputs in nel); "
                f"got {type(executor).__name__}"
            )
        self.sandbox = executor or LocalSandbox(max_concurrency=os.cpu_count() or 1)

    async def score(self, response: str, row: dict[str, Any], *, where: str) -> VerifyResult:
        return await score_livecodebench(row, response, sandbox=self.sandbox)

    async def aclose(self) -> None:
        pass
