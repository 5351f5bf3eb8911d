"""Code-execution throughput: test cases per second through nel's code core vs the floor.

One LiveCodeBench-style stdin problem with 50 tests (sum of 2,000 integers per test, the
program reads stdin and prints), graded four ways on the same tests, all through the
interpreter the sandbox uses:

  (a) floor: ``subprocess.run([python, prog.py], input=...)`` per test, no sandbox, no checks
  (b) nel's core (:func:`nel.execution.testcases.run_test_cases`, LiveCodeBench semantics):
      one sandbox for the program, the tests fed one by one, outputs compared in nel
  (c) the same with ``workers=2`` (two sandboxes share the tests)
  (d) one sandboxed ``run_code`` per test (what a grader without the core would do)

Every mode must get all 50 verdicts right (the benchmark checks it). Median and best of
``--repeats`` runs.

    .venv/bin/python benchmarks/bench_code.py [--tests 50] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nel.execution.sandbox import run_code, sandbox_capabilities  # noqa: E402
from nel.scoring.livecodebench import score_livecodebench  # noqa: E402

SOLUTION = "import sys\ndata = sys.stdin.read().split()\nprint(sum(map(int, data[1:])))\n"


def make_tests(count: int, seed: int = 7) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    tests = []
    for _ in range(count):
        nums = [rng.randint(-(10**9), 10**9) for _ in range(2000)]
        tests.append((f"{len(nums)}\n{' '.join(map(str, nums))}\n", f"{sum(nums)}\n"))
    return tests


def make_row(tests: list[tuple[str, str]]) -> dict[str, object]:
    cases = [{"input": i, "output": o, "testtype": "stdin"} for i, o in tests]
    return {
        "task_id": "bench",
        "public_test_cases": json.dumps(cases[:3]),
        "private_test_cases": json.dumps(cases[3:]),
    }


def floor(tests: list[tuple[str, str]], python: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        program = Path(tmp, "prog.py")
        program.write_text(SOLUTION)
        ok = 0
        for stdin, expected in tests:
            done = subprocess.run(
                [python, str(program)], input=stdin, capture_output=True, text=True, timeout=10
            )
            ok += done.stdout.strip() == expected.strip()
        return ok


def core(tests: list[tuple[str, str]], workers: int) -> int:
    row = make_row(tests)
    result = asyncio.run(score_livecodebench(row, f"```python\n{SOLUTION}```", workers=workers))
    return int(result.details["tests_passed"])


def per_test_sandbox(tests: list[tuple[str, str]]) -> int:
    async def main() -> int:
        ok = 0
        for stdin, expected in tests:
            result = await run_code(SOLUTION, stdin=stdin, timeout=10)
            ok += result.stdout.strip() == expected.strip()
        return ok

    return asyncio.run(main())


def measure(run: Callable[[], int], expected: int, repeats: int) -> list[float]:
    run()  # warm-up: page cache, interpreter start-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        correct = run()
        elapsed = time.perf_counter() - start
        if correct != expected:
            raise SystemExit(f"wrong verdicts: {correct} of {expected}")
        rates.append(expected / elapsed)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tests", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tests = make_tests(args.tests)
    caps = sandbox_capabilities()
    modes: dict[str, Callable[[], int]] = {
        "(a) floor: subprocess per test": lambda: floor(tests, caps.python),
        "(b) nel core, 1 sandbox": lambda: core(tests, 1),
        "(c) nel core, 2 sandboxes": lambda: core(tests, 2),
        "(d) run_code per test": lambda: per_test_sandbox(tests),
    }
    print(f"{platform.node()} {platform.machine()} python {platform.python_version()}, sandbox {caps.mode}")
    print(f"{args.tests} tests x {args.repeats} repeats; interpreter {caps.python}\n")
    print("| mode | tests/s (median) | best | vs floor |\n|---|---:|---:|---:|")
    floor_rate = None
    for name, run in modes.items():
        rates = measure(run, args.tests, args.repeats)
        median = statistics.median(rates)
        floor_rate = floor_rate or median
        print(f"| {name} | {median:,.0f} | {max(rates):,.0f} | {median / floor_rate:.2f}x |")


if __name__ == "__main__":
    main()
