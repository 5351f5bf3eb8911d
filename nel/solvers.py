"""Solvers turn a seeded task into a response by calling the model.

The solver, not the loop, owns the model call, so multi-turn or tool-using solvers fit
the same loop; every call goes through `ModelClient` and is returned in
``SolveResult.calls`` so the trajectory records all of them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from nel.client import ModelClient
from nel.types import Message, SolveResult, Task


@runtime_checkable
class Solver(Protocol):
    """Anything with ``async solve(task) -> SolveResult``; an ``aclose()``, if present, is
    awaited when the run ends."""

    async def solve(self, task: Task) -> SolveResult: ...


ANSWER_PREFIX_MODES = ("text", "chat")
"""How a seeded conversation that ends with a partial assistant message (an answer prefix the
model continues, as RULER's prompts end) is sent: ``text`` as one prompt to ``/completions``,
the prefix appended (also what base models need); ``chat`` as a chat request that continues
the last message (vLLM's ``continue_final_message``). The default is ``text``, as NeMo-Skills
sends RULER."""


class ChatSolver:
    """One chat completion per task: optional system prompt, then the seeded prompt.

    ``answer_prefix`` (one of `ANSWER_PREFIX_MODES`) applies only to conversations whose last
    message is the assistant's; every other task is a plain chat request.
    """

    def __init__(self, client: ModelClient, system_prompt: str | None = None, answer_prefix: str = "text") -> None:
        if answer_prefix not in ANSWER_PREFIX_MODES:
            raise ValueError(f"answer_prefix must be one of {ANSWER_PREFIX_MODES}, got {answer_prefix!r}")
        self.client = client
        self.system_prompt = system_prompt
        self.answer_prefix = answer_prefix

    def describe(self) -> dict[str, object]:
        """What about this solver changes results (part of the run's identity)."""
        described: dict[str, object] = {
            "type": "chat",
            "model_id": self.client.model,
            "sampling": self.client.sampling,
            "system_prompt": self.system_prompt,
        }
        if self.answer_prefix != "text":
            described["answer_prefix"] = self.answer_prefix
        return described

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
        if messages and messages[-1].get("role") == "assistant":
            return await self._continue(messages, self._budget(task))
        completion = await self.client.chat(messages)
        return SolveResult(
            response=completion.content,
            messages=messages,
            calls=(completion,),
            reasoning_content=completion.reasoning_content,
        )

    def _budget(self, task: Task) -> dict[str, object]:
        """``max_tokens`` from the seed's ``tokens_to_generate`` (RULER's per-task budget, as NeMo-Skills
        sets it), unless the run sets max_tokens itself."""
        limit = task.seed.metadata.get("tokens_to_generate")
        return {"max_tokens": int(limit)} if limit is not None and "max_tokens" not in self.client.sampling else {}

    async def _continue(self, messages: tuple[Message, ...], overrides: dict[str, object]) -> SolveResult:
        """The model continues the final assistant message; the response is the continuation only,
        without the prefix (as NeMo-Skills scores RULER's generation)."""
        if self.answer_prefix == "chat":
            completion = await self.client.chat(
                messages, continue_final_message=True, add_generation_prompt=False, **overrides
            )
        else:
            messages = ({"role": "user", "content": _text_prompt(messages)},)
            completion = await self.client.complete(messages[0]["content"], **overrides)
        return SolveResult(
            response=completion.content,
            messages=messages,
            calls=(completion,),
            reasoning_content=completion.reasoning_content,
        )


def _text_prompt(messages: tuple[Message, ...]) -> str:
    """A conversation as one completions prompt: the contents joined by blank lines, the final
    (assistant) prefix after one space, so RULER's prompt reads as its base template writes it."""
    *head, prefix = messages
    return "\n\n".join(str(m.get("content") or "") for m in head) + " " + str(prefix.get("content") or "")
