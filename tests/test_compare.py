"""`nel compare` on real runs: p-values checked against scipy, refusals named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nel.testing.model_server import ModelServer
from tests.test_cli import gsm8k_answerer, nel, run_args


def _run(data_dir: Path, out: Path, right_every: int, *extra: str) -> None:
    with ModelServer(answer_fn=gsm8k_answerer(data_dir, right_every=right_every)) as srv:
        done = nel(*run_args(srv, data_dir, out, "--max-problems", "24", *extra))
    assert done.returncode == 0, done.stderr


def test_mcnemar_matches_scipy_on_real_runs(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    stats = pytest.importorskip("scipy.stats")
    _run(gsm8k_data_dir, tmp_path / "a", 2)
    _run(gsm8k_data_dir, tmp_path / "b", 3)
    done = nel("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--format", "json")
    assert done.returncode == 0, done.stderr
    overall = json.loads(done.stdout)["comparisons"][0]
    only_a = [i for i in range(24) if i % 2 == 0 and i % 3 != 0]
    only_b = [i for i in range(24) if i % 3 == 0 and i % 2 != 0]
    assert overall["right_only_in_a"] == only_a and overall["right_only_in_b"] == only_b
    expected = stats.binomtest(len(only_b), len(only_a) + len(only_b), 0.5).pvalue
    assert overall["p_value"] == pytest.approx(expected, rel=1e-9)


def test_paired_bootstrap_agrees_with_a_paired_t_test() -> None:
    stats = pytest.importorskip("scipy.stats")
    from nel.compare import paired_bootstrap

    diff = np.random.default_rng(1).normal(0.15, 1.0, 400)
    p, low, high = paired_bootstrap(diff)
    assert p == pytest.approx(stats.ttest_1samp(diff, 0.0).pvalue, abs=0.01)
    half = 1.96 * diff.std(ddof=1) / np.sqrt(diff.size)
    assert low == pytest.approx(diff.mean() - half, abs=0.01) and high == pytest.approx(diff.mean() + half, abs=0.01)


def test_different_problem_sets_are_refused(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    _run(gsm8k_data_dir, tmp_path / "a", 2)
    with ModelServer(answer_fn=gsm8k_answerer(gsm8k_data_dir)) as srv:
        assert nel(*run_args(srv, gsm8k_data_dir, tmp_path / "b", "--max-problems", "20")).returncode == 0
    done = nel("compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert done.returncode == 2 and "not comparable: 4 problem(s) in one run only" in done.stderr
