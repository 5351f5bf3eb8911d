"""The trajectory store on real files: schema versions, the journal, crash leftovers, identity."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nel import ChatSolver, ModelClient, RunConflictError, StoreError, reduce_run, run_evaluation
from nel.rundir import RunDir, ShardDir, write_json_atomic
from nel.store import ShardWriter, finished_keys, read_journal, read_part, recover, row_sources
from nel.testing.model_server import ModelServer
from nel.trajectory import COLUMNS, SCHEMA, SCHEMA_VERSION, TrajectoryRow
from tests.toy import ToyEnv, answer_right_below


def run(url: str, out: Path, **kwargs):
    client = ModelClient(url, "toy-model", backoff_base=0.01, max_retries=1)
    return asyncio.run(run_evaluation(ToyEnv(), ChatSolver(client), output_dir=out, progress="none", **kwargs))


def _rewrite_metadata(path: Path, **changes: str | None) -> None:
    table = pq.read_table(path)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    for key, value in changes.items():
        meta.pop(key, None) if value is None else meta.__setitem__(key, value)
    pq.write_table(table.replace_schema_metadata(meta), path)


def _row(idx: int, run_id: str = "r1", kind: str = "none") -> TrajectoryRow:
    return TrajectoryRow(run_id=run_id, benchmark="toy", problem_idx=idx, repeat=0, response=f"answer {idx}",
                         scores={"correct": 1.0}, attempt_latencies_s=[0.1], error_kind=kind,
                         started_at=1.7e9 + idx, finished_at=1.7e9 + idx + 0.5)  # fmt: skip


def test_row_schema_is_the_documented_one() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "output.md").read_text()
    assert f"schema version {SCHEMA_VERSION}" in doc
    for name in COLUMNS:
        assert f"`{name}`" in doc, name
    assert SCHEMA.field("started_at").type == pa.timestamp("us", tz="UTC")


def test_a_version_1_part_is_read_and_resumed_without_redoing_rows(tmp_path: Path) -> None:
    with ModelServer(answer_fn=answer_right_below(20)) as srv:
        first = run(srv.base_url, tmp_path, max_problems=6)
        (part,) = RunDir(tmp_path).row_files()
        # What nel wrote before version 2: the same columns, version 1, no data digest.
        _rewrite_metadata(part, **{"nel.schema_version": "1", "nel.data": None})
        assert pq.read_schema(part).metadata[b"nel.schema_version"] == b"1"
        again = run(srv.base_url, tmp_path, max_problems=6)
        assert srv.request_count == 6
    assert again.already_done == 6 and again.metrics == first.metrics
    merged = pq.read_schema(again.paths["trajectories"]).metadata
    assert merged[b"nel.schema_version"] == str(SCHEMA_VERSION).encode()


def test_a_version_2_part_without_the_new_columns_is_read_and_merged_with_new_rows(tmp_path: Path) -> None:
    with ModelServer(answer_fn=answer_right_below(20)) as srv:
        run(srv.base_url, tmp_path, max_problems=6)
        (part,) = RunDir(tmp_path).row_files()
        # What nel wrote before version 3 (no tool_calls, no cached_calls), holding 3 of the 6 rows.
        old = pq.read_table(part).drop_columns(["tool_calls", "cached_calls"]).slice(0, 3)
        meta = {**old.schema.metadata, b"nel.schema_version": b"2"}
        pq.write_table(old.replace_schema_metadata(meta), part)
        again = run(srv.base_url, tmp_path, max_problems=6)
        assert srv.request_count == 9  # the old part's 3 rows kept, 3 redone
    merged = pq.read_table(again.paths["trajectories"])
    assert merged.schema.metadata[b"nel.schema_version"] == str(SCHEMA_VERSION).encode()
    assert merged.column_names == list(COLUMNS)
    by_idx = dict(zip(merged.column("problem_idx").to_pylist(), merged.column("cached_calls").to_pylist()))
    assert by_idx == {0: None, 1: None, 2: None, 3: 0, 4: 0, 5: 0}
    assert read_part(part, ["problem_idx", "tool_calls"]).column_names == ["problem_idx", "tool_calls"]


def test_a_newer_version_is_refused_naming_the_file_and_both_versions(tmp_path: Path) -> None:
    with ModelServer() as srv:
        run(srv.base_url, tmp_path, max_problems=2)
        (part,) = RunDir(tmp_path).row_files()
        _rewrite_metadata(part, **{"nel.schema_version": str(SCHEMA_VERSION + 1)})
        pattern = rf"{part}.*version {SCHEMA_VERSION + 1}.*up to {SCHEMA_VERSION}"
        with pytest.raises(StoreError, match=pattern):
            run(srv.base_url, tmp_path, max_problems=2)
        with pytest.raises(StoreError, match=pattern):
            reduce_run(tmp_path)


def test_journal_holds_every_row_until_its_part_is_written(tmp_path: Path) -> None:
    shard = ShardDir(tmp_path)
    writer = ShardWriter(shard, metadata={"nel.run_id": "r1"}, flush_rows=100)
    for idx in range(3):
        writer.append(_row(idx))
    (journal,) = shard.journals()
    assert len(read_journal(journal)) == 3 and not shard.parts()  # a SIGKILL now loses nothing
    part = writer.flush()
    assert part is not None and shard.parts() == [part]
    assert journal not in shard.journals()  # compacted: the rows live in the part only
    writer.append(_row(3))
    writer.close()
    assert not shard.journals()
    table = pa.concat_tables(read_part(p) for p in shard.parts())
    assert sorted(table.column("problem_idx").to_pylist()) == [0, 1, 2, 3]
    assert table.column("scores").to_pylist()[0] == [("correct", 1.0)]
    assert table.column("started_at")[0].as_py().timestamp() == pytest.approx(1.7e9)


def test_deferred_journal_writes_a_turns_rows_at_once_and_before_a_part(tmp_path: Path) -> None:
    """With ``defer`` (the eval loop's call_soon) rows finished in one turn share one write."""
    shard = ShardDir(tmp_path)
    scheduled: list = []
    writer = ShardWriter(shard, metadata={"nel.run_id": "r1"}, flush_rows=100, defer=scheduled.append)
    for idx in range(3):
        writer.append(_row(idx))
    (journal,) = shard.journals()
    assert len(read_journal(journal)) == 0 and len(scheduled) == 1  # one write scheduled for the turn
    scheduled.pop()()
    assert len(read_journal(journal)) == 3
    writer.append(_row(3))
    staged = writer.stage()  # the segment gets its pending line before it is closed
    assert staged is not None and len(read_journal(journal)) == 4
    scheduled.pop()()  # the turn's callback, now with nothing left to write
    writer.write(staged)
    writer.append(_row(4))
    writer.close()
    assert not shard.journals() and len(scheduled) == 1
    table = pa.concat_tables(read_part(p) for p in shard.parts())
    assert sorted(table.column("problem_idx").to_pylist()) == [0, 1, 2, 3, 4]


def test_recover_turns_a_killed_writers_journal_into_parts_and_drops_a_torn_line(tmp_path: Path) -> None:
    shard = ShardDir(tmp_path)
    dead = ShardWriter(shard, metadata={"nel.run_id": "r1"}, flush_rows=100)
    for idx in range(4):
        dead.append(_row(idx, kind="timeout" if idx == 3 else "none"))
    (journal,) = shard.journals()
    with journal.open("ab") as handle:
        handle.write(b'["r1", "toy", 0, 1, 7')  # the process died inside this write
    (tmp_path / "part-000009-deadbeef.parquet.tmp").write_bytes(b"half a file")
    recover(shard)
    assert not shard.journals() and not shard.leftovers()
    assert finished_keys(shard, "r1") == {(0, 0), (1, 0), (2, 0)}  # the timeout is redone, not kept


def test_a_segment_compacted_just_before_a_crash_is_not_read_twice(tmp_path: Path) -> None:
    shard = ShardDir(tmp_path)
    writer = ShardWriter(shard, metadata={"nel.run_id": "r1"}, flush_rows=100)
    writer.append(_row(0))
    staged = writer.stage()
    assert staged is not None and staged.journal is not None
    pq.write_table(staged.table, staged.part)  # the part is in place; the crash came before the delete
    assert row_sources(shard) == [staged.part] + [j for j in shard.journals() if j != staged.journal]
    recover(shard)
    assert shard.journals() == [] and len(read_part(staged.part)) == 1


def test_a_bad_line_inside_a_journal_is_named(tmp_path: Path) -> None:
    shard = ShardDir(tmp_path)
    writer = ShardWriter(shard, metadata={"nel.run_id": "r1"})
    writer.append(_row(0))
    (journal,) = shard.journals()
    journal.write_bytes(journal.read_bytes() + b"not json\n" + journal.read_bytes().splitlines()[1] + b"\n")
    with pytest.raises(StoreError, match=rf"{journal.name}:3: not a JSON row"):
        recover(shard)


def test_parts_of_another_run_are_refused_by_name(tmp_path: Path) -> None:
    shard = ShardDir(tmp_path)
    writer = ShardWriter(shard, metadata={"nel.run_id": "other"})
    writer.append(_row(0, run_id="other"))
    part = writer.flush()
    assert part is not None
    with pytest.raises(RunConflictError, match=rf"not of this run \(run r1 in run.json\): {part.name} is of run other"):
        finished_keys(shard, "r1")


def test_a_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    from nel.store import _write_atomic

    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "progress.json", {1j: "a key JSON cannot hold"})
    with pytest.raises(AttributeError):
        _write_atomic("not a table", tmp_path / "part-000001-abcd.parquet")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_clear_run_removes_deployment_logs_and_keeps_other_files(tmp_path: Path) -> None:
    rundir = RunDir(tmp_path)
    for path in (rundir.deployment_log("model", 0, 1), rundir.submissions, rundir.shard(0, 1).progress,
                 rundir.slurm_job("17") / "17_0_log.out", rundir.metrics, rundir.report):  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    write_json_atomic(rundir.run_file, {"run_id": "r1", "total_shards": 1})
    (tmp_path / "notes.txt").write_text("mine")
    rundir.clear()
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert repr(rundir) == f"RunDir({str(tmp_path)!r})"
