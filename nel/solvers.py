"""Solvers turn a seeded task into a response by calling the model.

The solver, not the loop, owns the model call, so multi-turn or tool-using solvers fit
the same loop; every call goes through `ModelClient` and is returned in
``SolveResult.calls`` so the trajectory records all of them.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

from nel.client import ModelClient
from nel.errors import ConfigError
from nel.reasoning import THINK, ReasoningTags, split_reasoning, unfinished_message
from nel.types import Completion, Message, SolveResult, Task


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

    ``reasoning_tags`` (nel.reasoning) split inline thinking from the answer; None turns that off.
    ``answer_prefix`` (one of `ANSWER_PREFIX_MODES`) applies only to conversations whose last
    message is the assistant's; every other task is a plain chat request.
    """

    def __init__(
        self,
        client: ModelClient,
        system_prompt: str | None = None,
        reasoning_tags: ReasoningTags | None = THINK,
        answer_prefix: str = "text",
    ) -> None:
        if answer_prefix not in ANSWER_PREFIX_MODES:
            raise ValueError(f"answer_prefix must be one of {ANSWER_PREFIX_MODES}, got {answer_prefix!r}")
        self.client = client
        self.system_prompt = system_prompt
        self.reasoning_tags = reasoning_tags
        self.answer_prefix = answer_prefix

    def describe(self) -> dict[str, object]:
        """What about this solver changes results (part of the run's identity)."""
        described: dict[str, object] = {
            "type": "chat",
            "model_id": self.client.model,
            "sampling": self.client.sampling,
            "system_prompt": self.system_prompt,
            **({} if self.reasoning_tags == THINK else
               {"reasoning_tags": self.reasoning_tags and [self.reasoning_tags.open, self.reasoning_tags.close]}),
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

    def sample_overrides(self, task: Task) -> dict[str, Any]:
        """Body parameters of this one sample: its own ``seed`` when the run has one, so the
        repeats of a problem are distinct samples, each reproducible (`sample_seed`)."""
        return self.client.sample_overrides((task.problem_idx, task.repeat))

    async def aclose(self) -> None:
        """Release pooled connections; the client reconnects if it is used again."""
        await self.client.aclose()

    async def solve(self, task: Task) -> SolveResult:
        messages = self.build_messages(task)
        sample = (task.problem_idx, task.repeat)
        overrides = self.sample_overrides(task)
        if messages and messages[-1].get("role") == "assistant":
            messages, completion = await self._continue(messages, sample, {**overrides, **self._budget(task)})
        else:
            completion = await self.client.chat(messages, sample=sample, **overrides)
        split = split_reasoning(completion, self.reasoning_tags)
        return SolveResult(
            response=split.answer,
            messages=messages,
            calls=(completion,),
            reasoning_content=split.reasoning,
            unfinished_reasoning=unfinished_message(completion, self.reasoning_tags) if split.unfinished else None,
        )

    def _budget(self, task: Task) -> dict[str, object]:
        """``max_tokens`` from the seed's ``tokens_to_generate`` (RULER's per-task budget, as NeMo-Skills
        sets it), unless the run sets max_tokens itself."""
        limit = task.seed.metadata.get("tokens_to_generate")
        return {"max_tokens": int(limit)} if limit is not None and "max_tokens" not in self.client.sampling else {}

    async def _continue(
        self, messages: tuple[Message, ...], sample: tuple[int, int], overrides: dict[str, Any]
    ) -> tuple[tuple[Message, ...], Completion]:
        """The model continues the final assistant message: (what was sent, the reply). The response
        is the continuation only, without the prefix (as NeMo-Skills scores RULER's generation)."""
        if self.answer_prefix == "chat":
            completion = await self.client.chat(
                messages, sample=sample, continue_final_message=True, add_generation_prompt=False, **overrides
            )
            return messages, completion
        prompt = _text_prompt(messages)
        return ({"role": "user", "content": prompt},), await self.client.complete(prompt, sample=sample, **overrides)


def _text_prompt(messages: tuple[Message, ...]) -> str:
    """A conversation as one completions prompt: the contents joined by blank lines, the final
    (assistant) prefix after one space, so RULER's prompt reads as its base template writes it."""
    *head, prefix = messages
    return "\n\n".join(str(m.get("content") or "") for m in head) + " " + str(prefix.get("content") or "")


# What an environment may ask for (``EvalEnvironment.solver``): a name -> "module:Class", loaded on use.
SOLVERS = {
    "chat": "nel.solvers:ChatSolver",
    "scicode": "nel.skills.scicode_solver:SciCodeSolver",
    "bfcl": "nel.skills.bfcl_solver:BfclSolver",
}


def make_solver(kind: str, client: ModelClient, **options: object) -> Solver:
    """The solver an environment names (``chat`` for one completion per task), built with ``options``."""
    if kind not in SOLVERS:
        raise ConfigError(f"unknown solver {kind!r}; known: {', '.join(SOLVERS)}")
    module, _, name = SOLVERS[kind].partition(":")
    solver: Solver = getattr(importlib.import_module(module), name)(client, **options)
    return solver
