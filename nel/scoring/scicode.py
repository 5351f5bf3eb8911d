"""SciCode scoring (METRICS_TYPE ``scicode``): each sub-step's tests, targets and verdicts kept in nel.

The response is the SciCode solver's JSON (``{"<problem>.<step>": program}``, see
:mod:`nel.skills.scicode_solver`). Each asked step is graded on its own, as NeMo-Skills'
``evaluation/evaluator/scicode.py`` does: the step's program (dependencies, the earlier steps'
code, this step's code) against the step's test cases, 30 s for the step, a failed test ends
it. What differs is where things happen (:mod:`nel.scoring.scicode_plan`): the program runs in
a sandbox that evaluates the test's inputs and the model's outputs and reports them as plain
data (numpy arrays, sparse matrices and sympy symbols in a tagged form nel rebuilds); the
targets are read from ``test_data.h5`` in nel (SciCode's own reader,
``scicode.parse.parse.process_hdf5_to_tuple``) and every comparison (``np.allclose``,
SciCode's ``cmp_tuple_or_list`` and friends) runs in nel. The model's process never holds a
target.

Scores per problem: ``problem_accuracy`` (every asked step passed), ``subtask_accuracy`` (how
many passed) and ``num_subtasks``; :func:`scicode_metrics` turns them into NeMo-Skills'
metrics (``subtask_accuracy`` over all sub-steps, ``num_problems``, ``num_subtasks``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from nel.errors import ConfigError, ScoringError
from nel.execution import harness
from nel.execution.sandbox import LocalSandbox, SandboxLimits, sandbox_capabilities
from nel.execution.testcases import Program, run_test_cases
from nel.metrics import MetricInputs, Metrics
from nel.scoring.scicode_plan import HELPERS, HOLE, NEL_MODULES, TestPlan, UnsupportedTest, plan_test
from nel.skills.scicode import OUT_OF_CONTEXT, step_key
from nel.types import VerifyResult

__all__ = ["STEP_TIMEOUT", "SciCodeGrader", "from_wire", "scicode_metrics", "test_data_missing", "test_data_path"]

STEP_TIMEOUT = 30.0  # NeMo-Skills' ScicodeEvaluatorConfig.timeout, for one step's program
TEST_DATA_ENV = "NEL_SCICODE_TEST_DATA"
_RUN = "__nel_scicode_run"

# Appended to the step's program: runs one test's sandbox part, reports each hole's value.
_RUNNER = f'''

def __nel_plain(value, depth=0):
    import numpy, sys
    if depth > 60:
        raise TypeError("nested too deep")
    if isinstance(value, (bool, int, float, complex, str, bytes)) or value is None:
        return value
    if isinstance(value, numpy.generic):
        return value.item()
    if isinstance(value, numpy.ndarray):
        flat = [__nel_plain(v, depth + 1) for v in value.ravel().tolist()]
        return {{"$nel": "ndarray", "dtype": value.dtype.str, "shape": list(value.shape), "data": flat}}
    for kind in (list, tuple, set, frozenset):  # subclasses (a namedtuple) travel as the base type
        if isinstance(value, kind):
            return kind(__nel_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return {{__nel_plain(k, depth + 1): __nel_plain(v, depth + 1) for k, v in value.items()}}
    sparse = sys.modules.get("scipy.sparse")
    if sparse is not None and sparse.issparse(value):
        return {{"$nel": "sparse", "format": value.format, "dense": __nel_plain(value.toarray(), depth + 1)}}
    sympy = sys.modules.get("sympy")
    if sympy is not None and isinstance(value, sympy.Basic):
        kind = "symbol" if isinstance(value, sympy.Symbol) else "sympy"
        return {{"$nel": kind, "text": str(value)}}
    raise TypeError(f"{{type(value).__name__}} is not plain data")


def {_RUN}(ops):
    scope, values = globals(), []
    for kind, source in ops:
        if kind == "exec":
            exec(source, scope)
        else:
            values.append(__nel_plain(eval(source, scope)))
    return values
'''


def test_data_path() -> Path:
    """Where ``test_data.h5`` is: ``$NEL_SCICODE_TEST_DATA``, else where SciCode's own downloader
    puts it (``$DATA_CACHE_DIR`` or the ``scicode.data`` package directory)."""
    explicit = os.environ.get(TEST_DATA_ENV)
    if explicit:
        return Path(explicit).expanduser()
    from scicode.parse.parse import H5PY_FILE

    return Path(H5PY_FILE)


def test_data_missing() -> str | None:
    """Why SciCode cannot be graded here (no ``test_data.h5``, or a sandbox without numpy), or None."""
    path = test_data_path()
    if not path.is_file():
        return (
            f"SciCode's numeric test data is not at {path}: download test_data.h5 as SciCode's README says "
            f"and point {TEST_DATA_ENV} at it"
        )
    python = sandbox_capabilities().python
    if not _imports_numpy(python):
        return (
            f"SciCode's programs need numpy, scipy and sympy in the sandbox's interpreter {python}: "
            "install them there (tools/setup.sh does, with Debian's python3-numpy python3-scipy python3-sympy)"
        )
    return None


@functools.cache
def _imports_numpy(python: str) -> bool:
    probe = [python, "-I", "-c", "import numpy, scipy, sympy"]
    return subprocess.run(probe, capture_output=True, check=False, timeout=60).returncode == 0


def _rebuild(tag: str, value: dict[Any, Any]) -> Any:
    if tag == "ndarray":
        kind = np.dtype(str(value["dtype"]))
        shape = tuple(int(n) for n in value["shape"])
        return np.array([from_wire(v) for v in value["data"]], dtype=kind).reshape(shape)
    if tag == "sparse":
        import scipy.sparse

        dense = from_wire(value["dense"])
        build = getattr(scipy.sparse, f"{value['format']}_matrix", scipy.sparse.csr_matrix)
        return build(dense)
    if tag == "symbol":
        import sympy

        return sympy.Symbol(str(value["text"]))
    return str(value["text"])  # another sympy expression: its text, never parsed


def from_wire(value: Any) -> Any:
    """A reported value with the sandbox's tagged numpy/scipy/sympy forms rebuilt (see the module doc)."""
    if type(value) is dict:
        tag = value.get("$nel")
        if isinstance(tag, str) and tag in ("ndarray", "sparse", "symbol", "sympy"):
            return _rebuild(tag, value)
        return {from_wire(k): from_wire(v) for k, v in value.items()}
    if type(value) in (list, tuple, set, frozenset):
        return type(value)(from_wire(v) for v in value)
    return value


def _verdict_scope(target: Any) -> dict[str, Any]:
    import importlib

    from scicode.compare import cmp

    scope: dict[str, Any] = {alias: importlib.import_module(module) for alias, module in NEL_MODULES.items()}
    scope.update({name: getattr(cmp, name) for name in HELPERS})
    scope["target"] = target
    return scope


def _judge(plan: TestPlan, target: Any, holes: list[Any]) -> tuple[str, str]:
    """Run the nel part of one test with the sandbox's values in its holes."""
    scope = _verdict_scope(target)
    scope.update({HOLE.format(i): value for i, value in enumerate(holes)})
    for kind, source in plan.nel:
        try:
            if kind == "exec":
                exec(source, scope)  # the dataset's test code, on plain values; never the model's
            elif not eval(source, scope):
                return "wrong_answer", f"assert {source[:300]}"
        except Exception as exc:  # what the assert in the test would raise on: a failed test
            return "wrong_answer", f"{type(exc).__name__}: {str(exc)[:300]} in {source[:200]}"
    return "passed", ""


class SciCodeGrader:
    """Grades SciCode solver responses against ``test_data.h5``."""

    def __init__(
        self, sandbox: LocalSandbox | None = None, h5_path: Path | None = None, step_timeout: float = STEP_TIMEOUT
    ) -> None:
        self.sandbox = sandbox
        self.step_timeout = step_timeout
        self.h5_path = h5_path or test_data_path()
        if not self.h5_path.is_file():
            raise ConfigError(
                f"SciCode's numeric test data is not at {self.h5_path}: download test_data.h5 as SciCode's "
                f"README says and point {TEST_DATA_ENV} at it"
            )  # (the scoring type says so before a run starts: test_data_missing)

    async def score(self, row: dict[str, Any], response: str | None) -> VerifyResult:
        try:
            programs = json.loads(response or "")
            if not isinstance(programs, dict):
                raise ValueError("not an object")
        except ValueError:
            raise ScoringError("a SciCode response is the SciCode solver's JSON of step programs") from None
        prefilled = row.get("prefilled_steps") or {}
        asked = [i for i in range(len(row["sub_steps"])) if str(i) not in prefilled]
        steps = await asyncio.gather(*[self._step(row, i, programs.get(step_key(row, i))) for i in asked])
        passed = sum(s["status"] == "passed" for s in steps)
        scores = {
            "problem_accuracy": float(passed == len(asked)), "subtask_accuracy": float(passed),
            "num_subtasks": float(len(asked)),
        }  # fmt: skip
        details = {"problem_id": row.get("problem_id"), "steps": steps, "verdict_by": "nel"}
        answered = any(isinstance(p, str) and p != OUT_OF_CONTEXT for p in programs.values())
        return VerifyResult(scores["problem_accuracy"], response if answered else None, details, scores)

    async def _step(self, row: dict[str, Any], index: int, program: Any) -> dict[str, Any]:
        step = row["sub_steps"][index]
        number = str(step["step_number"])
        if not isinstance(program, str) or program == OUT_OF_CONTEXT:
            return {"step": number, "status": "out_of_context" if program == OUT_OF_CONTEXT else "no_code"}
        try:
            plans = [plan_test(test) for test in step["test_cases"]]
        except (UnsupportedTest, SyntaxError) as exc:
            return {"step": number, "status": "unsupported_test", "error": str(exc)[:500]}
        targets = await asyncio.to_thread(self._targets, number, len(plans))
        return {"step": number, **await self._run(program, plans, targets)}

    def _targets(self, step_number: str, count: int) -> list[Any]:
        from scicode.parse.parse import process_hdf5_to_tuple

        try:
            return list(process_hdf5_to_tuple(step_number, count, h5py_file=str(self.h5_path)))
        except (KeyError, FileNotFoundError, OSError) as exc:
            raise ScoringError(f"{self.h5_path} has no targets for SciCode step {step_number}: {exc}") from exc

    async def _run(self, program: str, plans: list[TestPlan], targets: list[Any]) -> dict[str, Any]:
        def judge(index: int, reply: dict[str, Any]) -> tuple[str, str]:
            try:
                holes = [from_wire(v) for v in harness.decode(reply.get("value"))]
            except (ValueError, TypeError, KeyError) as exc:
                return "not_plain_data", str(exc)[:300]
            return _judge(plans[index], targets[index], holes)

        requests = [{"args": harness.encode([[list(op) for op in plan.sandbox]])} for plan in plans]
        run = await run_test_cases(
            Program(program + _RUNNER, "call", _RUN), requests, judge, test_timeout=self.step_timeout,
            overall_timeout=self.step_timeout + 5, setup_timeout=self.step_timeout, **self._sandbox_args(),
        )  # fmt: skip
        if run.passed:
            return {"status": "passed", "tests": len(plans)}
        failure = run.first_failure
        if run.setup_error is not None or failure is None:
            error = run.setup_error or "the step did not finish in time"
            return {"status": "setup_" + (run.setup_status or "timeout"), "error": error[-1500:]}
        return {"status": failure.status, "test": failure.index, "error": failure.detail[-1500:]}

    def _sandbox_args(self) -> dict[str, Any]:
        limits = self.sandbox.limits if self.sandbox is not None else SandboxLimits()
        # numpy/scipy reserve far more address space than they use: give the step room to load them.
        limits = SandboxLimits(**{**limits.__dict__, "memory_mb": max(limits.memory_mb, 4096)})
        return {"limits": limits, "slot": self.sandbox.slot} if self.sandbox else {"limits": limits}


def scicode_metrics(data: MetricInputs, out: Metrics) -> Metrics:
    """NeMo-Skills' SciCodeMetrics: ``subtask_accuracy`` over all sub-steps (the per-problem counts'
    pass@k rescaled by problems / sub-steps), ``num_problems`` and ``num_subtasks``."""
    counts = data.scores.get("num_subtasks")
    total = float(counts[:, 0].sum()) if counts is not None and counts.size else 0.0
    factor = len(counts) / total if counts is not None and total else 0.0
    for mode in out.values():
        for key in [k for k in mode if k.startswith("num_subtasks")]:
            del mode[key]
        for key in ("subtask_accuracy", "subtask_accuracy_std_err"):
            if isinstance(mode.get(key), float):
                mode[key] = float(mode[key]) * factor  # type: ignore[arg-type]
        interval = mode.get("subtask_accuracy_ci95")
        if isinstance(interval, list):
            mode["subtask_accuracy_ci95"] = [float(v) * factor for v in interval]
        if "num_entries" in mode:
            mode["num_problems"] = mode.pop("num_entries")
        mode["num_subtasks"] = int(total)
    return out
