"""Reasoning models: the thinking kept apart from the answer, so scorers see only the answer.

Servers hand reasoning back in two ways: a separate ``reasoning_content`` field (vLLM or
SGLang with a reasoning parser, DeepSeek's API), or inline in the content between tags
(``<think>...</think>``), sometimes with the opening tag already in the prompt (the chat
templates of DeepSeek-R1 and Qwen3 end with ``<think>``), so the reply holds only the
closing one. `split_reasoning` handles all three, and names the reply that ended while
still thinking (the opening tag and no closing one, or reasoning and no content at all
after running out of tokens): such a row has no answer, and it is counted as
``unfinished_reasoning`` rather than scored as a silent wrong answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from nel.errors import ConfigError
from nel.types import Completion

DEFAULT_REASONING_TAGS = "<think>,</think>"
"""On by default: a reply without the tags is all answer, so other models are unaffected."""
OFF = ("", "none", "off")


@dataclass(frozen=True)
class ReasoningTags:
    open: str
    close: str


THINK = ReasoningTags("<think>", "</think>")
"""`DEFAULT_REASONING_TAGS` parsed."""


@dataclass(frozen=True)
class ReasoningSplit:
    """The answer (what scorers see), the thinking, and whether the thinking never ended."""

    answer: str
    reasoning: str | None
    unfinished: bool = False


def parse_tags(text: str | None, where: str = "reasoning_tags") -> ReasoningTags | None:
    """``"<think>,</think>"`` as tags; None, "" or "none" turns tag parsing off."""
    if text is None or text.strip().lower() in OFF:
        return None
    parts = text.split(",")
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        raise ConfigError(
            f"{where} {text!r} (--reasoning-tags) must be OPEN,CLOSE, e.g. '<think>,</think>', or 'none'"
        )
    return ReasoningTags(parts[0].strip(), parts[1].strip())


def split_reasoning(completion: Completion, tags: ReasoningTags | None) -> ReasoningSplit:
    """Split one reply into answer and reasoning (rules in docs/scoring.md, "Reasoning models").

    Everything up to the last closing tag is reasoning, as in NeMo-Skills' ``parse_reasoning``;
    unlike it, a reply with no tags at all is an answer, not an empty one.
    """
    content = completion.content
    served = completion.reasoning_content or None
    if tags is not None:
        stripped = content.lstrip()
        opened = stripped.startswith(tags.open)
        body = stripped[len(tags.open) :] if opened else content
        head, closed, tail = body.rpartition(tags.close)
        if closed:
            return ReasoningSplit(tail.strip(), _join(served, head.strip()))
        if opened:
            return ReasoningSplit("", _join(served, body.strip()), unfinished=True)
    if served is not None and not content.strip() and completion.finish_reason == "length":
        return ReasoningSplit("", served, unfinished=True)  # out of tokens in the server-parsed reasoning
    return ReasoningSplit(content, served)


def unfinished_message(completion: Completion, tags: ReasoningTags | None) -> str:
    """The row's error line for an unfinished reply: what ended, and what to change."""
    where = f"inside {tags.open} with no {tags.close}" if tags and completion.content.strip() else "while reasoning"
    return (
        f"the reply ended {where} (finish_reason {completion.finish_reason!r}, "
        f"{completion.completion_tokens if completion.completion_tokens is not None else '?'} completion tokens): "
        "no answer to score; raise --max-tokens"
    )


def _join(first: str | None, second: str) -> str | None:
    parts = [p for p in (first, second) if p]
    return "\n\n".join(parts) if parts else None
