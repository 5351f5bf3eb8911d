"""BFCL multi-turn: play the conversation against BFCL's simulated APIs, and check it.

Playing follows BFCL's function-calling inference loop: each turn's user messages are added
(a turn that brings held-out functions back says so, in BFCL's words, and the tools grow); the
model is asked again and again within the turn, its tool calls executed and their results sent
back as ``tool`` messages, until it answers without a call (or after BFCL's 20 steps).

The model's calls are Python expressions that BFCL's executor evaluates, so they run in nel's
sandbox (:mod:`nel.skills.bfcl_api_program`), never in nel. The verdict is nel's, with the
semantics of BFCL's multi-turn checker: the model's calls of every turn and the ground truth's
are replayed on fresh instances, in two separate sandboxed runs; after each turn that has a
ground truth, the model must have called something, every API instance must be in the state
the ground truth leaves (public attributes compared), and every ground-truth call's result must
be among the results the model's calls produced so far (as a multiset). A turn whose ground
truth is empty must get no call at all (BFCL's irrelevance check for the miss_* categories).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import io
import json
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from nel.client import ModelClient
from nel.errors import ScoringError
from nel.execution.sandbox import SandboxLimits, SandboxSession
from nel.scoring.bfcl import ADDED_FUNCTIONS_PROMPT, decode_calls
from nel.types import Completion, Message, SolveResult

Row = dict[str, Any]
MAX_STEPS = 20
"""BFCL's MAXIMUM_STEP_LIMIT: a turn ends after this many steps with calls."""
PLAY_TIMEOUT_S = 3600.0
STEP_TIMEOUT_S = 60.0
_PROGRAM = importlib.resources.files("nel.skills").joinpath("bfcl_api_program.py").read_text(encoding="utf-8")
_ZIPS: dict[str, bytes] = {}


def call_strings(tool_calls: list[dict[str, Any]]) -> list[str]:
    """OpenAI tool calls as BFCL's call strings ``name(arg=repr(value),...)``."""
    return [f"{name}({','.join(f'{k}={v!r}' for k, v in args.items())})"
            for call in decode_calls(tool_calls) for name, args in call.items()]  # fmt: skip


_API_MODULES = ("gorilla_file_system", "math_api", "message_api", "posting_api", "ticket_api", "trading_bot",
                "travel_booking", "vehicle_control", "long_context")  # fmt: skip
"""The simulated APIs of BFCL's multi-turn categories (not v4's web search and memory backends)."""
_PACKAGE_FILES = {
    "bfcl": ("eval_checker/multi_turn_eval/multi_turn_utils.py",),
    "bfcl_eval": ("eval_checker/multi_turn_eval/multi_turn_utils.py", "constants/executable_backend_config.py"),
}


def _api_zip(package: str) -> bytes:
    """BFCL's simulated APIs (of ``package``: ``bfcl`` for v3, ``bfcl_eval`` for v4) and mpmath,
    zipped from the installed packages (the sandbox sees no site-packages: they hold the answers)."""
    if package not in _ZIPS:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            root = Path(str(importlib.resources.files(package)))
            api_dir = "eval_checker/multi_turn_eval/func_source_code"
            for sub in ("", "/constants", "/eval_checker", "/eval_checker/multi_turn_eval", f"/{api_dir}"):
                zf.writestr(f"{package}{sub}/__init__.py", "")
            for name in (*_PACKAGE_FILES[package], *(f"{api_dir}/{m}.py" for m in _API_MODULES)):
                zf.write(root / name, f"{package}/{name}")
            spec = importlib.util.find_spec("mpmath")
            if spec is None or spec.origin is None:
                raise ScoringError("BFCL's math API needs mpmath: pip install mpmath")
            mpmath = Path(spec.origin).parent
            for path in sorted(mpmath.rglob("*.py")):
                zf.write(path, f"mpmath/{path.relative_to(mpmath)}")
        _ZIPS[package] = buffer.getvalue()
    return _ZIPS[package]


class ApiRun:
    """One sandboxed run of the entry's API instances: send calls, get results and state."""

    def __init__(self, session: SandboxSession, where: str) -> None:
        self.session = session
        self.where = where

    async def execute(self, calls: list[str]) -> tuple[list[str], dict[str, Any]]:
        if not await self.session.send_line(orjson.dumps({"calls": calls})):
            raise ScoringError(f"{self.where}: the sandboxed API program stopped reading")
        try:
            line = await self.session.read_line(STEP_TIMEOUT_S)
        except TimeoutError as exc:
            raise ScoringError(f"{self.where}: the sandboxed API calls took over {STEP_TIMEOUT_S:g}s") from exc
        if line is None:
            result = await self.session.finish(wait=False)
            raise ScoringError(f"{self.where}: the sandboxed API program died: {result.stderr[-500:]}")
        reply = orjson.loads(line)
        return list(reply["results"]), dict(reply["state"])


@asynccontextmanager
async def api_run(row: Row, instance: str, timeout: float = PLAY_TIMEOUT_S) -> AsyncIterator[ApiRun]:
    category = row["subset_for_metrics"]
    setup = {"initial_config": row["initial_config"], "involved_classes": row["involved_classes"],
             "instance": instance, "id": row["id"], "long_context": "long_context" in category or "composite" in category,
             "package": row.get("bfcl_package", "bfcl")}  # fmt: skip
    files: dict[str, str | bytes] = {"apis.zip": _api_zip(setup["package"]), "setup.json": json.dumps(setup)}
    session = await SandboxSession.start(_PROGRAM, files=files, timeout=timeout,
                                         limits=SandboxLimits(memory_mb=2048), line_limit=2**26)  # fmt: skip
    async with session:
        try:
            yield ApiRun(session, f"BFCL entry {row['id']}")
        finally:
            await session.finish(wait=False)  # closes the pipes while the loop still runs


async def play(client: ModelClient, row: Row) -> SolveResult:
    """Play every turn of a multi-turn entry; the response holds each step's calls. Its sandboxed
    program idles while the model thinks, so it takes no CPU slot: the run's concurrency bounds it."""
    messages: list[Message] = []
    tools = list(row["tools"])
    calls: list[Completion] = []
    turns: list[list[list[str]]] = []
    async with api_run(row, "model") as run:
        for index, turn in enumerate(row["turns"]):
            added = row.get("held_out_tools", {}).get(str(index))
            if added:
                tools += added
                turn = [{"role": "user", "content": ADDED_FUNCTIONS_PROMPT}]
            messages += turn
            steps: list[list[str]] = []
            for _ in range(MAX_STEPS + 1):
                completion = await client.chat(messages, tools=tools)
                calls.append(completion)
                assistant: Message = {"role": "assistant", "content": completion.content or None}
                if completion.tool_calls:
                    assistant["tool_calls"] = list(completion.tool_calls)
                messages.append(assistant)
                try:
                    step = call_strings(list(completion.tool_calls))
                except ValueError:
                    step = []
                steps.append(step)
                if not step:
                    break
                results, _ = await run.execute(step)
                messages += [{"role": "tool", "tool_call_id": call.get("id", ""), "content": result}
                             for call, result in zip(completion.tool_calls, results)]  # fmt: skip
            turns.append(steps)
    return SolveResult(response=orjson.dumps({"turns": turns}).decode(), messages=tuple(messages), calls=tuple(calls))


async def check(row: Row, turns: list[list[list[str]]], expected: list[list[str]]) -> tuple[bool, dict[str, Any]]:
    """The multi-turn verdict (see the module docstring): (correct, evidence)."""
    if len(turns) != len(expected):
        return False, {"error_type": "multi_turn:force_terminated",
                       "error": f"{len(turns)} turns played, the ground truth has {len(expected)}"}  # fmt: skip
    model_results: list[str] = []
    async with api_run(row, "model", timeout=300.0) as model, api_run(row, "ground_truth", timeout=300.0) as reference:
        for index, (steps, truth) in enumerate(zip(turns, expected)):
            model_state: dict[str, Any] = {}
            for step in steps:
                results, model_state = await model.execute(step)
                model_results += results
            truth_results, truth_state = await reference.execute(truth)
            if not truth:
                continue
            if not any(steps):
                return False, {"error_type": "multi_turn:empty_turn_model_response", "turn": index,
                               "error": f"the model called nothing in turn {index}"}  # fmt: skip
            for name, attributes in truth_state.items():
                differences = {k: {"model": model_state.get(name, {}).get(k), "ground_truth": v}
                               for k, v in attributes.items() if model_state.get(name, {}).get(k) != v}  # fmt: skip
                if differences:
                    return False, {"error_type": "multi_turn:instance_state_mismatch", "turn": index,
                                   "class": name, "differences": differences}  # fmt: skip
            left = list(model_results)
            missing = []
            for result in truth_results:
                if result in left:
                    left.remove(result)
                else:
                    missing.append(result)
            if missing:
                return False, {"error_type": "multi_turn:execution_response_mismatch", "turn": index,
                               "missing": missing}  # fmt: skip
    return True, {}
