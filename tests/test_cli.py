"""`nel` as a user runs it: subprocesses, real HTTP, real GSM8K data, real signals."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from nel.errors import StoreError
from nel.rundir import RunDir, ShardDir
from nel.skills.data import read_jsonl
from nel.store import read_part, row_sources
from nel.testing.model_server import ModelServer, Rule

SECRET = "sk-test-secret-must-never-be-written-0123456789"


def nel(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nel", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def gsm8k_answerer(data_dir: Path, right_every: int = 2):
    """Answer GSM8K problems over HTTP: every ``right_every``-th correctly, the rest wrongly."""
    rows = read_jsonl(data_dir / "gsm8k" / "test.jsonl")
    answers = {row["problem"]: (i, row["expected_answer"]) for i, row in enumerate(rows)}

    def answer(body: dict) -> Rule:
        text = body["messages"][-1]["content"]
        idx, expected = answers[text.split("\n\n", 1)[1]]
        value = expected if idx % right_every == 0 else -1
        return Rule(content=f"Let me think step by step. So the total is \\boxed{{{value}}}.")

    return answer


@pytest.fixture()
def gsm8k_server(gsm8k_data_dir: Path) -> Iterator[ModelServer]:
    with ModelServer(answer_fn=gsm8k_answerer(gsm8k_data_dir), latency=0.002) as srv:
        yield srv


def run_args(srv: ModelServer, data_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "run", "--bench", "skills://gsm8k", "--model-url", srv.base_url, "--model-id", "mock",
            "--data-dir", str(data_dir), "--output-dir", str(out), "--progress", "plain", *extra]  # fmt: skip


def test_gsm8k_run_scores_and_keeps_no_secret(gsm8k_server: ModelServer, gsm8k_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = nel(*run_args(gsm8k_server, gsm8k_data_dir, out, "--max-problems", "40", "--repeats", "2",
                         "--api-key", SECRET))  # fmt: skip
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["gsm8k"]["pass@1[avg-of-2]"]["symbolic_correct"] == pytest.approx(50.0)
    assert metrics["gsm8k"]["pass@1"]["num_entries"] == 40
    assert gsm8k_server.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in done.stdout + done.stderr
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["identity"]["bench"] == "skills://gsm8k" and run_json["nel_version"]


def test_sigkill_then_rerun_is_exactly_once(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with ModelServer(answer_fn=gsm8k_answerer(gsm8k_data_dir), latency=0.02) as srv:
        args = run_args(srv, gsm8k_data_dir, out, "--max-problems", "150", "--concurrency", "4",
                        "--flush-rows", "10")  # fmt: skip
        proc = subprocess.Popen([sys.executable, "-m", "nel", *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            _wait_for(lambda: len(list(out.rglob("part-*.parquet"))) >= 3, proc)
        finally:
            proc.kill()
            proc.wait()
        kept = _terminal_rows(out)
        assert 0 < len(kept) < 150
        first_requests = srv.request_count
        done = nel(*args)
        assert done.returncode == 0, done.stderr
        assert srv.request_count - first_requests == 150 - len(kept)
    merged = pd.read_parquet(out / "trajectories.parquet")
    assert len(merged) == 150
    assert not merged.duplicated(["problem_idx", "repeat"]).any()
    assert sorted(merged.problem_idx) == list(range(150))


def test_sigkill_loop_keeps_every_row_finished_before_each_kill(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    out, problems, kills, concurrency = tmp_path / "run", 120, 4, 4
    with ModelServer(answer_fn=gsm8k_answerer(gsm8k_data_dir), latency=0.1) as srv:
        args = run_args(srv, gsm8k_data_dir, out, "--max-problems", str(problems), "--concurrency",
                        str(concurrency), "--flush-rows", "10")  # fmt: skip
        for _ in range(kills):
            kept = _finished_keys(out)
            observed = _kill_once_more_are_finished(args, out, len(kept) + 15)
            after = _finished_keys(out)
            assert kept <= observed <= after, "a row seen finished before the SIGKILL was lost"
        done = nel(*args)
        assert done.returncode == 0, done.stderr
        assert srv.request_count <= problems + kills * concurrency  # only requests in flight were redone
    merged = pd.read_parquet(out / "trajectories.parquet")
    assert len(merged) == problems and not merged.duplicated(["problem_idx", "repeat"]).any()


def test_rows_of_another_run_are_never_adopted(gsm8k_server: ModelServer, gsm8k_data_dir: Path,
                                               tmp_path: Path) -> None:  # fmt: skip
    a, b = tmp_path / "a", tmp_path / "b"
    assert nel(*run_args(gsm8k_server, gsm8k_data_dir, a, "--max-problems", "4")).returncode == 0
    (a / "run.json").unlink()
    again = nel(*run_args(gsm8k_server, gsm8k_data_dir, a, "--max-problems", "4", "--model-id", "other"))
    assert again.returncode == 2, again.stderr
    part = next(a.rglob("part-*.parquet"))
    assert "no run.json" in again.stderr and part.name in again.stderr and "--overwrite" in again.stderr
    assert nel(*run_args(gsm8k_server, gsm8k_data_dir, b, "--max-problems", "4", "--repeats", "2")).returncode == 0
    shutil.copy(part, next(b.glob("shards/shard-*")) / part.name)
    adopted = nel(*run_args(gsm8k_server, gsm8k_data_dir, b, "--max-problems", "4", "--repeats", "2"))
    assert adopted.returncode == 2 and f"{part.name} is of run" in adopted.stderr, adopted.stderr
    reduced = nel("reduce", str(b))
    assert reduced.returncode == 2 and part.name in reduced.stderr


def test_a_changed_data_file_under_a_finished_run_is_named(gsm8k_server: ModelServer, gsm8k_data_dir: Path,
                                                          tmp_path: Path) -> None:  # fmt: skip
    data = tmp_path / "data"
    shutil.copytree(gsm8k_data_dir, data)
    assert nel(*run_args(gsm8k_server, data, tmp_path / "run", "--max-problems", "3")).returncode == 0
    split = data / "gsm8k" / "test.jsonl"
    lines = split.read_text().splitlines(keepends=True)
    split.write_text("".join(lines[:2]) + lines[2].replace('"expected_answer": ', '"expected_answer": 1') + "".join(lines[3:]))
    again = nel(*run_args(gsm8k_server, data, tmp_path / "run", "--max-problems", "3"))
    assert again.returncode == 2, again.stderr
    assert str(split) in again.stderr and "scored against" in again.stderr


def test_sigint_stops_cleanly_and_keeps_finished_rows(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with ModelServer(answer_fn=gsm8k_answerer(gsm8k_data_dir), latency=0.02) as srv:
        args = run_args(srv, gsm8k_data_dir, out, "--max-problems", "300", "--concurrency", "4")
        proc = subprocess.Popen([sys.executable, "-m", "nel", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        _wait_for(lambda: srv.request_count >= 20, proc)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "resume" in stderr
    progress = json.loads(next(out.rglob("progress.json")).read_text())
    assert progress["state"] == "interrupted"
    assert len(_terminal_rows(out)) >= 20 - 4  # everything answered before the signal, minus in flight


def test_hand_sharded_run_matches_unsharded(gsm8k_server: ModelServer, gsm8k_data_dir: Path, tmp_path: Path) -> None:
    whole = nel(*run_args(gsm8k_server, gsm8k_data_dir, tmp_path / "whole", "--max-problems", "30",
                          "--repeats", "2"))  # fmt: skip
    assert whole.returncode == 0, whole.stderr
    for idx in range(3):
        shard = nel(*run_args(gsm8k_server, gsm8k_data_dir, tmp_path / "sharded", "--max-problems", "30",
                              "--repeats", "2"), env={"NEL_SHARD_IDX": str(idx), "NEL_TOTAL_SHARDS": "3"})  # fmt: skip
        assert shard.returncode == 0, shard.stderr
        assert "nel reduce" in shard.stdout
    assert not (tmp_path / "sharded" / "metrics.json").exists()
    reduced = nel("reduce", str(tmp_path / "sharded"))
    assert reduced.returncode == 0, reduced.stderr
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    b = json.loads((tmp_path / "sharded" / "metrics.json").read_text())
    for metrics in (a, b):
        for modes in metrics.values():
            for values in modes.values():
                values.pop("gen_seconds", None)
    assert a == b


def test_incomplete_run_exits_1_and_reduce_names_the_failures(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    with ModelServer(rules=[Rule(match="Janet", status=500)], answer_fn=gsm8k_answerer(gsm8k_data_dir)) as srv:
        done = nel(*run_args(srv, gsm8k_data_dir, tmp_path, "--max-problems", "5", "--max-retries", "1"))
    assert done.returncode == 1
    assert "1 row(s) failed (1 server_error)" in done.stderr
    again = nel("reduce", str(tmp_path))
    assert again.returncode == 1 and "problem 0 repeat 0" in again.stderr
    partial = nel("reduce", str(tmp_path), "--allow-partial")
    assert partial.returncode == 1 and (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize(
    ("args", "code", "pattern"),
    [
        (["--bench", "skills://gsm8", "--model-url", "http://127.0.0.1:9/v1", "--model-id", "m"], 2,
         r"unknown benchmark 'gsm8'; did you mean 'gsm8k'\?"),
        (["--bench", "gsm8k", "--model-url", "http://127.0.0.1:9/v1", "--model-id", "m"], 2,
         r"not a benchmark URI"),
        (["--bench", "skills://gsm8k", "--model-url", "ftp://x", "--model-id", "m"], 2, r"model.url 'ftp://x'"),
        (["--bench", "skills://gsm8k", "--model-url", "http://127.0.0.1:9/v1", "--model-id", "m",
          "--repeats", "0"], 2, r"repeats must be >= 1 and <= 10000, got 0 \(--repeats\)"),
    ],
)  # fmt: skip
def test_bad_flags_give_one_clear_line(args: list[str], code: int, pattern: str, tmp_path: Path) -> None:
    done = nel("eval", "run", *args, "--output-dir", str(tmp_path))
    assert done.returncode == code
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nel: error: ")
    assert re.search(pattern, lines[0]), lines[0]


def test_missing_data_with_unreachable_source_is_a_data_error(tmp_path: Path) -> None:
    done = nel("eval", "run", "--bench", "skills://gsm8k", "--model-url", "http://127.0.0.1:9/v1",
               "--model-id", "m", "--data-dir", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "out"),
               env={"NEL_DATA_MIRROR": "http://127.0.0.1:9"})  # fmt: skip
    assert done.returncode == 3
    assert re.fullmatch(r"nel: error: download of http://127\.0\.0\.1:9/gsm8k/test\.jsonl failed: .*\n", done.stderr)


def test_corrupt_dataset_row_is_named(tmp_path: Path) -> None:
    data = tmp_path / "data" / "gsm8k"
    data.mkdir(parents=True)
    (data / "test.jsonl").write_text('{"problem": "a", "expected_answer": 1}\n{"problem": "b"\n')
    done = nel("eval", "run", "--bench", "skills://gsm8k", "--model-url", "http://127.0.0.1:9/v1",
               "--model-id", "m", "--data-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out"))  # fmt: skip
    assert done.returncode == 3
    assert "test.jsonl:2: not valid JSON" in done.stderr


def test_config_clash_and_corrupt_part_are_refused(gsm8k_server: ModelServer, gsm8k_data_dir: Path,
                                                   tmp_path: Path) -> None:  # fmt: skip
    assert nel(*run_args(gsm8k_server, gsm8k_data_dir, tmp_path, "--max-problems", "3")).returncode == 0
    clash = nel(*run_args(gsm8k_server, gsm8k_data_dir, tmp_path, "--max-problems", "3", "--temperature", "0.7"))
    assert clash.returncode == 2
    assert "sampling was {'temperature': 0.0}, now {'temperature': 0.7}" in clash.stderr and "--overwrite" in clash.stderr
    part = next(tmp_path.rglob("part-*.parquet"))
    part.write_bytes(b"garbage")
    broken = nel(*run_args(gsm8k_server, gsm8k_data_dir, tmp_path, "--max-problems", "3"))
    assert broken.returncode == 3 and part.name in broken.stderr


def test_list_shows_the_catalog(gsm8k_data_dir: Path) -> None:
    done = nel("list", "--data-dir", str(gsm8k_data_dir))
    assert done.returncode == 0
    line = next(line for line in done.stdout.splitlines() if "skills://gsm8k" in line)
    assert "math" in line and "1319" in line and "yes" in line


def _terminal_rows(out: Path) -> pd.DataFrame:
    """Finished rows a resume would keep: in parts, and in journal segments not yet compacted."""
    shards = RunDir(out).shards
    paths = [p for shard in shards.glob("shard-*") for p in row_sources(ShardDir(shard))] if shards.exists() else []
    frames = [read_part(p).to_pandas() for p in paths]
    rows = pd.concat(frames) if frames else pd.DataFrame(columns=["error_kind", "problem_idx", "repeat"])
    return rows[rows.error_kind == "none"]


def _kill_once_more_are_finished(args: list[str], out: Path, count: int) -> set[tuple[int, int]]:
    """Start nel, SIGKILL it once ``count`` rows are finished; the keys seen finished just before."""
    proc = subprocess.Popen([sys.executable, "-m", "nel", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    observed: set[tuple[int, int]] = set()

    def enough() -> bool:
        observed.clear()
        observed.update(_finished_keys(out, live=True))
        return len(observed) >= count

    try:
        _wait_for(enough, proc)
    finally:
        proc.kill()
        proc.wait()
    return observed


def _finished_keys(out: Path, *, live: bool = False) -> set[tuple[int, int]]:
    """Keys of finished rows; ``live``: the writer may delete a compacted segment while we read."""
    for _ in range(50):
        try:
            rows = _terminal_rows(out)
        except StoreError:
            if not live:
                raise
            continue
        return set(zip(rows.problem_idx.astype(int), rows["repeat"].astype(int)))
    raise AssertionError("the journal kept changing under the reader")


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"nel exited early with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)
