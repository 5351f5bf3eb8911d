"""The BFCL solver: one request with the row's tools (single-turn), or the whole conversation
played against BFCL's simulated APIs (multi-turn, :mod:`nel.skills.bfcl_multi_turn`).

Its response is JSON the BFCL scorer reads, never free text: single-turn
``{"content": ..., "tool_calls": [...]}`` (the reply's OpenAI tool calls as sent), multi-turn
``{"turns": [[[call, ...] per step] per turn]}`` (each step's calls as BFCL's call strings). The
solver is built by the environment, so it reads the row the seed names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from nel.client import ModelClient
from nel.skills.bfcl_multi_turn import play
from nel.types import Message, SolveResult, Task

Row = dict[str, Any]
ROW_KEY = "nel.row"


class BfclSolver:
    def __init__(self, client: ModelClient, row_of: Callable[[int], Row]) -> None:
        self.client = client
        self.row_of = row_of

    def describe(self) -> dict[str, object]:
        return {"type": "bfcl", "model_id": self.client.model, "sampling": self.client.sampling}

    async def aclose(self) -> None:
        await self.client.aclose()

    async def solve(self, task: Task) -> SolveResult:
        row = self.row_of(int(task.seed.metadata[ROW_KEY]))
        if row["bfcl_kind"] == "multi_turn":
            return await play(self.client, row)
        messages: tuple[Message, ...] = tuple(row["turns"][0])
        completion = await self.client.chat(messages, tools=row["tools"])
        response = {"content": completion.content, "tool_calls": list(completion.tool_calls)}
        return SolveResult(
            response=orjson.dumps(response).decode(),
            messages=messages,
            calls=(completion,),
            reasoning_content=completion.reasoning_content,
        )
