"""The eval loop end to end: real HTTP, real Parquet, resume, shards, failures."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from nel import ChatSolver, ModelClient, RunConflictError, Shard, StoreError, reduce_run, run_evaluation
from nel.testing.model_server import ModelServer, Rule
from nel.trajectory import SCHEMA
from tests.toy import ToyEnv, answer_right_below


def run(url: str, out: Path, env: ToyEnv | None = None, **kwargs):
    client = ModelClient(url, "toy-model", backoff_base=0.01, max_retries=kwargs.pop("max_retries", 1))
    kwargs.setdefault("progress", "none")
    return asyncio.run(run_evaluation(env or ToyEnv(), ChatSolver(client), output_dir=out, **kwargs))


def test_complete_run_writes_rows_metrics_and_runtime(tmp_path: Path) -> None:
    with ModelServer(answer_fn=answer_right_below(15)) as srv:
        result = run(srv.base_url, tmp_path, n_repeats=2, concurrency=4)
        assert srv.request_count == 40
    assert result.complete and result.done == 40 and result.failed == 0
    table = pq.read_table(result.paths["trajectories"])
    assert table.schema.names == SCHEMA.names
    assert len(table) == 40
    frame = table.to_pandas()
    assert not frame.duplicated(["problem_idx", "repeat"]).any()
    assert json.loads(frame["messages"][0])[-1]["role"] == "user"
    assert set(frame["finish_reason"]) == {"stop"}
    assert (frame["attempts"] == 1).all() and (frame["model_latency_s"] > 0).all()
    toy = result.metrics["toy"]
    assert toy["pass@1"]["correct"] == pytest.approx(75.0)
    assert toy["majority@2"]["correct"] == pytest.approx(75.0)
    assert result.metrics["toy-even"]["pass@1"]["num_entries"] == 10
    assert result.runtime["rows"] == 40 and result.runtime["error_kinds"] == {"none": 40}
    assert json.loads((tmp_path / "metrics.json").read_text()) == result.metrics


def test_trajectories_read_in_pandas_polars_and_duckdb(tmp_path: Path) -> None:
    import duckdb
    import polars as pl

    with ModelServer(answer_fn=answer_right_below(10)) as srv:
        result = run(srv.base_url, tmp_path)
    path = str(result.paths["trajectories"])
    assert len(pd.read_parquet(path)) == 20
    assert pl.read_parquet(path)["correct"].sum() == 10
    count = duckdb.sql(f"select count(*) from '{path}' where correct").fetchall()
    assert count == [(10,)]


def test_rerun_does_only_what_is_missing(tmp_path: Path) -> None:
    with ModelServer(answer_fn=answer_right_below(20)) as srv:
        first = run(srv.base_url, tmp_path, max_problems=5)
        assert srv.request_count == 5
        again = run(srv.base_url, tmp_path, max_problems=5)
        assert srv.request_count == 5
    assert first.complete and again.complete
    assert again.already_done == 5 and again.done == 5
    assert again.metrics == first.metrics


def test_failed_requests_are_recorded_then_redone_on_rerun(tmp_path: Path) -> None:
    broken = [Rule(match="question 3", status=500), Rule(match="question 7", fault="malformed")]
    with ModelServer(rules=broken, answer_fn=answer_right_below(20)) as srv:
        result = run(srv.base_url, tmp_path, max_problems=10)
    assert result.failed == 2 and not result.complete
    assert result.metrics is None and "2 row(s) failed" in result.incomplete
    assert "1 server_error" in result.incomplete and "1 bad_response" in result.incomplete
    parts = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "shards").rglob("part-*.parquet")))
    bad = parts[parts.error_kind != "none"].sort_values("problem_idx")
    assert list(bad.problem_idx) == [3, 7] and list(bad.attempts) == [2, 2]
    assert "HTTP 500" in bad.iloc[0].error
    with ModelServer(answer_fn=answer_right_below(20)) as srv:
        fixed = run(srv.base_url, tmp_path, max_problems=10)
        assert srv.request_count == 2
    assert fixed.complete and fixed.metrics["toy"]["pass@1"]["correct"] == 100.0
    merged = pd.read_parquet(fixed.paths["trajectories"])
    assert len(merged) == 10 and set(merged.error_kind) == {"none"}


def test_scoring_errors_are_rows_not_crashes(tmp_path: Path) -> None:
    with ModelServer(answer_fn=answer_right_below(20)) as srv:
        result = run(srv.base_url, tmp_path, env=ToyEnv(size=6, fail_verify_on=4))
    assert result.failed == 1
    rows = pd.concat(pd.read_parquet(p) for p in (tmp_path / "shards").rglob("part-*.parquet"))
    row = rows[rows.problem_idx == 4].iloc[0]
    assert row.error_kind == "scoring_error" and "scorer exploded" in row.error
    assert row.response == "the answer is 4"


def test_partial_reduce_counts_failures_as_wrong(tmp_path: Path) -> None:
    with ModelServer(rules=[Rule(match="question 0", status=400, message="bad request")],
                     answer_fn=answer_right_below(20)) as srv:  # fmt: skip
        run(srv.base_url, tmp_path, max_problems=4)
    partial = reduce_run(tmp_path, allow_partial=True)
    assert not partial.complete
    assert partial.metrics["toy"]["pass@1"]["correct"] == pytest.approx(75.0)
    assert partial.runtime["error_kinds"] == {"none": 3, "client_error": 1}
    assert "INCOMPLETE" in (tmp_path / "report.txt").read_text()


def test_a_different_config_is_refused_naming_the_difference(tmp_path: Path) -> None:
    with ModelServer() as srv:
        run(srv.base_url, tmp_path, max_problems=2)
        with pytest.raises(RunConflictError, match=r"repeats was 1, now 3.*--overwrite"):
            run(srv.base_url, tmp_path, max_problems=2, n_repeats=3)
        again = run(srv.base_url, tmp_path, max_problems=2, n_repeats=3, overwrite=True)
    assert again.done == 6


def test_corrupt_part_file_is_named(tmp_path: Path) -> None:
    with ModelServer() as srv:
        run(srv.base_url, tmp_path, max_problems=2)
        part = next((tmp_path / "shards").rglob("part-*.parquet"))
        part.write_bytes(b"PAR1 this is not parquet")
        with pytest.raises(StoreError, match=part.name):
            run(srv.base_url, tmp_path, max_problems=2)


def test_three_shards_reduce_to_the_unsharded_metrics(tmp_path: Path) -> None:
    with ModelServer(answer_fn=answer_right_below(13)) as srv:
        whole = run(srv.base_url, tmp_path / "whole", n_repeats=3)
        for idx in range(3):
            part = run(srv.base_url, tmp_path / "sharded", n_repeats=3, shard=Shard(idx, 3))
            assert part.metrics is None and part.total in (18, 21)
    reduced = reduce_run(tmp_path / "sharded")
    assert reduced.complete
    assert _strip_timing(reduced.metrics) == _strip_timing(whole.metrics)
    assert len(pq.read_table(reduced.paths["trajectories"])) == 60


def test_missing_shard_is_named_by_the_reducer(tmp_path: Path) -> None:
    with ModelServer() as srv:
        for idx in (0, 2):
            run(srv.base_url, tmp_path, shard=Shard(idx, 3))
    with pytest.raises(Exception, match=r"shard\(s\) 1 never started"):
        reduce_run(tmp_path)


def _strip_timing(metrics: dict) -> dict:
    return {
        bench: {mode: {k: v for k, v in values.items() if k != "gen_seconds"} for mode, values in modes.items()}
        for bench, modes in metrics.items()
    }
