"""skills://livecodebench: upstream-format release files over loopback, nel's grader in the
sandbox, and parity with LiveCodeBench's own grader on the same programs."""

from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nel.cli import EXIT_OK, main
from nel.errors import DataError
from nel.scoring.livecodebench import build_program, extract_code, score_livecodebench, stdio_verdict
from nel.skills.catalog import get_benchmark
from nel.skills.data import read_jsonl
from nel.skills.livecodebench import load_private_tests, problem_tests, question_text
from nel.skills.prepare import prepare
from nel.testing.model_server import ModelServer, Rule
from tests import lcb_fixture as fx


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("lcb-upstream")
    fx.write_release(root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, mirror: str) -> Path:
    data = tmp_path_factory.mktemp("data")
    prepare(get_benchmark("livecodebench"), data, mirror=mirror, show_progress=False)
    return data


@pytest.fixture(scope="module")
def rows(data_dir: Path) -> dict[str, dict[str, Any]]:
    return {r["task_id"]: r for r in read_jsonl(data_dir / "livecodebench" / "test_v6_2408_2505.jsonl")}


def score(row: dict[str, Any], code: str, timeout: float = 6.0) -> Any:
    return asyncio.run(score_livecodebench(row, fx.response(code), timeout=timeout))


# --------------------------------------------------------------------------- data


def test_prepare_keeps_the_window_and_nemo_skills_fields(rows: dict[str, dict[str, Any]]) -> None:
    # 2024-08-01 .. 2025-05-31, both ends inclusive, over all six release files
    assert list(rows) == ["abc001_a", "shift-all", "cf2001_b", "new_a"]
    shift = rows["shift-all"]
    assert shift["question"] == question_text("Solve problem shift-all.", fx.SHIFT["starter_code"])
    assert "\t" in shift["question"] and "    " not in shift["question"]
    assert shift["subset_for_metrics"] == shift["difficulty"] == "medium"
    assert shift["release_version"] == "v6"
    inputs, outputs, func = problem_tests(shift)
    assert func == "shiftAll" and len(inputs) == len(outputs) == 5
    assert rows["abc001_a"]["question"].endswith("```python\n# YOUR CODE HERE\n```\n\n")


def test_private_tests_decode_only_as_plain_data(tmp_path: Path) -> None:
    tests = [{"input": "1\n", "output": "2\n", "testtype": "stdin"}]
    assert load_private_tests(fx.encode_private(tests)) == tests
    assert load_private_tests(json.dumps(tests)) == tests
    witness = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (subprocess.call, (["touch", str(witness)],))

    evil = base64.b64encode(zlib.compress(pickle.dumps([Exploit()]))).decode()
    with pytest.raises(DataError, match="plain data"):
        load_private_tests(evil)
    assert not witness.exists()
    with pytest.raises(DataError, match="neither JSON nor"):
        load_private_tests("%%% not base64 %%%")


# --------------------------------------------------------------------------- verdicts


def test_reference_solutions_pass_and_broken_ones_fail(rows: dict[str, dict[str, Any]]) -> None:
    for task, row in rows.items():
        good = score(row, fx.REFERENCE[task])
        assert good.reward == 1.0 and good.scores == {"accuracy": 1.0}, (task, good.details)
        assert good.details["tests_passed"] == good.details["tests"] and good.details["verdict_by"] == "nel"
        bad = score(row, fx.BROKEN[task])
        assert bad.reward == 0.0 and bad.details["status"] == "wrong_answer", (task, bad.details)


def test_time_limit_and_wrong_output_get_their_verdicts(rows: dict[str, dict[str, Any]]) -> None:
    row = rows["abc001_a"]
    # correct on small inputs, quadratic on the last (1.3 MB) one: the limit is per test
    slow = "n = int(input())\nxs = list(map(int, input().split()))\ns = 0\nfor i in range(n):\n    for j in range(n):\n        s += 0\nprint(sum(xs))\n"
    tle = score(row, slow, timeout=1.5)
    assert tle.reward == 0.0
    assert (tle.details["status"], tle.details["error_code"], tle.details["failed_test"]) == (
        "timeout",
        -3,
        11,
    )
    assert tle.details["tests_passed"] == 11
    wrong = score(
        row, "input()\nxs = list(map(int, input().split()))\nprint(sum(xs) if len(xs) < 10 else 0)\n"
    )
    assert (wrong.details["status"], wrong.details["error_code"]) == ("wrong_answer", -2)
    assert wrong.details["tests_passed"] == wrong.details["failed_test"] == 3  # stopped at the first failure
    crash = score(
        rows["shift-all"], "class Solution:\n    def shiftAll(self, nums, k):\n        return nums[10**6]\n"
    )
    assert (crash.details["status"], crash.details["error_code"]) == ("runtime_error", -4)
    assert "IndexError" in crash.details["error"]
    assert score(row, "def broken(:\n").details["status"] == "setup_error"
    assert score(row, "I cannot solve this.").details["status"] == "setup_error"


def test_extraction_and_comparison_units() -> None:
    assert extract_code("<think>```python\nx=1\n```</think>\n```python\nprint(2)\n```") == "print(2)"
    assert extract_code("<think>still thinking") == ""
    assert extract_code("```\nprint(3)\n```") == "print(3)"
    assert stdio_verdict("0.5\n", "0.500000")[0] == "passed"
    assert stdio_verdict("1 2  \n\n", "1 2")[0] == "passed"
    assert stdio_verdict("1\n2", "1 2")[0] == "wrong_answer"
    assert stdio_verdict("0.5000001", "0.5")[0] == "wrong_answer"
    program = build_program("import sys\nn = 1\nif __name__ == '__main__':\n    print(n)\n", None)
    assert program.mode == "stdio" and "def wrapped_function():" in program.source
    assert build_program("class Solution:\n    def f(self): pass", "f").instantiate == "Solution"


# --------------------------------------------------------------------------- parity

SUM_PROGRAMS = [
    fx.REFERENCE["abc001_a"],
    "import sys\nd = sys.stdin.read().split()\nprint(sum(map(int, d[1:])))\n",
    "d = open(0).read().split()\nprint(sum(int(x) for x in d[1:]))\n",
    "import sys\ndef main():\n    sys.stdin.readline()\n    print(sum(map(int, sys.stdin.readline().split())))\n\nif __name__ == '__main__':\n    main()\n",
    "input()\nprint(reduce(add, map(int, input().split()), 0))\n",  # names from LiveCodeBench's prelude
    "input()\nprint(float(sum(map(int, input().split()))))\n",
    "input()\nprint(sum(map(int, input().split())), '  ')\n",
    "input()\nprint(sum(map(int, input().split())))\nexit()\nprint('after exit')\n",
    "import sys\ninput()\nprint(sum(map(int, input().split())))\nsys.exit(1)\n",
    fx.BROKEN["abc001_a"],
    "input()\nprint(sum(map(int, input().split())))\nprint()\nprint(0)\n",
    "import sys\ninput()\nprint(sum(map(int, input().split())), file=sys.stderr)\n",
    "input()\nraise ValueError('no')\n",
    "while True:\n    pass\n",
    "import sys\ndata = sys.stdin.buffer.read()\nprint(sum(map(int, data.split()[1:])))\n",
    "n = 0\ndef read():\n    global n\n    n = int(input())\nread()\nprint(n)\n",
    "def broken(:\n    pass\n",
    "import time\ntime.sleep(0.2)\ninput()\nprint(sum(map(int, input().split())))\n",
    "n = int(input())\nxs = list(map(int, input().split()))\nt = 0\nfor i in range(n):\n    for j in range(n):\n        t += 1\nprint(sum(xs))\n",
    "print(6)\n",
]
SHIFT_PROGRAMS = [
    fx.REFERENCE["shift-all"],
    "class Solution:\n    def shiftAll(self, nums, k):\n        return tuple(x + k for x in nums)\n",
    "class Solution:\n    def shiftAll(self, nums, k):\n        return (x + k for x in nums)\n",
    "class Solution:\n    def shiftAll(self, nums, k):\n        return [float(x + k) for x in nums]\n",
    "def shiftAll(nums, k):\n    return [x + k for x in nums]\n",
    "class Solution:\n    def other(self, nums, k):\n        return nums\n",
    "class Solution:\n    def shiftAll(self, nums, k):\n        for i in range(len(nums)):\n            nums[i] += k\n        return nums\n",
    "class Solution:\n    def shiftAll(self, nums, k):\n        print('debug', nums)\n        return [x + k for x in nums]\n",
    "class Solution:\n    calls = 0\n    def shiftAll(self, nums, k):\n        Solution.calls += 1\n        return [x + k + (Solution.calls > 3) for x in nums]\n",
    fx.BROKEN["shift-all"],
    "class Solution:\n    def shiftAll(self, nums, k):\n        return {x + k for x in nums}\n",
    "class Solution:\n    def shiftAll(self, nums, k):\n        raise RuntimeError('no')\n",
    "class Solution:\n    def shiftAll(self, nums, k):\n        while True:\n            pass\n",
    "class Solution:\n    def shiftAll(self, nums: List[int], k: int) -> List[int]:\n        return list(map(lambda x: x + k, nums))\n",
]
RATIO_PROGRAMS = [
    fx.REFERENCE["cf2001_b"],
    "a, b = map(int, input().split())\nprint(a / b)\n",
    "a, b = map(int, input().split())\nprint(round(a / b, 2))\n",
    "a, b = map(int, input().split())\nprint('%.5f' % (a / b))\n",
    "a, b = map(int, input().split())\nprint(a / b + 1e-9)\n",
    "a, b = map(int, input().split())\nprint(f'{a / b:.6f} ')\nprint()\nprint()\n",
    "a, b = map(int, input().split())\nprint(str(a / b).replace('.', ','))\n",
    "from fractions import Fraction\na, b = map(int, input().split())\nprint(Fraction(a, b))\n",
    fx.BROKEN["cf2001_b"],
    "a, b = map(int, input().split())\nprint(Decimal(a) / Decimal(b))\nfrom decimal import Decimal\n",
]
PARITY = [("abc001_a", SUM_PROGRAMS), ("shift-all", SHIFT_PROGRAMS), ("cf2001_b", RATIO_PROGRAMS)]
PARITY_TIMEOUT = 2


def _input_output(row: dict[str, Any]) -> str:
    inputs, outputs, func = problem_tests(row)
    return json.dumps({"inputs": inputs, "outputs": outputs, "fn_name": func})


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("livecodebench", "tqdm")),
    reason="needs nvidia-livecodebench (tools/setup.sh installs it)",
)
def test_verdicts_equal_livecodebenchs_own_grader(rows: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    cases = [(task, code) for task, programs in PARITY for code in programs]
    batch = [[_input_output(rows[task]), code, PARITY_TIMEOUT] for task, code in cases]
    verdicts = tmp_path / "reference.json"
    subprocess.run(
        [sys.executable, str(Path(__file__).with_name("lcb_reference.py")), str(verdicts)], input=json.dumps(batch),
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    expected = json.loads(verdicts.read_text())

    async def ours() -> list[Any]:
        jobs = [score_livecodebench(rows[t], fx.response(c), timeout=PARITY_TIMEOUT) for t, c in cases]
        return list(await asyncio.gather(*jobs))

    mine = [
        {"passed": r.reward == 1.0, "error_code": r.details.get("error_code")} for r in asyncio.run(ours())
    ]
    differ = [
        (task, code, theirs, got) for (task, code), theirs, got in zip(cases, expected, mine) if theirs != got
    ]
    assert differ == []
    assert len(cases) >= 40
    assert 10 < sum(v["passed"] for v in expected) < len(cases) - 10, "both kinds of verdict are exercised"


# --------------------------------------------------------------------------- end to end


def test_nel_eval_run_end_to_end(tmp_path: Path, data_dir: Path, rows: dict[str, dict[str, Any]]) -> None:
    solved = {"abc001_a", "shift-all"}

    def answer(body: dict[str, Any]) -> Rule:
        text = body["messages"][-1]["content"]
        task = next(t for t in rows if f"Solve problem {t}." in text)
        return Rule(content=fx.response((fx.REFERENCE if task in solved else fx.BROKEN)[task]))

    out = tmp_path / "run"
    with ModelServer(answer_fn=answer) as server:
        code = main(["eval", "run", "--bench", "skills://livecodebench", "--model-url", server.base_url,
                     "--model-id", "m", "--data-dir", str(data_dir), "--output-dir", str(out), "--repeats", "2",
                     "--progress", "none", "--skills-backend", "native"])  # fmt: skip
        first = server.requests[0].body["messages"][-1]["content"]
    assert code == EXIT_OK
    assert first.startswith("Here is a problem for which you need to generate an executable code in python")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["livecodebench"]["pass@1[avg-of-2]"]["accuracy"] == pytest.approx(50.0)
    assert metrics["livecodebench-easy"]["pass@2"]["accuracy"] == pytest.approx(100.0)
    assert metrics["livecodebench-hard"]["pass@2"]["accuracy"] == pytest.approx(0.0)


def test_python_m_nel_launch_end_to_end(
    tmp_path: Path, data_dir: Path, rows: dict[str, dict[str, Any]]
) -> None:
    def answer(body: dict[str, Any]) -> Rule:
        text = body["messages"][-1]["content"]
        task = next(t for t in rows if f"Solve problem {t}." in text)
        return Rule(content=fx.response(fx.REFERENCE[task]))

    root = Path(__file__).resolve().parents[1]
    with ModelServer(answer_fn=answer) as server:
        done = subprocess.run(
            [sys.executable, "-m", "nel.launch", "bench=skills/livecodebench", f"model.url={server.base_url}",
             "model.model_id=m", f"data_dir={data_dir}", f"output_root={tmp_path}", "shards=2",
             "hydra/launcher=basic"],
            capture_output=True, text=True, timeout=300, cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (metrics_file,) = tmp_path.rglob("metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["livecodebench"]["pass@1"]["accuracy"] == pytest.approx(100.0)
    assert {"livecodebench-easy", "livecodebench-medium", "livecodebench-hard"} <= set(metrics)
