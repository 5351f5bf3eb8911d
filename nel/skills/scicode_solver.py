"""The SciCode solver: one problem is a chain of requests, one per sub-step (NeMo-Skills' way).

Each sub-step's request carries the earlier steps and the code the model wrote for them
(:func:`nel.skills.scicode.step_fields`), so the steps of one problem run in order; problems
still run concurrently under the eval loop. Steps whose code SciCode ships are not asked.
When a request fails because the conversation no longer fits the model's context, that step
and every later one are marked ``_ran_out_of_context_`` (and score 0), as NeMo-Skills does;
any other failure fails the task.

The response is JSON ``{"<problem_id>.<step>": program}``: for each asked step, the
dependencies, the code of every earlier step and this step's code, the program its tests
run against (NeMo-Skills' ``generation`` dict). Every request is in ``SolveResult.calls``;
``messages`` is the last request sent (it holds all earlier steps).
"""

from __future__ import annotations

import json
from typing import Any

from nel.client import ModelClient
from nel.errors import ConfigError, ModelCallError
from nel.reasoning import THINK, ReasoningTags
from nel.skills.scicode import OUT_OF_CONTEXT, extract_step_code, step_fields, step_key
from nel.solvers.base import ModelSolver
from nel.types import PROBLEM_KEY, PROMPT_KEY, Completion, Message, SolveResult, Task

__all__ = ["SciCodeSolver"]


class SciCodeSolver(ModelSolver):
    """``with_background``: put each step's scientific background in the requests (NeMo-Skills'
    default, ``++with_background=True``)."""

    kind = "scicode"
    answer_prefix_refused = "SciCode's prompts end with no answer prefix"

    def __init__(
        self,
        client: ModelClient,
        with_background: bool = True,
        reasoning_tags: ReasoningTags | None = THINK,
        answer_prefix: str = "text",
    ) -> None:
        super().__init__(client, reasoning_tags, answer_prefix)
        self.with_background = with_background

    def options(self) -> dict[str, object]:
        return {"with_background": self.with_background}

    async def solve(self, task: Task) -> SolveResult:
        row, prompt = task.seed.metadata.get(PROBLEM_KEY), task.seed.metadata.get(PROMPT_KEY)
        if not isinstance(row, dict) or not isinstance(prompt, dict):
            raise ConfigError("the SciCode solver needs a SciCode seed (skills://scicode)")
        steps, prefilled = row["sub_steps"], row.get("prefilled_steps") or {}
        code: list[str] = [""] * len(steps)
        programs: dict[str, str] = {}
        calls: list[Completion] = []
        messages: tuple[Message, ...] = ()
        out_of_context = False
        sample = (task.problem_idx, task.repeat)  # each step's request differs, so each is its own cache entry
        overrides = self.client.sample_overrides(sample)
        for index in range(len(steps)):
            if str(index) in prefilled:
                code[index] = prefilled[str(index)]
                continue
            if out_of_context:
                programs[step_key(row, index)] = OUT_OF_CONTEXT
                continue
            fields = step_fields(row, index, code, self.with_background)
            messages = _messages(prompt, fields)
            try:
                completion = await self.client.chat(messages, sample=sample, **overrides)
            except ModelCallError as exc:
                if exc.kind != "context_length":
                    raise
                out_of_context = True
                programs[step_key(row, index)] = OUT_OF_CONTEXT
                continue
            calls.append(completion)
            code[index] = extract_step_code(self.split(completion).answer)
            earlier = "\n".join(code[:index])
            head = f"{fields['dependencies']}\n{earlier}\n" if earlier else f"{fields['dependencies']}\n"
            programs[step_key(row, index)] = f"{head}\n{code[index]}"
        return SolveResult(
            response=json.dumps(programs), messages=messages, calls=tuple(calls),
            reasoning_content=calls[-1].reasoning_content if calls else None,
        )  # fmt: skip


def _messages(prompt: dict[str, Any], fields: dict[str, str]) -> tuple[Message, ...]:
    user = {"role": "user", "content": str(prompt["user"]).format(**fields)}
    system = prompt.get("system")
    return ({"role": "system", "content": system}, user) if system else (user,)

