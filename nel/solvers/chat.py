"""The chat solver: one completion per task, the seeded prompt (or conversation) as it is."""

from __future__ import annotations

from typing import Any

from nel.client import ModelClient
from nel.reasoning import THINK, ReasoningTags, unfinished_message
from nel.solvers.base import ModelSolver
from nel.types import Completion, Message, SolveResult, Task

__all__ = ["ChatSolver"]


class ChatSolver(ModelSolver):
    """One chat completion per task: optional system prompt, then the seeded prompt.

    ``answer_prefix`` applies only to conversations whose last message is the assistant's;
    every other task is a plain chat request.
    """

    kind = "chat"

    def __init__(
        self,
        client: ModelClient,
        system_prompt: str | None = None,
        reasoning_tags: ReasoningTags | None = THINK,
        answer_prefix: str = "text",
    ) -> None:
        super().__init__(client, reasoning_tags, answer_prefix)
        self.system_prompt = system_prompt

    def options(self) -> dict[str, object]:
        prefix = {} if self.answer_prefix == "text" else {"answer_prefix": self.answer_prefix}
        return {"system_prompt": self.system_prompt, **prefix}

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

    async def solve(self, task: Task) -> SolveResult:
        messages = self.build_messages(task)
        sample = (task.problem_idx, task.repeat)
        overrides = self.sample_overrides(task)
        if messages and messages[-1].get("role") == "assistant":
            messages, completion = await self._continue(messages, sample, {**overrides, **self._budget(task)})
        else:
            completion = await self.client.chat(messages, sample=sample, **overrides)
        split = self.split(completion)
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
