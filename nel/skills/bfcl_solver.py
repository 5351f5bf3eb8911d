"""The BFCL solver: one request with the row's tools (single-turn), or the whole conversation
played against BFCL's simulated APIs (multi-turn, :mod:`nel.skills.bfcl_multi_turn`).

Its response is JSON the BFCL scorer reads, never free text: single-turn
``{"content": ..., "tool_calls": [...]}`` (the reply's OpenAI tool calls as sent), multi-turn
``{"turns": [[[call, ...] per step] per turn]}`` (each step's calls as BFCL's call strings). The
row comes in the seed (``PROBLEM_KEY``), as for every solver that builds its own requests.
"""

from __future__ import annotations

from typing import Any

import orjson

from nel.errors import ConfigError
from nel.skills.bfcl_multi_turn import play
from nel.solvers.base import ModelSolver
from nel.types import PROBLEM_KEY, Message, SolveResult, Task

Row = dict[str, Any]


class BfclSolver(ModelSolver):
    """``reasoning_tags`` split thinking out of a single-turn reply's content."""

    kind = "bfcl"
    answer_prefix_refused = "BFCL's conversations end with no answer prefix"

    async def solve(self, task: Task) -> SolveResult:
        row = task.seed.metadata.get(PROBLEM_KEY)
        if not isinstance(row, dict) or "bfcl_kind" not in row:
            raise ConfigError("the BFCL solver needs a BFCL seed (skills://bfcl_v3, skills://bfcl_v4)")
        if row["bfcl_kind"] == "multi_turn":
            return await play(self.client, row)
        messages: tuple[Message, ...] = tuple(row["turns"][0])
        sample = (task.problem_idx, task.repeat)
        completion = await self.client.chat(
            messages, tools=row["tools"], sample=sample, **self.client.sample_overrides(sample)
        )
        split = self.split(completion)
        response = {"content": split.answer, "tool_calls": list(completion.tool_calls)}
        return SolveResult(
            response=orjson.dumps(response).decode(),
            messages=messages,
            calls=(completion,),
            reasoning_content=split.reasoning,
        )
