"""What every solver shares: the protocol the loop calls, and the base of nel's own solvers.

A solver owns its model calls (one chat request, a step-by-step conversation, tool calls played
turn by turn); :class:`ModelSolver` holds what they all do the same way: the client, splitting
reasoning from the answer, refusing an answer prefix its conversations cannot end with, the
description that goes into the run's identity, and closing the client.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

from nel.client import ModelClient
from nel.errors import ConfigError
from nel.reasoning import THINK, ReasoningSplit, ReasoningTags, split_reasoning
from nel.types import Completion, SolveResult, Task

__all__ = ["ANSWER_PREFIX_MODES", "ModelSolver", "Solver"]


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


class ModelSolver:
    """Base of a solver that calls one model through ``client``.

    ``reasoning_tags`` (nel.reasoning) split inline thinking from the answer; None turns that
    off. ``answer_prefix`` is one of `ANSWER_PREFIX_MODES`; a subclass whose conversations never
    end with one says why in ``answer_prefix_refused``, and any mode but the default is refused.
    """

    kind: ClassVar[str]
    """The solver's name in the run's identity (and in ``nel.solvers.SOLVERS``)."""
    answer_prefix_refused: ClassVar[str | None] = None

    def __init__(
        self, client: ModelClient, reasoning_tags: ReasoningTags | None = THINK, answer_prefix: str = "text"
    ) -> None:
        if answer_prefix not in ANSWER_PREFIX_MODES:
            raise ValueError(f"answer_prefix must be one of {ANSWER_PREFIX_MODES}, got {answer_prefix!r}")
        if answer_prefix != "text" and self.answer_prefix_refused is not None:
            raise ConfigError(f"{self.answer_prefix_refused}: --answer-prefix does not apply to it")
        self.client = client
        self.reasoning_tags = reasoning_tags
        self.answer_prefix = answer_prefix

    def options(self) -> dict[str, object]:
        """What else about this solver changes results, for :meth:`describe`."""
        return {}

    def describe(self) -> dict[str, object]:
        """What about this solver changes results (part of the run's identity)."""
        described: dict[str, object] = {
            "type": self.kind,
            "model_id": self.client.model,
            "sampling": self.client.sampling,
            **self.options(),
        }
        if self.reasoning_tags != THINK:
            tags = self.reasoning_tags
            described["reasoning_tags"] = tags and [tags.open, tags.close]
        return described

    def split(self, completion: Completion) -> ReasoningSplit:
        """The reply's reasoning and answer, by this solver's tags."""
        return split_reasoning(completion, self.reasoning_tags)

    async def aclose(self) -> None:
        """Release pooled connections; the client reconnects if it is used again."""
        await self.client.aclose()
