"""``bfcl``: BFCL v3/v4 tool calling; per-row ``accuracy`` and BFCL's summary scores.

Single-turn rows get BFCL's AST checker (or its relevance rule) on the reply's tool calls;
multi-turn rows are replayed in the sandbox and checked by nel
(:mod:`nel.skills.bfcl_multi_turn`). The row's response is the BFCL solver's JSON
(:mod:`nel.skills.bfcl_solver`), the catalog names as the benchmark's solver (``solver="bfcl"``).

Metrics: NeMo-Skills' ``bfcl`` metrics are pass@k of ``accuracy`` per category
(``subset_for_metrics``); the whole benchmark's entry also gets BFCL's summary
(``overall_accuracy``, ``overall_non_live``, ``overall_live``, ``overall_multi_turn``), computed
from the categories' accuracies as NeMo-Skills' ``bfcl_score.py`` does. Each row carries its
category's position in :data:`CATEGORY_CODES` as a score (``bfcl_category``) for that purpose;
its own metrics are dropped.
"""

from __future__ import annotations

import asyncio
import json
import os

import numpy as np

from nel.errors import ScoringError
from nel.metrics import MetricInputs, Metrics
from nel.scoring.bfcl import V3_CATEGORIES, V4_CATEGORIES, overall_accuracy, single_turn_verdict
from nel.skills.bfcl_multi_turn import check
from nel.skills.scoring_types.base import InlineScorer, Package, Row, ScoringOptions, ScoringType
from nel.types import VerifyResult

CATEGORY_CODES = tuple(dict.fromkeys(c.name for c in (*V3_CATEGORIES, *V4_CATEGORIES)))


class BfclRowScorer(InlineScorer):
    """Multi-turn checks replay in two sandboxed programs each: at most one check per core at a time."""

    def __init__(self, options: ScoringOptions) -> None:
        super().__init__(options)
        self._replays = asyncio.Semaphore(options.workers or os.cpu_count() or 1)

    async def score(self, response: str, row: Row, *, where: str) -> VerifyResult:
        try:
            reply = json.loads(response)
        except json.JSONDecodeError as exc:
            raise ScoringError(f"{where}: the response is not the BFCL solver's JSON ({exc})") from exc
        if row["bfcl_kind"] == "multi_turn":
            async with self._replays:
                correct, details = await check(row, reply.get("turns", []), json.loads(row["expected_answer"]))
        else:
            correct, details = await asyncio.to_thread(single_turn_verdict, row, reply.get("tool_calls") or [])
        code = float(CATEGORY_CODES.index(row["subset_for_metrics"]))
        return VerifyResult(float(correct), None, details, {"accuracy": float(correct), "bfcl_category": code})


def bfcl_metrics(data: MetricInputs, out: Metrics) -> Metrics:
    codes = data.scores["bfcl_category"][:, 0].astype(int)
    accuracy = data.scores["accuracy"]
    for mode in out.values():
        for key in [k for k in mode if k.startswith("bfcl_category")]:
            del mode[key]
    if len(set(codes.tolist())) < 2:
        return out
    per_category = {CATEGORY_CODES[c]: (float(np.mean(accuracy[codes == c])), int((codes == c).sum()))
                    for c in sorted(set(codes.tolist()))}  # fmt: skip
    n = accuracy.shape[1]
    chosen = out.get(f"pass@1[avg-of-{n}]") if n > 1 else out.get("pass@1")
    if chosen is not None:
        chosen.update(overall_accuracy(per_category))
    return out


BFCL = ScoringType(
    name="bfcl",
    score_names=("accuracy", "bfcl_category"),
    scorer=BfclRowScorer,
    extra_metrics=bfcl_metrics,
    packages=(Package("bfcl", "nvidia-bfcl==26.3 (pip install --no-deps)"), Package("mpmath", "mpmath")),
    sandbox=True,
)
