"""NeMo-Skills-compatible aggregate metrics, computed on whole arrays at once.

Input is one matrix per score name, shape (problems, repeats), plus the extracted answers
and token counts in the same shape. Output mirrors NeMo-Skills' ``BaseMetrics``:
``pass@k`` (unbiased estimator for 0/1 scores, max-of-first-k otherwise),
``pass@1[avg-of-k]``, ``majority@k`` (k >= 2; ties average the tied answers' scores),
``no_answer``, ``avg_tokens``, ``num_entries``, and ``<score>_statistics`` for k >= 2;
float metrics are percentages. nel adds a standard error and a 95% confidence interval
per score (docs/metrics.md says how each is computed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_MAX_PROBLEMS = 20_000
BOOTSTRAP_RESAMPLES = 1_000


@dataclass(frozen=True)
class MetricInputs:
    """Rows of one benchmark or subset, reshaped to (problems, repeats).

    ``answers`` holds integer codes of the extracted answers (-1: no answer), so equal
    answers compare equal without touching Python strings.
    """

    scores: dict[str, np.ndarray]
    answers: np.ndarray
    completion_tokens: np.ndarray
    reasoning_tokens: np.ndarray
    gen_seconds: float | None = None


Metrics = dict[str, dict[str, object]]
"""mode (``pass@1``, ``majority@4``, ...) -> metric name -> value: one benchmark's or subset's metrics."""

RUN_FIELDS = ("num_entries", "avg_tokens", "gen_seconds")
"""The entries of every mode that describe the rows rather than score them."""


def run_fields(out: Metrics) -> dict[str, object]:
    """The run-describing entries of the generic metrics, for a hook that replaces the modes."""
    return {k: v for k, v in out.get("pass@1", {}).items() if k in RUN_FIELDS}

MetricsHook = Callable[[MetricInputs, Metrics], Metrics]
"""A METRICS_TYPE's extras: the inputs and the generic metrics -> the final metrics.

Most NeMo-Skills metrics types aggregate plain per-score pass@k; a few derive more (or fewer)
keys. The caller passes the hook in (the reducer takes it from the benchmark's scoring type,
``nel.skills.scoring_types``), so this module knows no METRICS_TYPE by name.
"""


def compute_metrics(data: MetricInputs, extra: MetricsHook | None = None) -> Metrics:
    """The generic metrics of ``data``, then ``extra`` applied to them (if given and not empty)."""
    out = _generic_metrics(data)
    return extra(data, out) if extra is not None and out else out


def _generic_metrics(data: MetricInputs) -> Metrics:
    num_problems, n = data.answers.shape
    if num_problems == 0:
        return {}
    no_answer = data.answers < 0
    out: dict[str, dict[str, object]] = {}
    common: dict[str, object] = {"num_entries": num_problems}
    avg_tokens = float(np.mean(data.completion_tokens.mean(axis=1))) if n else 0.0
    if avg_tokens > 0:
        common["avg_tokens"] = int(avg_tokens)
    if data.gen_seconds is not None:
        common["gen_seconds"] = int(data.gen_seconds)

    pending: list[tuple[dict[str, object], str, np.ndarray]] = []  # (mode, score, per problem) for the CIs
    for k in range(1, n + 1):
        out[f"pass@{k}"] = dict(common)
        if k > 1:
            out[f"pass@1[avg-of-{k}]"] = dict(common)
    for name, matrix in data.scores.items():
        binary = bool(np.isin(matrix, (0.0, 1.0)).all())
        for k in range(1, n + 1):
            pending.append((out[f"pass@{k}"], name, _pass_at_k(matrix, k, binary)))
            if k > 1:
                pending.append((out[f"pass@1[avg-of-{k}]"], name, matrix[:, :k].mean(axis=1)))
    for k in range(1, n + 1):
        out[f"pass@{k}"]["no_answer"] = _pct(no_answer[:, :k].all(axis=1))
        if k > 1:
            out[f"pass@1[avg-of-{k}]"]["no_answer"] = _pct(no_answer[:, :k].mean(axis=1))
    for k in range(2, n + 1):
        key = f"majority@{k}"
        out[key] = dict(common)
        for name, matrix in data.scores.items():
            pending.append((out[key], name, _majority_at_k(data.answers[:, :k], matrix[:, :k])))
        out[key]["no_answer"] = _pct(no_answer[:, :k].all(axis=1))
    _put_scores(pending)
    _add_statistics(out, data)
    return out


def _put_scores(pending: list[tuple[dict[str, object], str, np.ndarray]]) -> None:
    """Score, standard error and 95% CI of every (mode, score); one shared set of resamples."""
    intervals = _ci95(np.stack([per_problem for _, _, per_problem in pending]))
    for (target, name, per_problem), (low, high) in zip(pending, intervals):
        target[name] = _pct(per_problem)
        target[f"{name}_std_err"] = 100.0 * _std_err(per_problem)
        target[f"{name}_ci95"] = [100.0 * low, 100.0 * high]


def _pct(per_problem: np.ndarray | np.bool_) -> float:
    return 100.0 * float(np.mean(per_problem))


def _pass_at_k(matrix: np.ndarray, k: int, binary: bool) -> np.ndarray:
    if not binary:
        return matrix[:, :k].max(axis=1)
    n = matrix.shape[1]
    correct = matrix.sum(axis=1).astype(np.int64)
    # 1 - C(n - c, k) / C(n, k): the chance that k draws without replacement hit a correct one.
    table = np.array([1.0 - (math.comb(n - c, k) / math.comb(n, k)) for c in range(n + 1)])
    return table[correct]


def _majority_at_k(answers: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per problem: the mean score of the most frequent (answer, score) pairs.

    Matches NeMo-Skills: pairs with no answer are ignored (all missing → 0), and a tie
    between several pairs averages their scores instead of picking one arbitrarily.
    """
    valid = answers >= 0
    same = (answers[:, :, None] == answers[:, None, :]) & (scores[:, :, None] == scores[:, None, :])
    same &= valid[:, :, None] & valid[:, None, :]
    counts = same.sum(axis=2)  # how often sample j's pair occurs among the first k
    best = counts.max(axis=1, keepdims=True)
    winners = valid & (counts == best) & (best > 0)
    # Each winning pair appears `best` times among the winners; weight 1/best counts it once.
    weight = np.where(winners, 1.0 / np.maximum(best, 1), 0.0)
    distinct = weight.sum(axis=1)
    total = (weight * scores).sum(axis=1)
    return np.divide(total, distinct, out=np.zeros_like(total), where=distinct > 0)


def _std_err(per_problem: np.ndarray) -> float:
    if per_problem.size < 2:
        return 0.0
    return float(np.std(per_problem, ddof=1) / math.sqrt(per_problem.size))


def _ci95(values: np.ndarray) -> list[tuple[float, float]]:
    """Percentile bootstrap over problems for each row of ``values`` (series × problems).

    The resamples are drawn once (seeded, so reruns agree) as per-problem counts and shared
    by every series, so all the means are one matrix product per chunk. Beyond 20k problems
    the normal approximation is indistinguishable and is used instead.
    """
    series, size = values.shape
    means = values.mean(axis=1)
    if size < 2:
        return [(float(m), float(m)) for m in means]
    if size > BOOTSTRAP_MAX_PROBLEMS:
        half = 1.959964 * values.std(axis=1, ddof=1) / math.sqrt(size)
        return [(float(m - h), float(m + h)) for m, h in zip(means, half)]
    rng = np.random.default_rng(0)
    boot = np.empty((series, BOOTSTRAP_RESAMPLES))
    chunk = max(1, 2_000_000 // size)
    for start in range(0, BOOTSTRAP_RESAMPLES, chunk):
        rows = min(start + chunk, BOOTSTRAP_RESAMPLES) - start
        picks = rng.integers(0, size, size=(rows, size)) + np.arange(rows)[:, None] * size
        counts = np.bincount(picks.ravel(), minlength=rows * size).reshape(rows, size)
        boot[:, start : start + rows] = values @ counts.T / size
    low, high = np.percentile(boot, [2.5, 97.5], axis=1)
    return [(float(lo), float(hi)) for lo, hi in zip(low, high)]


def _add_statistics(out: dict[str, dict[str, object]], data: MetricInputs) -> None:
    """NeMo-Skills' ``<score>_statistics`` on pass@1[avg-of-k], k >= 2, as fractions (not %)."""
    n = data.answers.shape[1]
    reasoning = data.reasoning_tokens
    answer = np.where(reasoning > 0, data.completion_tokens - reasoning, data.completion_tokens)
    series = {**data.scores, "reasoning_tokens": reasoning, "answer_tokens": answer}
    for k in range(2, n + 1):
        target = out[f"pass@1[avg-of-{k}]"]
        for name, matrix in series.items():
            head = matrix[:, :k].astype(float)
            run_means = head.mean(axis=0)
            std_runs = float(np.std(run_means, ddof=1))
            target[f"{name}_statistics"] = {
                "avg": float(head.mean(axis=1).mean()),
                "std_dev_across_runs": std_runs,
                "avg_sample_std_dev": float(np.std(head, axis=1, ddof=1).mean()),
                "std_err_across_runs": std_runs / math.sqrt(k),
            }


def drop_no_answer(out: Metrics) -> None:
    """For metrics types whose NeMo-Skills metrics compute no ``no_answer``."""
    for bucket in out.values():
        bucket.pop("no_answer", None)
