"""Data classes that cross module boundaries: environment ↔ loop ↔ solver ↔ store.

They are plain frozen dataclasses so that every layer can build and read them without
importing the layer that produced them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]
"""One OpenAI chat message: ``{"role": "user", "content": "..."}``."""


PROBLEM_KEY = "nel.problem"
"""SeedResult metadata of a multi-step problem: the dataset row, for a solver that builds each request."""
PROMPT_KEY = "nel.prompt"
"""SeedResult metadata of a multi-step problem: ``{"user": template, "system": text or None}``."""


@dataclass(frozen=True)
class SeedResult:
    """What an environment hands the solver for one problem.

    Exactly one of ``prompt`` (a user message) or ``messages`` (a full conversation) is set.
    ``metadata`` travels to ``verify`` unchanged; its ``subset_for_metrics`` key (NeMo-Skills'
    name) splits the metrics by subset.
    """

    expected_answer: Any
    prompt: str | None = None
    messages: tuple[Message, ...] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("SeedResult needs exactly one of prompt= or messages=")

    @property
    def subset(self) -> str | None:
        value = self.metadata.get("subset_for_metrics")
        return None if value is None else str(value)


@dataclass(frozen=True)
class VerifyResult:
    """The score of one response.

    ``reward`` is the primary score in [0, 1]. ``scores`` holds every named score the
    benchmark's metrics use (``{"symbolic_correct": 1.0}``, or the four instruction-following
    accuracies); when empty, metrics use ``reward`` under the environment's score name.
    ``details`` is free-form JSON-able evidence (judge prompt and verdict, test output, ...).
    """

    reward: float
    extracted_answer: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return self.reward >= 1.0


@dataclass(frozen=True)
class Completion:
    """One successful chat completion, with what it cost to get it.

    ``latency_s`` spans all attempts including backoff sleeps; ``attempt_latencies_s`` holds
    each HTTP attempt's own duration, so retries stay visible in the trajectory.
    """

    content: str
    reasoning_content: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    latency_s: float = 0.0
    attempt_latencies_s: tuple[float, ...] = ()
    attempts: int = 1
    tool_calls: tuple[dict[str, Any], ...] = ()
    """The reply's ``tool_calls`` (OpenAI function-calling shape), as the server sent them."""
    cached: bool = False
    """Answered from the response cache: no request was sent."""
    top_logprobs: tuple[dict[str, float], ...] = ()
    """Per generated token, its most likely alternatives (token -> logprob), when the request
    asked for ``logprobs``/``top_logprobs`` and the server sent them; empty otherwise."""


@dataclass(frozen=True)
class Task:
    """One unit of work of the eval loop: a (problem, repeat) pair and its seeded prompt."""

    problem_idx: int
    repeat: int
    seed: SeedResult


@dataclass(frozen=True)
class SolveResult:
    """What a solver produced for one task.

    ``messages`` is the conversation as sent to the model (the trajectory keeps it);
    ``calls`` lists every model call the solver made, in order.
    """

    response: str
    messages: tuple[Message, ...]
    calls: tuple[Completion, ...] = ()
    reasoning_content: str | None = None
    unfinished_reasoning: str | None = None
    """Set (to the row's error line) when the reply ended while still reasoning: no answer to score."""
