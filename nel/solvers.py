"""Solvers turn a seeded task into a response by calling the model.

The solver, not the loop, owns the model call, so multi-turn or tool-using solvers fit
the same loop; every call goes through `ModelClient` and is returned in
``SolveResult.calls`` so the trajectory records all of them.
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

from nel.client import ModelClient
from nel.errors import ConfigError
from nel.types import Message, SolveResult, Task


@runtime_checkable
class Solver(Protocol):
    """Anything with ``async solve(task) -> SolveResult``; an ``aclose()``, if present, is
    awaited when the run ends."""

    async def solve(self, task: Task) -> SolveResult: ...


class ChatSolver:
    """One chat completion per task: optional system prompt, then the seeded prompt."""

    def __init__(self, client: ModelClient, system_prompt: str | None = None) -> None:
        self.client = client
        self.system_prompt = system_prompt

    def describe(self) -> dict[str, object]:
        """What about this solver changes results (part of the run's identity)."""
        return {
            "type": "chat",
            "model_id": self.client.model,
            "sampling": self.client.sampling,
            "system_prompt": self.system_prompt,
        }

    def build_messages(self, task: Task) -> tuple[Message, ...]:
        seed = task.seed
        if seed.messages is not None:
            messages = tuple(seed.messages)
            has_system = bool(messages) and messages[0].get("role") == "system"
            if self.system_prompt is not None and not has_system:
                messages = ({"role": "system", "content": self.system_prompt}, *messages)
            return messages
        head: tuple[Message, ...] = ()
        if self.system_prompt is not None:
            head = ({"role": "system", "content": self.system_prompt},)
        return (*head, {"role": "user", "content": seed.prompt})

    async def aclose(self) -> None:
        """Release pooled connections; the client reconnects if it is used again."""
        await self.client.aclose()

    async def solve(self, task: Task) -> SolveResult:
        messages = self.build_messages(task)
        completion = await self.client.chat(messages)
        return SolveResult(
            response=completion.content,
            messages=messages,
            calls=(completion,),
            reasoning_content=completion.reasoning_content,
        )


# What an environment may ask for (``EvalEnvironment.solver``): a name -> "module:Class", loaded on use.
SOLVERS = {"chat": "nel.solvers:ChatSolver", "scicode": "nel.solvers_scicode:SciCodeSolver"}


def make_solver(kind: str, client: ModelClient, **options: object) -> Solver:
    """The solver an environment names (``chat`` for one completion per task), built with ``options``."""
    if kind not in SOLVERS:
        raise ConfigError(f"unknown solver {kind!r}; known: {', '.join(SOLVERS)}")
    module, _, name = SOLVERS[kind].partition(":")
    solver: Solver = getattr(importlib.import_module(module), name)(client, **options)
    return solver
