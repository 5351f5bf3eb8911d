"""SciCode test data for the tests: two dev problems from the installed ``nvidia-scicode`` package and
a small ``test_data.h5`` in SciCode's layout (``<step>/test<i>/var1``), its targets computed here
from the problems' ground-truth code (SciCode's real file is a separate ~1 GB download)."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from nel.scoring.scicode_plan import HOLE, plan_test

PROBLEMS = ("29", "38")  # Gram-Schmidt and reciprocal lattice: numpy only, 3 steps each, fast


def ground_truth_programs(row: dict[str, Any]) -> dict[str, str]:
    """The solver's response for answers that are SciCode's ground truth, step by step."""
    code = [s["ground_truth_code"] for s in row["sub_steps"]]
    deps = row["required_dependencies"]
    out = {}
    for i in range(len(code)):
        head = f"{deps}\n" + ("\n".join(code[:i]) + "\n" if i else "")
        out[f"{row['problem_id']}.{i + 1}"] = f"{head}\n{code[i]}"
    return out


def _target(holes: list[Any], scope: dict[str, Any], assertion: str) -> Any:
    test = ast.parse(assertion, mode="eval").body
    bound = {**scope, **{HOLE.format(i): v for i, v in enumerate(holes)}}
    if isinstance(test, ast.Compare) and ast.unparse(test.comparators[0]) == "target":
        return eval(ast.unparse(test.left), bound)  # noqa: S307 (the dataset's own test code)
    if isinstance(test, ast.BoolOp):  # f(a, target[0]) and f(b, target[1]) ...
        parts = {ast.unparse(c.args[-1]): c.args[0] for c in test.values if isinstance(c, ast.Call)}
        return tuple(eval(ast.unparse(parts[f"target[{i}]"]), bound) for i in range(len(parts)))  # noqa: S307
    assert isinstance(test, ast.Call) and ast.unparse(test.args[-1]) == "target", assertion
    return eval(ast.unparse(test.args[0]), bound)  # noqa: S307


def write_test_data(path: Path, rows: list[dict[str, Any]]) -> Path:
    import h5py
    import numpy as np
    from scicode.parse.parse import save_data_to_hdf5

    with h5py.File(path, "w") as handle:
        for row in rows:
            scope: dict[str, Any] = {}
            exec(row["required_dependencies"], scope)  # noqa: S102 (SciCode's reference solutions)
            for step in row["sub_steps"]:
                exec(step["ground_truth_code"], scope)  # noqa: S102
            for step in row["sub_steps"]:
                local = dict(scope)  # a step's tests share one namespace, as they do when graded
                for i, test in enumerate(step["test_cases"]):
                    plan, holes = plan_test(test), []
                    for kind, source in plan.sandbox:
                        if kind == "exec":
                            exec(source, local)  # noqa: S102
                        else:
                            holes.append(eval(source, local))  # noqa: S307
                    asserts = [source for kind, source in plan.nel if kind == "assert"]
                    target = _target(holes, {"np": np, **local}, asserts[-1]) if asserts else 0  # 78: no target
                    save_data_to_hdf5("var1", target, handle.create_group(f"{step['step_number']}/test{i + 1}"))
    return path


def rows_from_prepared(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["problem_id"] in PROBLEMS]


def sandbox_has_numpy() -> bool:
    """SciCode's programs need numpy/scipy in the sandbox's interpreter (tools/setup.sh installs them)."""
    import subprocess

    from nel.execution.sandbox import sandbox_capabilities

    probe = [sandbox_capabilities().python, "-c", "import numpy, scipy"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0
