"""``arena``: Arena-Hard's pairwise judge, run in both answer orders, and its Bradley-Terry score.

Each row costs two judge calls (the model's answer as assistant A with the baseline's as B,
then swapped), sent together. Both calls are kept in the row's details under
``judge_calls`` (prompt, reply, label, tokens, latency, attempts), so the trajectory shows
every judge request. A call that fails after the client's retries makes the row a
``scoring_error`` naming the call's order and error kind; a reply without a usable label is
not an error: the game is invalid and left out of the battles, as NeMo-Skills does.

The row's scores are the model's margin in each game (-2..2) and which games were invalid;
the metrics hook rebuilds the battles from them over all rows (the score is run-level) and
reports NeMo-Skills' ``score``, ``95_CI`` and ``invalid_scores`` instead of pass@k.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nel.client import ModelClient
from nel.errors import ScoringError
from nel.metrics import MetricInputs, Metrics, run_fields
from nel.scoring.arena import arena_score, battles, model_margin, parse_verdict
from nel.skills.judge import ask_judge
from nel.skills.prompts import get_prompt_config, render
from nel.skills.scoring_types.base import InlineScorer, ScoringOptions, ScoringType
from nel.types import Completion, VerifyResult

ORDERS = (("gen-base", True), ("base-gen", False))
"""(NeMo-Skills' name for the game, whether the model's answer is assistant A)."""
JUDGE_CONFIG = "judge/arena"
"""System and user message, so the scorer reads the config itself (the backend passes only the user part)."""
SCORES = ("margin_gen_base", "margin_base_gen", "invalid_games")


def call_record(order: str, prompt: str, completion: Completion, label: str | None) -> dict[str, Any]:
    return {
        "order": order,
        "judge_prompt": prompt,
        "judgement": completion.content,
        "verdict": label,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "latency_s": round(completion.latency_s, 3),
        "attempts": completion.attempts,
    }


class ArenaScorer(InlineScorer):
    def __init__(self, options: ScoringOptions) -> None:
        super().__init__(options)
        assert options.judge is not None  # ScoringType.make_scorer refuses a judged type without one
        self.judge: ModelClient = options.judge
        self.config_name = JUDGE_CONFIG
        self.config = get_prompt_config(JUDGE_CONFIG)

    async def _game(self, row: dict[str, Any], response: str, order: str, model_is_a: bool, where: str):
        baseline = str(row.get("baseline_answer") or "")
        answers = (response, baseline) if model_is_a else (baseline, response)
        prompt = render(
            self.config.user, {**row, "answer_1": answers[0], "answer_2": answers[1]}, where=where
        )
        messages = [
            {"role": "system", "content": self.config.system or ""},
            {"role": "user", "content": prompt},
        ]
        return prompt, await ask_judge(self.judge, messages, where=where, call=f"game {order}")

    async def score(self, response: str, row: dict[str, Any], *, where: str) -> VerifyResult:
        if "baseline_answer" not in row:
            raise ScoringError(f"{where} has no baseline_answer")
        games = await asyncio.gather(*(self._game(row, response, o, a, where) for o, a in ORDERS))
        calls, margins = [], []
        for (order, model_is_a), (prompt, completion) in zip(ORDERS, games):
            label = parse_verdict(completion.content)
            calls.append(call_record(order, prompt, completion, label))
            margins.append(model_margin(label, model_is_a))
        points = battles(margins)
        reward = float(points.mean()) if points.size else 0.0
        scores = {
            "margin_gen_base": float(margins[0] or 0),
            "margin_base_gen": float(margins[1] or 0),
            "invalid_games": float((margins[0] is None) + 2 * (margins[1] is None)),
        }
        details = {
            "judge_model": self.judge.model,
            "judge_prompt_config": self.config_name,
            "judge_calls": calls,
        }
        extracted = "|".join(c["verdict"] or "invalid" for c in calls)
        return VerifyResult(reward, extracted, details, scores)


def arena_metrics(data: MetricInputs, out: Metrics) -> Metrics:
    """All rows' battles (every repeat pooled, problem by problem) -> one ``pass@1`` bucket.

    A row without judgements (the model gave no answer: ``context_length``,
    ``unfinished_reasoning``, or a failed row kept by ``--allow-partial``) loses both its
    games, as pass@k counts such a row 0; ``no_answer`` counts them.
    """
    first, second = data.scores["margin_gen_base"], data.scores["margin_base_gen"]
    invalid = data.scores["invalid_games"].astype(int)
    judged = data.answers >= 0  # a judged row always has its verdicts as the extracted answer
    margins: list[int | None] = []
    for m1, m2, bad, ok in zip(first.ravel(), second.ravel(), invalid.ravel(), judged.ravel()):
        margins.append(None if bad & 1 else int(m1) if ok else -1)
        margins.append(None if bad & 2 else int(m2) if ok else -1)
    common = run_fields(out)
    result = arena_score(battles(margins))
    bucket: dict[str, object] = {
        **common,
        "invalid_scores": int(sum(m is None for m in margins)),
        "no_answer": int((~judged).sum()),
    }
    if result is not None:
        low, high = result.ci95
        bucket.update(score=result.score, **{"95_CI": [low, high]}, battles=result.battles)
        bucket["score_ci95"] = [result.score + low, result.score + high]  # nel's interval key: the bounds
    return {"pass@1": bucket}


ARENA = ScoringType(
    name="arena",
    score_names=SCORES,
    scorer=ArenaScorer,
    extra_metrics=arena_metrics,
    answer_key="generation",
    judged_by_scorer=True,
)
