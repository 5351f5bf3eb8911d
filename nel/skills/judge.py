"""LLM-judge scoring: a second model grades each response with the benchmark's judge prompt.

Used by judge-graded benchmarks (SimpleQA, HLE). The judge prompt is NeMo-Skills' judge
config for the benchmark (``judge/simpleqa``, ``judge/hle``) filled from the row plus
``generation`` (the response), so the judge sees what ``ns eval``'s judge sees. The filled
prompt, the judge's reply and the parsed verdict go into ``VerifyResult.details``.

A judge call that fails after the client's retries raises :class:`~nel.errors.ScoringError`:
the loop records the row as ``scoring_error``, never as a wrong answer. An answer the judge
gave but nobody can parse is not an error: NeMo-Skills counts it (SimpleQA: not attempted,
HLE: incorrect), and so does nel, with ``verdict_parsed: false`` in the details.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from nel.client import ModelClient
from nel.errors import ModelCallError, ScoringError
from nel.skills.prompts import render
from nel.types import Completion, Message, VerifyResult

Verdict = Callable[[str, str], VerifyResult]
"""(judge reply, response) -> the row's VerifyResult."""


async def ask_judge(
    client: ModelClient, prompt: str | Sequence[Message], *, where: str, call: str = "", **overrides: Any
) -> Completion:
    """One judge call (a prompt is one user message); a failure after the client's retries is a
    ScoringError naming the judge, the row and, for a row with several calls, which one (``call``)."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    try:
        return await client.chat(messages, **overrides)
    except ModelCallError as exc:
        raise judge_failed(client, exc, where, call) from exc


def judge_failed(client: ModelClient, exc: ModelCallError, where: str, call: str = "") -> ScoringError:
    """The row's scoring error for a judge call that failed for good."""
    which = f", {call}" if call else ""
    return ScoringError(
        f"judge {client.model!r} at {client.base_url} failed for {where}{which} "
        f"({exc.kind} after {exc.attempts} attempt(s)): {exc}"
    )


def judge_details(
    client: ModelClient, prompt_config: str, prompt: str, completion: Completion
) -> dict[str, Any]:
    """What the row's scoring details record about the judge call."""
    return {
        "judge_model": client.model,
        "judge_prompt_config": prompt_config,
        "judge_prompt": prompt,
        "judge_completion_tokens": completion.completion_tokens,
        "judge_latency_s": round(completion.latency_s, 3),
    }


class JudgeScorer:
    """Grades responses with ``client`` using ``template`` and the scoring type's ``verdict``."""

    def __init__(self, client: ModelClient, template: str, verdict: Verdict, prompt_config: str) -> None:
        self.client = client
        self.template = template
        self.verdict = verdict
        self.prompt_config = prompt_config

    async def score(self, response: str, row: dict[str, Any], *, where: str) -> VerifyResult:
        prompt = render(self.template, {**row, "generation": response}, where=where)
        completion = await ask_judge(self.client, prompt, where=where)
        result = self.verdict(completion.content, response)
        details = {**result.details, **judge_details(self.client, self.prompt_config, prompt, completion)}
        return VerifyResult(result.reward, result.extracted_answer, details, result.scores)

    async def aclose(self) -> None:
        """The judge client belongs to whoever built it (the runner), not to the scorer."""
