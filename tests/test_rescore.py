"""`nel rescore` on real runs: new scores, zero model requests, the original rows untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nel.testing.model_server import ModelServer
from tests.test_cli import gsm8k_answerer, nel, run_args


def _tree_hash(root: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "rescored" not in p.parts):
        sha.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return sha.hexdigest()


def _break_scores(run_dir: Path) -> None:
    """What an older, buggy grader would have left: every stored row scored wrong (0)."""
    for part in run_dir.glob("shards/*/part-*.parquet"):
        table = pq.read_table(part)
        zeros = {"reward": pa.array([0.0] * len(table)), "correct": pa.array([False] * len(table)),
                 "scores": pa.array([[("symbolic_correct", 0.0)]] * len(table), table.schema.field("scores").type)}  # fmt: skip
        for name, values in zeros.items():
            table = table.set_column(table.column_names.index(name), table.schema.field(name), values)
        pq.write_table(table, part)


def test_rescore_after_a_scorer_change_sends_nothing(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with ModelServer(answer_fn=gsm8k_answerer(gsm8k_data_dir, right_every=2)) as srv:
        assert nel(*run_args(srv, gsm8k_data_dir, run, "--max-problems", "20")).returncode == 0
        _break_scores(run)
        assert nel("reduce", str(run)).returncode == 0
        assert json.loads((run / "metrics.json").read_text())["gsm8k"]["pass@1"]["symbolic_correct"] == 0.0
        before, sent = _tree_hash(run), len(srv.requests)
        done = nel("rescore", str(run))
        assert done.returncode == 0, done.stderr
        assert len(srv.requests) == sent  # not one model call
    assert _tree_hash(run) == before  # the original rows (and its metrics) untouched
    (target,) = (run / "rescored").iterdir()
    assert "10 changed" in done.stdout and str(target) in done.stdout
    assert json.loads((target / "metrics.json").read_text())["gsm8k"]["pass@1"]["symbolic_correct"] == 50.0
    record = json.loads((target / "run.json").read_text())
    assert record["rescored"]["scorer_version"] == target.name and target.name.count("+") == 2
    assert pq.read_schema(target / "trajectories.parquet").metadata[b"nel.scorer_version"] == target.name.encode()
    show = nel("show", str(target))
    assert f"with scorer {target.name}" in show.stdout


def test_rescore_of_a_two_shard_run_shard_by_shard(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    run, out = tmp_path / "run", tmp_path / "rescored"
    with ModelServer(answer_fn=gsm8k_answerer(gsm8k_data_dir, right_every=4)) as srv:
        for idx in range(2):
            shard_env = {"NEL_SHARD_IDX": str(idx), "NEL_TOTAL_SHARDS": "2"}
            assert nel(*run_args(srv, gsm8k_data_dir, run, "--max-problems", "16"), env=shard_env).returncode == 0
        assert nel("reduce", str(run)).returncode == 0
    _break_scores(run)
    for idx in range(2):  # as the tasks of a SLURM array would: each its own shard, then one reduce
        done = nel("rescore", str(run), "--out", str(out), env={"NEL_SHARD_IDX": str(idx), "NEL_TOTAL_SHARDS": "2"})
        assert done.returncode == 0, done.stderr
        assert "when every shard is rescored: nel reduce" in done.stdout
    assert nel("reduce", str(out)).returncode == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["gsm8k"]["pass@1"]["symbolic_correct"] == 25.0 and metrics["gsm8k"]["pass@1"]["num_entries"] == 16
    assert json.loads((run / "metrics.json").read_text())["gsm8k"]["pass@1"]["symbolic_correct"] == 25.0
    again = nel("rescore", str(run), "--out", str(out / "x"))  # all shards in one go gives the same
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "x" / "metrics.json").read_text())["gsm8k"] == metrics["gsm8k"]
