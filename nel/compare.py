"""`nel compare RUN_A RUN_B`: the paired difference of two runs on the same problems.

Both runs answered the same problems, so the test pairs them: McNemar's exact binomial test
on the discordant problems for 0/1 scores with one repeat, else a paired bootstrap over
problems of the per-problem mean scores. Runs that are not the same problems (benchmark,
problem set, expected answers) are refused, naming the first difference.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from nel.errors import ConfigError, StoreError
from nel.rundir import read_run

BOOTSTRAP_RESAMPLES = 10_000


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: P(X <= min(b, c)) doubled, X ~ Binomial(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    low = min(b, c)
    tail = sum(math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2))
               for k in range(low + 1))  # fmt: skip
    return min(1.0, 2.0 * tail)


def paired_bootstrap(diff: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float, float]:
    """(p-value, ci low, ci high) of the mean of per-problem differences (seeded)."""
    rng = np.random.default_rng(0)
    picks = rng.integers(0, diff.size, size=(resamples, diff.size))
    means = diff[picks].mean(axis=1)
    observed = diff.mean()
    p = float(np.mean(np.abs(means - observed) >= abs(observed) - 1e-12))
    low, high = np.percentile(means, [2.5, 97.5])
    return min(1.0, p), float(low), float(high)


def _rows(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "trajectories.parquet"
    if not path.exists():
        raise StoreError(f"{run_dir} has no trajectories.parquet: reduce it first (nel reduce {run_dir})")
    table = pq.read_table(path, columns=["problem_idx", "repeat", "subset", "expected_answer", "scores"])
    return {"table": table.to_pydict(), "run": read_run(run_dir)}


def _per_problem(data: dict[str, Any]) -> tuple[dict[int, dict[str, list[float]]], dict[int, Any], dict[int, Any]]:
    t = data["table"]
    scores: dict[int, dict[str, list[float]]] = {}
    expected: dict[int, Any] = {}
    subset: dict[int, Any] = {}
    rows: dict[int, int] = {}
    for idx, exp, sub, sc in zip(t["problem_idx"], t["expected_answer"], t["subset"], t["scores"]):
        entry = scores.setdefault(idx, {})
        rows[idx] = rows.get(idx, 0) + 1
        for name, value in dict(sc or []).items():
            entry.setdefault(name, []).append(float(value))
        expected[idx], subset[idx] = exp, sub
    # A row with no scores (context_length, unfinished_reasoning: terminal, no answer) scores 0,
    # as in the metrics; dropped, it would raise its problem's mean over the other repeats.
    names = {name for entry in scores.values() for name in entry}
    for idx, entry in scores.items():
        for name in names:
            values = entry.setdefault(name, [])
            values.extend([0.0] * (rows[idx] - len(values)))
    return scores, expected, subset


def compare_runs(run_a: str | Path, run_b: str | Path) -> dict[str, Any]:
    a, b = _rows(Path(run_a)), _rows(Path(run_b))
    bench_a, bench_b = a["run"]["identity"].get("bench"), b["run"]["identity"].get("bench")
    if bench_a != bench_b:
        raise ConfigError(f"runs are not comparable: benchmark {bench_a!r} in {run_a}, {bench_b!r} in {run_b}")
    sa, ea, subsets = _per_problem(a)
    sb, eb, _ = _per_problem(b)
    if set(sa) != set(sb):
        only = sorted(set(sa) ^ set(sb))
        raise ConfigError(f"runs are not comparable: {len(only)} problem(s) in one run only (e.g. problem {only[0]})")
    for idx in sorted(sa):
        if ea[idx] != eb[idx]:
            raise ConfigError(f"runs are not comparable: problem {idx} expects {ea[idx]!r} in {run_a}, "
                              f"{eb[idx]!r} in {run_b} (a different benchmark version)")  # fmt: skip
    problems = sorted(sa)
    groups: dict[str, list[int]] = {"(all)": problems}
    for idx in problems:
        if subsets[idx] is not None:
            groups.setdefault(str(subsets[idx]), []).append(idx)
    results = []
    names = sorted(set().union(*(sa[i].keys() for i in problems)) if problems else [])
    for group, members in groups.items():
        for name in names:
            va = [sa[i].get(name, [0.0]) for i in members]
            vb = [sb[i].get(name, [0.0]) for i in members]
            results.append(_test(group, name, members, va, vb))
    return {"run_a": str(run_a), "run_b": str(run_b), "benchmark": bench_a, "comparisons": results}


def _test(group: str, name: str, members: list[int], va: list[list[float]], vb: list[list[float]]) -> dict[str, Any]:
    mean_a = np.array([np.mean(v) for v in va])
    mean_b = np.array([np.mean(v) for v in vb])
    one_repeat = all(len(v) == 1 for v in va + vb)
    binary = all(x in (0.0, 1.0) for v in va + vb for x in v)
    out: dict[str, Any] = {"subset": group, "score": name, "problems": len(members),
                           "a": 100 * float(mean_a.mean()), "b": 100 * float(mean_b.mean()),
                           "difference": 100 * float((mean_b - mean_a).mean())}  # fmt: skip
    if one_repeat and binary:
        only_a = [i for i, x, y in zip(members, mean_a, mean_b) if x > y]
        only_b = [i for i, x, y in zip(members, mean_a, mean_b) if y > x]
        out.update(test="mcnemar_exact", p_value=mcnemar_exact(len(only_a), len(only_b)),
                   right_only_in_a=only_a, right_only_in_b=only_b)  # fmt: skip
    else:
        p, low, high = paired_bootstrap(mean_b - mean_a)
        changed = [i for i, x, y in zip(members, mean_a, mean_b) if x != y]
        out.update(test="paired_bootstrap", p_value=p, ci95=[100 * low, 100 * high], changed=changed)
    return out


def compare_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nel compare", description="Paired comparison of two runs.")
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    result = compare_runs(args.run_a, args.run_b)
    if args.format == "json":
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['benchmark']}: B ({args.run_b}) minus A ({args.run_a})")
    for c in result["comparisons"]:
        flips = (f"right only in A: {c['right_only_in_a'][:20]}, only in B: {c['right_only_in_b'][:20]}"
                 if c["test"] == "mcnemar_exact" else f"changed problems: {c['changed'][:20]}")  # fmt: skip
        print(f"{c['subset']} {c['score']}: A {c['a']:.2f}, B {c['b']:.2f}, diff {c['difference']:+.2f} "
              f"(n={c['problems']}, {c['test']} p={c['p_value']:.4g}); {flips}")  # fmt: skip
    return 0
