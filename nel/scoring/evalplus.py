"""HumanEval+ and MBPP+ scoring (METRICS_TYPE ``evalplus`` on EvalPlus rows): base and plus tests.

EvalPlus rows (``HumanEvalPlus.jsonl.gz`` of ``evalplus/humanevalplus_release`` v0.1.10,
``MbppPlus.jsonl.gz`` of ``evalplus/mbppplus_release`` v0.2.0) carry the test *inputs*
(``base_input``: the original tests' arguments, ``plus_input``: EvalPlus' extra ones) and
``atol``. Grading follows ``evalplus.evaluate`` as NeMo-Skills runs it (``min_time_limit=1``,
``gt_time_limit_factor=4``, fast check):

* expected outputs and reference times come from the canonical solution (``prompt +
  canonical_solution``), run in its own sandbox (dataset code only; the model's code never
  runs there), once per problem and kept;
* the model's function gets each input in a sandbox that only reports return values
  (:mod:`nel.execution.testcases`); per input ``max(1 s, 4 x reference time)`` (the reference
  time is nel's measurement of the canonical call, request to reply), for the set
  ``min(60, sum) + 1`` seconds, stop at the first failure;
* here, in nel: equal (``==``), or for ``find_zero`` ``|poly(xs, out)| <= atol``; MBPP+'s special
  oracles (:data:`MBPP_SET_EQUAL`, :data:`MBPP_NOT_NONE`, ``sum_div``, ``surface_Area``,
  ``digit_distance_nums``, ``are_equivalent``); otherwise, when ``atol`` (1e-6 if 0 and the
  expected value is a float or a list/tuple of floats) is set, same type, same length and
  ``numpy.allclose(out, exp, rtol=1e-7, atol=atol)``.

MBPP+ stores some inputs as JSON lists where the function takes tuples, sets or complex
numbers; :func:`mbpp_inputs` restores them per task as EvalPlus' loader does.

``passing_base_tests`` is the base inputs passing; ``passing_plus_tests`` needs base and plus
(NeMo-Skills' ``is_correct`` and ``is_correct-plus``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from nel.errors import ScoringError
from nel.execution import harness
from nel.execution.sandbox import LocalSandbox
from nel.execution.testcases import Program, run_test_cases
from nel.scoring.code import build_humaneval_program, extract_code
from nel.types import VerifyResult

__all__ = ["EvalPlusGrader", "dataset_of", "mbpp_inputs", "outputs_match"]

MIN_TIME_LIMIT = 1.0
TIME_LIMIT_FACTOR = 4.0
TASK_TIMEOUT = 60.0

# MBPP+ functions whose outputs are compared as sets, or only as "not None" (EvalPlus' oracles).
MBPP_SET_EQUAL = frozenset({
    "similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly", "larg_nnum",
    "intersection_array", "find_dissimilar", "Diff",
})  # fmt: skip
MBPP_NOT_NONE = frozenset({"check_str", "text_match_three", "text_starta_endb"})
_REPORT = "__nel_reported"  # the wrapper a not-None task's program answers through


def dataset_of(row: dict[str, Any]) -> str:
    return "mbpp" if str(row.get("task_id", "")).startswith("Mbpp/") else "humaneval"


def _poly(xs: list[float], x: float) -> float:
    return sum(coefficient * math.pow(x, i) for i, coefficient in enumerate(xs))


def _surface_area(base_edge: float, height: float) -> float:
    slant = math.sqrt((base_edge / 2) ** 2 + height**2)
    return round(base_edge**2 + 2 * base_edge * slant)


def _digit_distance(a: int, b: int) -> int:
    width = max(len(str(a)), len(str(b)))
    return sum(abs(int(x) - int(y)) for x, y in zip(str(a).zfill(width), str(b).zfill(width)))


def _is_floats(value: Any) -> bool:
    if isinstance(value, float):
        return True
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, float) for v in value)


def _mbpp_exact(entry: str, args: list[Any], out: Any, expected: Any, atol: float) -> bool:
    if entry in MBPP_NOT_NONE:  # ``out`` is the wrapper's [bool output or None, output is not None]
        was_bool, not_none = out
        return bool(was_bool == expected) if was_bool is not None else bool(expected == not_none)
    if entry in MBPP_SET_EQUAL:
        return bool(set(out) == set(expected))
    if out == expected or entry == "are_equivalent":
        return True
    if entry == "sum_div":
        return bool(out == 0)
    if entry == "surface_Area":
        return bool(abs(out - _surface_area(*args)) <= atol)
    if entry == "digit_distance_nums":
        return bool(out == _digit_distance(*args))
    return False


def outputs_match(
    entry_point: str, args: list[Any], out: Any, expected: Any, atol: float, dataset: str = "humaneval"
) -> bool:
    """EvalPlus' verdict for one input (see the module doc); ``out`` is plain data."""
    try:
        if dataset == "humaneval" and entry_point == "find_zero":
            return bool(abs(_poly(args[0], out)) <= atol)
        exact = _mbpp_exact(entry_point, args, out, expected, atol) if dataset == "mbpp" else out == expected
        if atol == 0 and _is_floats(expected):
            atol = 1e-6
        if exact or atol == 0:
            return bool(exact)
        if type(out) is not type(expected):
            return False
        if isinstance(expected, (list, tuple)) and len(out) != len(expected):
            return False
        return bool(np.allclose(out, expected, rtol=1e-07, atol=atol))
    except Exception:  # what EvalPlus' assert would fail on (a TypeError in allclose, ...)
        return False


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _each(fn: Callable[[Any], Any]) -> Callable[[list[Any]], list[Any]]:
    return lambda inp: [fn(arg) for arg in inp]


def _first(fn: Callable[[Any], Any]) -> Callable[[list[Any]], list[Any]]:
    return lambda inp: [fn(inp[0]), *inp[1:]]


def _inner_tuples(arg: list[Any]) -> list[Any]:
    return [tuple(x) for x in arg]


_MBPP_SHAPES: dict[int, Callable[[list[Any]], Any]] = {
    **{t: _each(tuple) for t in (2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596,
                                 616, 630, 726, 740, 744, 809)},
    **{t: _each(_inner_tuples) for t in (63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614,
                                         780)},
    **{t: _first(_inner_tuples) for t in (75, 413, 444, 753)},
    **{t: (lambda inp: [inp[0], tuple(inp[1])]) for t in (106, 750)},
    115: _first(lambda arg: [set(x) if isinstance(x, list) and x else {} for x in arg]),
    124: lambda inp: [float(inp[0]), complex(inp[1])],
    **{t: _first(tuple) for t in (250, 405, 446, 617, 720, 763, 808)},
    **{t: _each(lambda arg: tuple(_inner_tuples(arg))) for t in (259, 401, 445)},
    278: _first(lambda arg: tuple(tuple(x) if isinstance(x, list) else x for x in arg)),
    307: _first(tuple),
    722: _first(lambda arg: {key: tuple(value) for key, value in arg.items()}),
    252: lambda inp: [complex(inp[0])],
    **{t: _tuples for t in (580, 615, 791)},
}  # fmt: skip


def mbpp_inputs(task_id: str, inputs: list[Any]) -> list[Any]:
    """MBPP+ inputs as the functions take them (tuples, sets, complex numbers where JSON has lists
    or strings), the conversion EvalPlus' ``get_mbpp_plus`` applies per task."""
    shape = _MBPP_SHAPES.get(int(task_id.rsplit("/", 1)[-1]))
    return inputs if shape is None else [list(shape(inp)) for inp in inputs]


def _reported(program: Program, entry: str) -> Program:
    """For MBPP+'s not-None tasks: answer ``[output if it is a bool, output is not None]``, plain
    data where the output itself (a ``re.Match``) is not."""
    wrapper = (
        f"\n\ndef {_REPORT}(*args):\n    out = {entry}(*args)\n"
        "    return [out if type(out) is bool else None, out is not None]\n"
    )
    return Program(program.source + wrapper, program.mode, _REPORT)


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
        program = self._program(row, program_text[: program_text.rindex(f"check({entry})")])
        base = await self._check(program, row, "base", truth["base"], details)
        plus = base and await self._check(program, row, "plus", truth["plus"], details)
        details.update(mode=mode, no_answer=False, base_status="pass" if base else "fail")
        details["plus_status"] = "pass" if plus else "fail"
        scores = {"passing_base_tests": float(base), "passing_plus_tests": float(plus)}
        return VerifyResult(float(base), code, details, scores)

    def _program(self, row: dict[str, Any], source: str) -> Program:
        entry = row["entry_point"]
        program = Program(source, "call", entry)
        if dataset_of(row) == "mbpp" and entry in MBPP_NOT_NONE:
            return _reported(program, entry)
        return program

    def _inputs(self, row: dict[str, Any], kind: str) -> list[Any]:
        inputs = list(row[f"{kind}_input"])
        return mbpp_inputs(str(row["task_id"]), inputs) if dataset_of(row) == "mbpp" else inputs

    async def _ground_truth(self, row: dict[str, Any]) -> dict[str, tuple[list[Any], list[float]]]:
        key = str(row.get("task_id"))
        if key not in self._truth:
            program = self._program(row, row["prompt"] + row["canonical_solution"])
            self._truth[key] = {kind: await self._canonical(program, row, kind) for kind in ("base", "plus")}
            while len(self._truth) > self._keep:
                self._truth.popitem(last=False)
        return self._truth[key]

    async def _canonical(
        self, program: Program, row: dict[str, Any], kind: str
    ) -> tuple[list[Any], list[float]]:
        inputs, values = self._inputs(row, kind), {}
        not_none = program.target == _REPORT  # EvalPlus keeps only "is not None" of these outputs

        def keep(index: int, reply: dict[str, Any]) -> tuple[str, str]:
            value = harness.decode(reply["value"])
            values[index] = value[1] if not_none else value
            return "passed", ""

        run = await run_test_cases(
            program, [{"args": harness.encode(list(args))} for args in inputs], keep, test_timeout=TASK_TIMEOUT,
            overall_timeout=10 * TASK_TIMEOUT, stop_at_first_failure=False, **self._sandbox_args(),
        )  # fmt: skip
        if not run.passed:
            failure = run.setup_error or (run.first_failure.detail if run.first_failure else "incomplete")
            raise ScoringError(
                f"EvalPlus {row.get('task_id')}: the canonical solution fails on its own {kind} inputs: "
                f"{failure[-500:]}"
            )
        return [values[i] for i in range(len(inputs))], [o.time_s for o in run.outcomes]

    async def _check(
        self, program: Program, row: dict[str, Any], kind: str, truth: tuple[list[Any], list[float]],
        details: dict[str, Any],
    ) -> bool:  # fmt: skip
        inputs, (expected, ref_times) = self._inputs(row, kind), truth
        limits = [max(MIN_TIME_LIMIT, TIME_LIMIT_FACTOR * t) for t in ref_times]
        atol, entry, dataset = float(row.get("atol") or 0), row["entry_point"], dataset_of(row)

        def judge(index: int, reply: dict[str, Any]) -> tuple[str, str]:
            try:
                out = harness.decode(reply.get("value"))
            except ValueError as exc:
                return "not_plain_data", str(exc)
            if outputs_match(entry, list(inputs[index]), out, expected[index], atol, dataset):
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
