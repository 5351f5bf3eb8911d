"""A small LiveCodeBench release in the upstream format (``code_generation_lite`` files), with
reference solutions, for tests and the code benchmark. Problems are made up here; the layout
(fields, JSON strings, private tests as base64 + zlib + pickle of JSON) is upstream's."""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from pathlib import Path
from typing import Any

from nel.skills.livecodebench import RELEASE_FILES


def encode_private(tests: list[dict[str, str]]) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode("ascii")


def _tests(pairs: list[tuple[str, str]], kind: str) -> list[dict[str, str]]:
    return [{"input": i, "output": o, "testtype": kind} for i, o in pairs]


def problem(
    qid: str, date: str, difficulty: str, pairs: list[tuple[str, str]], *, func: str | None = None,
    starter: str = "", public: int = 1, plain_private: bool = False,
) -> dict[str, Any]:  # fmt: skip
    kind = "functional" if func else "stdin"
    tests = _tests(pairs, kind)
    private = json.dumps(tests[public:]) if plain_private else encode_private(tests[public:])
    return {
        "question_title": f"Problem {qid}",
        "question_content": f"Solve problem {qid}.",
        "platform": "leetcode" if func else "atcoder",
        "question_id": qid,
        "contest_id": "c1",
        "contest_date": f"{date}T00:00:00",
        "starter_code": starter,
        "difficulty": difficulty,
        "public_test_cases": json.dumps(tests[:public]),
        "private_test_cases": private,
        "metadata": json.dumps({"func_name": func} if func else {}),
    }


def _sum_cases(count: int) -> list[tuple[str, str]]:
    cases = [("3\n1 2 3\n", "6\n"), ("1\n-5\n", "-5\n")]
    for n in range(3, count):
        nums = [(n * 7919 + i * 104729) % 2001 - 1000 for i in range(n * 3)]
        cases.append((f"{len(nums)}\n{' '.join(map(str, nums))}\n", f"{sum(nums)}\n"))
    big = list(range(-100_000, 100_000, 3))
    cases.append((f"{len(big)}\n{' '.join(map(str, big))}\n", f"{sum(big)}\n"))  # ~1.3 MB of input
    return cases


SUM = problem("abc001_a", "2024-09-10", "easy", _sum_cases(12), public=2)
SHIFT = problem(
    "shift-all", "2025-01-05", "medium",
    [(json.dumps(nums) + "\n" + str(k), json.dumps([x + k for x in nums]))
     for nums, k in [([1, 2, 3], 2), ([], 5), ([-1], 1), ([10, 20], -10), (list(range(50)), 7)]],
    func="shiftAll", starter="class Solution:\n    def shiftAll(self, nums: List[int], k: int) -> List[int]:\n        ",
)  # fmt: skip
RATIO = problem(
    "cf2001_b", "2025-04-01", "hard",
    [("1 2\n", "0.500000\n"), ("3 4\n", "0.750000\n"), ("10 4\n", "2.500000\n")], plain_private=True,
)  # fmt: skip
OUTSIDE_BEFORE = problem("old_a", "2024-07-15", "easy", [("1\n", "1\n")])
INSIDE_LAST = problem("new_a", "2025-05-31", "medium", [("2\n", "4\n"), ("5\n", "10\n")])
OUTSIDE_AFTER = problem("newer_a", "2025-06-01", "hard", [("1\n", "1\n")])

REFERENCE = {
    "abc001_a": "n = int(input())\nprint(sum(map(int, input().split())))\n",
    "shift-all": "class Solution:\n    def shiftAll(self, nums, k):\n        return [x + k for x in nums]\n",
    "cf2001_b": "a, b = map(int, input().split())\nprint(f'{a / b:.6f}')\n",
    "new_a": "import sys\nprint(2 * int(sys.stdin.read()))\n",
}
BROKEN = {
    "abc001_a": "n = int(input())\nprint(sum(map(int, input().split())) + 1)\n",
    "shift-all": "class Solution:\n    def shiftAll(self, nums, k):\n        return [x - k for x in nums]\n",
    "cf2001_b": "a, b = map(int, input().split())\nprint(a // b)\n",
    "new_a": "print(int(input()) ** 2)\n",
}


def write_release(root: Path) -> Path:
    """``root/livecodebench/test*.jsonl``: the problems spread over the release files."""
    folder = root / "livecodebench"
    folder.mkdir(parents=True, exist_ok=True)
    placement = {
        "test.jsonl": [OUTSIDE_BEFORE, SUM],
        "test5.jsonl": [SHIFT],
        "test6.jsonl": [RATIO, INSIDE_LAST, OUTSIDE_AFTER],
    }
    for name in RELEASE_FILES["v6"]:
        rows = placement.get(name, [])
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def response(code: str) -> str:
    return f"Here is my solution.\n\n```python\n{code}```\n\nIt reads the input and prints the answer."
