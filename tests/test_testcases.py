"""The code core (nel.execution.testcases) and its wire format, on real sandboxes."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from nel.execution import harness
from nel.execution.testcases import CaseResults, Program, run_test_cases


def equal_to(expected: list[Any]) -> Any:
    def judge(index: int, reply: dict[str, Any]) -> tuple[str, str]:
        value = harness.decode(reply["value"]) if "value" in reply else reply.get("stdout")
        return ("passed", "") if value == expected[index] else ("wrong_answer", f"{value!r}")

    return judge


def run(program: Program, requests: list[dict[str, Any]], expected: list[Any], **kw: Any) -> CaseResults:
    options = {"test_timeout": 5.0, "overall_timeout": 60.0, **kw}
    return asyncio.run(run_test_cases(program, requests, equal_to(expected), **options))


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -7, 2**70, 10**5000, 1.5, float("inf"), "sé\udc80", [1, [2]], (1, (2,)), {1: "a", (2, 3): None},
     {"$tuple": 1}, {3, 4}, frozenset({5}), b"\x00\xff", 2 - 1j],
    ids=lambda value: type(value).__name__,
)  # fmt: skip
def test_wire_format_round_trips_exactly(value: Any) -> None:
    back = harness.decode(json.loads(harness.dumps({"v": harness.encode(value)}))["v"])
    assert back == value and type(back) is type(value)


def test_wire_format_refuses_objects_and_reads_subclasses_by_base_value() -> None:
    class Weird(int):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = int.__hash__

    assert harness.encode(Weird(3)) == 3
    with pytest.raises(harness.NotPlainData):
        harness.encode(object())
    with pytest.raises(ValueError):
        harness.decode({"$eval": "1"})


SQUARE = Program("def f(x):\n    return x * x\n", "call", "f")


def test_call_mode_many_cases_and_a_huge_integer() -> None:
    requests = [{"args": harness.encode([x])} for x in [*range(30), 10**4500]]
    result = run(SQUARE, requests, [x * x for x in [*range(30), 10**4500]])
    assert result.passed and len(result.outcomes) == 31


def test_first_failure_is_the_lowest_failing_case_with_any_number_of_workers() -> None:
    wrong_at = {7, 12, 25}
    program = Program(
        f"import time\ndef f(x):\n    time.sleep(0.01)\n    return -1 if x in {wrong_at} else x\n",
        "call",
        "f",
    )
    requests = [{"args": [x]} for x in range(40)]
    for workers in (1, 3):
        result = run(program, requests, list(range(40)), workers=workers)
        assert result.first_failure is not None and result.first_failure.index == 7, workers
        assert [o.index for o in result.outcomes] == list(range(8)), "nothing after the first failure is kept"
    everything = run(program, requests, list(range(40)), stop_at_first_failure=False, workers=2)
    assert {o.index for o in everything.outcomes if not o.passed} == wrong_at


def test_per_test_and_overall_time_limits_are_nels() -> None:
    slow = Program("import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ndef f(x):\n    time.sleep(x)\n    return x\n", "call", "f")  # fmt: skip
    start = time.monotonic()
    per_test = run(slow, [{"args": [0]}, {"args": [3]}], [0, 3], test_timeout=0.5)
    assert [o.status for o in per_test.outcomes] == ["passed", "timeout"]
    overall = run(slow, [{"args": [0.4]}] * 10, [0.4] * 10, test_timeout=5.0, overall_timeout=1.5)
    assert not overall.passed and overall.first_failure is not None
    assert overall.first_failure.status == "timeout" and len(overall.outcomes) <= 5
    assert time.monotonic() - start < 15


def test_stdio_mode_large_input_and_setup_failures() -> None:
    echo_len = Program("import sys\ndef main():\n    print(len(sys.stdin.read()))\n", "stdio", "main")
    big = "x" * (20 * 1024 * 1024)
    assert run(echo_len, [{"input": big}], [f"{len(big)}\n"]).passed
    looping = run(
        Program("while True:\n    pass\n", "stdio", "main"), [{"input": ""}], [""], setup_timeout=0.5
    )
    assert looping.setup_status == "timeout" and not looping.passed
    missing = run(Program("x = 1\n", "call", "f"), [{"args": []}], [None])
    assert missing.setup_status == "error" and "KeyError" in (missing.setup_error or "")
