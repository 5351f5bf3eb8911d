"""HumanEval+ scoring (METRICS_TYPE ``evalplus`` on EvalPlus rows): base and plus tests, EvalPlus' rules.

EvalPlus rows (``HumanEvalPlus.jsonl.gz`` of the ``evalplus/humanevalplus_release`` releases)
carry the test *inputs* (``base_input``: the original tests' arguments, ``plus_input``: EvalPlus'
extra ones) and ``atol``. Grading follows ``evalplus.evaluate`` as NeMo-Skills runs it
(``min_time_limit=1``, ``gt_time_limit_factor=4``, fast check):

* expected outputs and reference times come from the canonical solution, run in its own
  sandbox (dataset code only; the model's code never runs there), once per problem and kept;
* the model's function gets each input in a sandbox that only reports return values
  (:mod:`nel.execution.testcases`); per input ``max(1 s, 4 x reference time)``, for the set
  ``min(60, sum) + 1`` seconds, stop at the first failure;
* here, in nel: equal (``==``), or for ``find_zero`` ``|poly(xs, out)| <= atol``; otherwise, when
  ``atol`` (1e-6 if 0 and the expected value is a float or a list/tuple of floats) is set, same
  type, same length and ``numpy.allclose(out, exp, rtol=1e-7, atol=atol)``.

``passing_base_tests`` is the base inputs passing; ``passing_plus_tests`` needs base and plus
(NeMo-Skills' ``is_correct`` and ``is_correct-plus``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import numpy as np

from nel.errors import ScoringError
from nel.execution import harness
from nel.execution.sandbox import LocalSandbox
from nel.execution.testcases import Program, run_test_cases
from nel.scoring.code import build_humaneval_program, extract_code
from nel.types import VerifyResult

__all__ = ["EvalPlusGrader", "outputs_match"]

MIN_TIME_LIMIT = 1.0
TIME_LIMIT_FACTOR = 4.0
TASK_TIMEOUT = 60.0


def _poly(xs: list[float], x: float) -> float:
    return sum(coefficient * math.pow(x, i) for i, coefficient in enumerate(xs))


def _is_floats(value: Any) -> bool:
    if isinstance(value, float):
        return True
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, float) for v in value)


def outputs_match(entry_point: str, args: list[Any], out: Any, expected: Any, atol: float) -> bool:
    """EvalPlus' verdict for one input (see the module doc); ``out`` is plain data."""
    try:
        if entry_point == "find_zero":
            return bool(abs(_poly(args[0], out)) <= atol)
        if out == expected:
            return True
        if atol == 0 and _is_floats(expected):
            atol = 1e-6
        if atol == 0 or type(out) is not type(expected):
            return False
        if isinstance(expected, (list, tuple)) and len(out) != len(expected):
            return False
        return bool(np.allclose(out, expected, rtol=1e-07, atol=atol))
    except Exception:  # what EvalPlus' assert would fail on (a TypeError in allclose, ...)
        return False


class EvalPlusGrader:
    """Grades responses to EvalPlus rows; keeps the canonical outputs of the last problems."""

    def __init__(self, sandbox: LocalSandbox | None = None, keep: int = 64) -> None:
        self.sandbox = sandbox
        self._truth: OrderedDict[str, dict[str, tuple[list[Any], list[float]]]] = OrderedDict()
        self._keep = keep

    async def score(self, row: dict[str, Any], response: str | None) -> VerifyResult:
        entry = row["entry_point"]
        code = extract_code(response, entry)
        details: dict[str, Any] = {"task_id": row.get("task_id"), "verdict_by": "nel"}
        if not code.strip():
            details.update(status="no_code", no_answer=True)
            return VerifyResult(0.0, None, details, {"passing_base_tests": 0.0, "passing_plus_tests": 0.0})
        truth = await self._ground_truth(row)
        program_text, mode = build_humaneval_program(row["prompt"], code, "", entry)
        program = Program(program_text[: program_text.rindex(f"check({entry})")], "call", entry)
        base = await self._check(program, row, "base", truth["base"], details)
        plus = base and await self._check(program, row, "plus", truth["plus"], details)
        details.update(mode=mode, no_answer=False, base_status="pass" if base else "fail")
        details["plus_status"] = "pass" if plus else "fail"
        scores = {"passing_base_tests": float(base), "passing_plus_tests": float(plus)}
        return VerifyResult(float(base), code, details, scores)

    async def _ground_truth(self, row: dict[str, Any]) -> dict[str, tuple[list[Any], list[float]]]:
        key = str(row.get("task_id"))
        if key not in self._truth:
            program = Program(row["prompt"] + row["canonical_solution"], "call", row["entry_point"])
            self._truth[key] = {
                kind: await self._canonical(program, row[f"{kind}_input"], key) for kind in ("base", "plus")
            }
            while len(self._truth) > self._keep:
                self._truth.popitem(last=False)
        return self._truth[key]

    async def _canonical(
        self, program: Program, inputs: list[Any], task: str
    ) -> tuple[list[Any], list[float]]:
        values: dict[int, Any] = {}

        def keep(index: int, reply: dict[str, Any]) -> tuple[str, str]:
            values[index] = harness.decode(reply["value"])
            return "passed", ""

        run = await run_test_cases(
            program, [{"args": harness.encode(list(args))} for args in inputs], keep, test_timeout=TASK_TIMEOUT,
            overall_timeout=10 * TASK_TIMEOUT, stop_at_first_failure=False, **self._sandbox_args(),
        )  # fmt: skip
        if not run.passed:
            failure = run.setup_error or (run.first_failure.detail if run.first_failure else "incomplete")
            raise ScoringError(
                f"EvalPlus {task}: the canonical solution fails on its own inputs: {failure[-500:]}"
            )
        return [values[i] for i in range(len(inputs))], [o.time_s for o in run.outcomes]

    async def _check(
        self, program: Program, row: dict[str, Any], kind: str, truth: tuple[list[Any], list[float]],
        details: dict[str, Any],
    ) -> bool:  # fmt: skip
        inputs, (expected, ref_times) = row[f"{kind}_input"], truth
        limits = [max(MIN_TIME_LIMIT, TIME_LIMIT_FACTOR * t) for t in ref_times]
        atol, entry = float(row.get("atol") or 0), row["entry_point"]

        def judge(index: int, reply: dict[str, Any]) -> tuple[str, str]:
            try:
                out = harness.decode(reply.get("value"))
            except ValueError as exc:
                return "not_plain_data", str(exc)
            if outputs_match(entry, list(inputs[index]), out, expected[index], atol):
                return "passed", ""
            return "wrong_answer", f"{str(out)[:150]} != {str(expected[index])[:150]}"

        run = await run_test_cases(
            program, [{"args": harness.encode(list(args))} for args in inputs], judge, test_timeout=limits,
            overall_timeout=min(TASK_TIMEOUT, sum(limits)) + 1, **self._sandbox_args(),
        )  # fmt: skip
        failure = run.first_failure
        details[f"{kind}_tests"] = len(inputs)
        if run.setup_error is not None:
            details.setdefault("status", "setup_" + (run.setup_status or "error"))
            details.setdefault("error", run.setup_error[-2000:])
        elif failure is not None:
            details.setdefault("status", f"{kind}_{failure.status}")
            details.setdefault("error", f"{kind} input {failure.index}: {failure.detail[-2000:]}")
        elif not run.passed:
            details.setdefault("status", f"{kind}_timeout")
        return run.passed

    def _sandbox_args(self) -> dict[str, Any]:
        if self.sandbox is None:
            return {}
        return {"limits": self.sandbox.limits, "slot": self.sandbox.slot}
