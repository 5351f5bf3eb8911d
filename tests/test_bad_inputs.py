"""The bad-input corpus: every way a careless user or a hostile machine can break a run, each a
real ``python -m nel`` subprocess, each ending in one ``nel: error:`` line that names the flag,
file, row or URL at fault, with a documented exit code, no traceback, and finished rows kept.

Disk-full and read-only cases use real tmpfs mounts (root only; skipped with the reason otherwise).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from nel.errors import ExitCode
from nel.testing.model_server import ModelServer, Rule

USAGE, DATA, ENV, INCOMPLETE = ExitCode.USAGE, ExitCode.DATA, ExitCode.ENVIRONMENT, ExitCode.INCOMPLETE
DEAD_URL = "http://127.0.0.1:9/v1"  # the discard port: nothing listens; flag cases never get that far
KEY = "sk-echo-0123456789abcdefSECRET"


def nel(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NEL_", "OPENAI_"))}
    return subprocess.run([sys.executable, "-m", "nel", *args], capture_output=True, text=True, timeout=timeout,
                          env={**clean, **(env or {})})  # fmt: skip


def one_error_line(done: subprocess.CompletedProcess[str], code: int, pattern: str) -> str:
    """The corpus' contract: the exit code, one ``nel: error:`` line matching ``pattern``, no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("nel: warning:")]
    assert done.returncode == code, (done.returncode, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("nel: error: "), done.stderr
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def run_args(out: Path, *extra: str, url: str = DEAD_URL, data_dir: Path | None = None) -> list[str]:
    data = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return ["eval", "run", "--bench", "skills://gsm8k", "--model-url", url, "--model-id", "m", "--progress", "none",
            "--output-dir", str(out), *data, *extra]  # fmt: skip


def rows_of(out: Path) -> list[dict]:
    return [row for part in sorted(out.rglob("part-*.parquet")) for row in pq.read_table(part).to_pylist()]


# ------------------------------------------------------------------------------------------------
# Flags and config: refused up front (exit 2), naming the flag, before any file or request


FLAG_CASES = [
    ("repeats-zero", ["--repeats", "0"], r"repeats must be >= 1 and <= 10000, got 0 \(--repeats\)"),
    ("repeats-negative", ["--repeats", "-3"], r"got -3 \(--repeats\)"),
    ("repeats-huge", ["--repeats", "1000000000"], r"got 1000000000 \(--repeats\)"),
    ("repeats-not-int", ["--repeats", "x"], r"argument --repeats: invalid int value: 'x'"),
    ("concurrency-zero", ["--concurrency", "0"], r"\(--concurrency\)"),
    ("concurrency-huge", ["--concurrency", "100000000"], r"<= 10000, got 100000000 \(--concurrency\)"),
    ("max-problems-zero", ["--max-problems", "0"], r"max_problems must be >= 1.*\(--max-problems\)"),
    ("max-problems-negative", ["--max-problems", "-1"], r"\(--max-problems\)"),
    ("flush-rows-zero", ["--flush-rows", "0"], r"flush_rows must be >= 1.*got 0 \(--flush-rows\)"),
    ("flush-seconds-negative", ["--flush-seconds", "-1"], r"flush_seconds must be > 0.*\(--flush-seconds\)"),
    ("flush-seconds-nan", ["--flush-seconds", "nan"], r"flush_seconds must be a finite number.*\(--flush-seconds\)"),
    ("timeout-zero", ["--timeout", "0"], r"model.timeout must be > 0.*\(--timeout\)"),
    ("timeout-infinite", ["--timeout", "inf"], r"model.timeout must be a finite number.*\(--timeout\)"),
    ("max-retries-negative", ["--max-retries", "-1"], r"\(--max-retries\)"),
    ("max-retries-huge", ["--max-retries", "1000"], r"<= 100, got 1000 \(--max-retries\)"),
    ("temperature-negative", ["--temperature", "-0.5"], r"model.temperature must be >= 0.*\(--temperature\)"),
    ("temperature-nan", ["--temperature", "nan"], r"\(--temperature\)"),
    ("top-p-zero", ["--top-p", "0"], r"model.top_p must be > 0 and <= 1, got 0.0 \(--top-p\)"),
    ("top-p-above-one", ["--top-p", "1.5"], r"\(--top-p\)"),
    ("max-tokens-zero", ["--max-tokens", "0"], r"\(--max-tokens\)"),
    ("skills-backend-unknown", ["--skills-backend", "bogus"], r"argument --skills-backend: invalid choice"),
    ("url-no-host", ["--model-url", "http://"], r"'http://' \(--model-url\) has no valid host"),
    ("url-port-too-big", ["--model-url", "http://127.0.0.1:99999/v1"], r"'http://127.0.0.1:99999/v1'.*Port out of range"),
    ("url-port-zero", ["--model-url", "http://127.0.0.1:0/v1"], r"port 0 is not in 1-65535"),
    ("url-port-not-number", ["--model-url", "http://h:abc/v1"], r"\(--model-url\) is not a valid URL"),
    ("url-wrong-scheme", ["--model-url", "ftp://x"], r"'ftp://x' \(--model-url\) must start with http://"),
    ("url-no-scheme", ["--model-url", "localhost:8000/v1"], r"'localhost:8000/v1' \(--model-url\) must start"),
    ("url-space-in-host", ["--model-url", "http://ho st/v1"], r"\(--model-url\) has no valid host"),
    ("url-empty", ["--model-url", ""], r"model.url is empty: pass --model-url or set NEL_MODEL_URL"),
    ("model-id-empty", ["--model-id", ""], r"model.model_id is empty: pass --model-id"),
    ("judge-url-bad", ["--judge-url", "http://", "--judge-model", "j"], r"judge.url 'http://' \(--judge-url\)"),
    ("bench-not-uri", ["--bench", "gsm8k"], r"bench 'gsm8k' is not a benchmark URI"),
    ("bench-typo", ["--bench", "skills://gsm8"], r"unknown benchmark 'gsm8'; did you mean 'gsm8k'\?"),
    ("bench-unknown-scheme", ["--bench", "nosuch://x"], r"unknown scheme 'nosuch'"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "pattern"), [c[1:] for c in FLAG_CASES], ids=[c[0] for c in FLAG_CASES])
def test_bad_flag_is_one_line_naming_it(extra: list[str], pattern: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    one_error_line(nel(*run_args(out), *extra), USAGE, pattern)
    assert not out.exists(), "a refused flag must not create the output dir"


def test_missing_required_flag_is_one_line(tmp_path: Path) -> None:
    done = nel("eval", "run", "--model-url", DEAD_URL, "--output-dir", str(tmp_path))
    one_error_line(done, USAGE, r"the following arguments are required: --bench")


def test_url_credentials_never_shown_in_the_error(tmp_path: Path) -> None:
    line = one_error_line(nel(*run_args(tmp_path / "o", url="http://user:hunter2pass@127.0.0.1:99999/v1")), USAGE,
                          r"'http://127.0.0.1:99999/v1'")  # fmt: skip
    assert "hunter2pass" not in line


def test_shard_index_out_of_range_is_named(tmp_path: Path) -> None:
    done = nel(*run_args(tmp_path / "o"), env={"NEL_SHARD_IDX": "5", "NEL_TOTAL_SHARDS": "2"})
    one_error_line(done, USAGE, r"shard index 5 is not in \[0, 2\)")


# ------------------------------------------------------------------------------------------------
# Paths: the output dir or the data dir is a file


def test_output_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    one_error_line(nel(*run_args(tmp_path / "f")), USAGE, rf"--output-dir {tmp_path}/f is a file")


def test_output_dir_inside_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    one_error_line(nel(*run_args(tmp_path / "f" / "run")), USAGE, rf"is inside {tmp_path}/f, which is a file")


def test_data_dir_that_is_a_file_is_not_a_download_failure(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("x")
    done = nel(*run_args(tmp_path / "out", data_dir=tmp_path / "data"))
    one_error_line(done, USAGE, rf"data dir {tmp_path}/data is a file, not a directory: pass --data-dir")
    assert not (tmp_path / "out" / "run.json").exists()


def test_prepare_into_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("x")
    one_error_line(nel("prepare", "gsm8k", "--data-dir", str(tmp_path / "data")), USAGE, r"is a file")


def test_prepare_unknown_benchmark(tmp_path: Path) -> None:
    one_error_line(nel("prepare", "gsm8kk", "--data-dir", str(tmp_path)), USAGE, r"did you mean 'gsm8k'")


# ------------------------------------------------------------------------------------------------
# Data: every malformed dataset names its file and line (exit 3), before run.json exists

GOOD_ROW = '{"problem": "What is 6*7?", "expected_answer": 42}\n'
DATA_CASES = [
    ("not-utf8", GOOD_ROW.encode() + b'{"problem": "caf\xe9", "expected_answer": 1}\n', r"test.jsonl:2: not UTF-8 text"),
    ("bad-json", (GOOD_ROW + '{"problem": "b"\n').encode(), r"test.jsonl:2: not valid JSON"),
    ("not-an-object", (GOOD_ROW + "[1, 2]\n").encode(), r"test.jsonl:2: expected a JSON object, got list"),
    ("missing-field", (GOOD_ROW + '{"problem": "b"}\n').encode(), r"test.jsonl:2: row lacks field\(s\) expected_answer"),
    ("empty", b"\n", r"test.jsonl has no rows"),
]  # fmt: skip


@pytest.mark.parametrize(("content", "pattern"), [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_malformed_dataset_names_file_and_line(content: bytes, pattern: str, tmp_path: Path) -> None:
    (tmp_path / "data" / "gsm8k").mkdir(parents=True)
    (tmp_path / "data" / "gsm8k" / "test.jsonl").write_bytes(content)
    out = tmp_path / "out"
    one_error_line(nel(*run_args(out, data_dir=tmp_path / "data")), DATA, pattern)
    assert not (out / "run.json").exists(), "a dataset error must not lock the output dir"


def test_split_file_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "data" / "gsm8k" / "test.jsonl").mkdir(parents=True)
    done = nel(*run_args(tmp_path / "out", data_dir=tmp_path / "data"))
    one_error_line(done, DATA, rf"dataset file {tmp_path}/data/gsm8k/test.jsonl is a directory")


def test_prompt_template_field_missing_does_not_lock_the_dir(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = nel(*run_args(out, "--prompt-template", "{nope}", data_dir=gsm8k_data_dir))
    one_error_line(done, DATA, r"prompt template needs field\(s\) nope that row 0 of .*test.jsonl lacks")
    assert not (out / "run.json").exists()


def test_download_failure_says_how_to_work_offline(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = nel(*run_args(out, data_dir=tmp_path / "empty"), env={"NEL_DATA_MIRROR": "http://127.0.0.1:9"})
    line = one_error_line(done, DATA, r"download of http://127\.0\.0\.1:9/gsm8k/test\.jsonl failed")
    assert "--mirror" in line and "NEL_DATA_MIRROR" in line and "--data-dir" in line
    assert not (out / "run.json").exists(), "a failed prepare must not lock the output dir"


def test_mirror_folder_without_the_file(tmp_path: Path) -> None:
    (tmp_path / "mirror").mkdir()
    done = nel("prepare", "gsm8k", "--data-dir", str(tmp_path / "d"), "--mirror", str(tmp_path / "mirror"))
    one_error_line(done, DATA, rf"{tmp_path}/mirror/gsm8k/test.jsonl does not exist in the mirror folder")


# ------------------------------------------------------------------------------------------------
# The endpoint: down, unknown host, empty replies, keys echoed back


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("url", [f"http://127.0.0.1:{_free_port()}/v1", "http://nel-no-such-host.invalid/v1"],
                         ids=["refused", "unknown-host"])  # fmt: skip
def test_endpoint_down_stops_the_run_early_naming_the_url(url: str, gsm8k_data_dir: Path, tmp_path: Path) -> None:
    t0 = time.monotonic()
    done = nel(*run_args(tmp_path / "out", "--max-problems", "200", url=url, data_dir=gsm8k_data_dir))
    elapsed = time.monotonic() - t0
    one_error_line(done, INCOMPLETE, rf"cannot reach the model server at {re.escape(url)}/chat/completions")
    assert elapsed < 30, f"took {elapsed:.0f} s to say the endpoint is down"  # was 89 s for 200 problems
    assert rows_of(tmp_path / "out") == [], "nothing was answered, so nothing is recorded as failed"


def test_null_content_is_a_named_failure(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    with ModelServer(rules=[Rule(match="Janet", content=None, finish_reason="length")]) as srv:
        done = nel(*run_args(tmp_path, "--max-problems", "3", "--max-retries", "0", url=srv.base_url,
                             data_dir=gsm8k_data_dir))  # fmt: skip
    assert done.returncode == INCOMPLETE and "Traceback" not in done.stderr
    assert re.fullmatch(r"nel: incomplete: .*1 row\(s\) failed \(1 bad_response\).*\n", done.stderr), done.stderr
    rows = {r["problem_idx"]: r for r in rows_of(tmp_path)}
    assert rows[0]["error_kind"] == "bad_response" and "content is null" in rows[0]["error"]
    assert rows[1]["error_kind"] == rows[2]["error_kind"] == "none", "the other rows are kept"


def test_echoed_key_reaches_no_file_and_no_stream(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    with ModelServer(rules=[Rule(match="Janet", fault="echo_key")]) as srv:
        done = nel(*run_args(tmp_path, "--max-problems", "2", "--api-key", KEY, url=srv.base_url,
                             data_dir=gsm8k_data_dir), "--allow-partial")  # fmt: skip
        assert srv.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert done.returncode == INCOMPLETE, done.stderr
    rows = {r["problem_idx"]: r for r in rows_of(tmp_path)}
    assert rows[0]["error_kind"] == "client_error" and "Incorrect API key provided: [redacted]" in rows[0]["error"]
    assert (tmp_path / "report.txt").exists()
    _assert_nowhere(KEY, tmp_path, done)


def test_url_credentials_are_sent_as_auth_and_never_written(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    with ModelServer(rules=[Rule(match="Janet", status=401, message="no: alice:pa55word-x")]) as srv:
        url = srv.base_url.replace("http://", "http://alice:pa55word-x@")
        done = nel(*run_args(tmp_path, "--max-problems", "2", url=url, data_dir=gsm8k_data_dir), "--allow-partial")
        assert srv.requests[0].headers["authorization"].startswith("Basic ")
    assert done.returncode == INCOMPLETE, done.stderr
    assert json.loads((tmp_path / "run.json").read_text())["spec"]["model"]["url"] == srv.base_url
    _assert_nowhere("pa55word-x", tmp_path, done)


def _assert_nowhere(secret: str, run_dir: Path, done: subprocess.CompletedProcess[str]) -> None:
    assert secret not in done.stdout + done.stderr
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert secret.encode() not in path.read_bytes(), path


# ------------------------------------------------------------------------------------------------
# A run dir that is not what it should be


@pytest.fixture()
def finished_run(gsm8k_data_dir: Path, tmp_path: Path) -> Iterator[tuple[ModelServer, Path]]:
    with ModelServer() as srv:
        done = nel(*run_args(tmp_path / "run", "--max-problems", "3", url=srv.base_url, data_dir=gsm8k_data_dir))
        assert done.returncode == 0, done.stderr
        yield srv, tmp_path / "run"


def test_config_clash_is_refused(finished_run: tuple[ModelServer, Path], gsm8k_data_dir: Path) -> None:
    srv, run = finished_run
    done = nel(*run_args(run, "--max-problems", "3", "--temperature", "0.7", url=srv.base_url, data_dir=gsm8k_data_dir))
    one_error_line(done, USAGE, r"run.json belongs to a different run: sampling was \{'temperature': 0.0\}")
    assert len(rows_of(run)) == 3


def test_corrupt_part_is_named(finished_run: tuple[ModelServer, Path], gsm8k_data_dir: Path) -> None:
    srv, run = finished_run
    part = next(run.rglob("part-*.parquet"))
    part.write_bytes(b"garbage")
    done = nel(*run_args(run, "--max-problems", "3", url=srv.base_url, data_dir=gsm8k_data_dir))
    one_error_line(done, DATA, rf"cannot read part file .*{part.name}")


def test_corrupt_run_file_is_named(finished_run: tuple[ModelServer, Path], gsm8k_data_dir: Path) -> None:
    srv, run = finished_run
    (run / "run.json").write_text("{not json")
    done = nel(*run_args(run, "--max-problems", "3", url=srv.base_url, data_dir=gsm8k_data_dir))
    one_error_line(done, DATA, r"cannot read .*run.json")
    assert len(rows_of(run)) == 3


def test_reduce_of_a_dir_that_is_no_run(tmp_path: Path) -> None:
    # A path that holds no run is a wrong argument (as for `nel status`), not bad data.
    one_error_line(nel("reduce", str(tmp_path)), USAGE, rf"{tmp_path} is not a nel run directory")


# ------------------------------------------------------------------------------------------------
# The machine: read-only and full file systems (real tmpfs mounts)


@contextlib.contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(mount: Path, leave_bytes: int) -> None:
    """Fill ``mount`` up to ``leave_bytes`` of free space."""
    stat = os.statvfs(mount)
    free = stat.f_bavail * stat.f_frsize
    (mount / "filler").write_bytes(b"\0" * max(0, free - leave_bytes))


def test_read_only_output_dir(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "size=1m,ro") as mount:
        done = nel(*run_args(mount / "run", data_dir=gsm8k_data_dir))
    one_error_line(done, ENV, rf"{mount}/run: Read-only file system; the file system is read-only: choose a writable")


def test_read_only_data_dir_for_prepare(tmp_path: Path, sources_dir: Path) -> None:
    with tmpfs(tmp_path / "ro", "size=1m,ro") as mount:
        done = nel("prepare", "gsm8k", "--data-dir", str(mount), "--mirror", str(sources_dir))
    one_error_line(done, ENV, rf"{mount}/gsm8k: Read-only file system")


def test_disk_full_at_start(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "full", "size=256k") as mount:
        (mount / "run").mkdir()
        _fill(mount, 0)
        done = nel(*run_args(mount / "run", data_dir=gsm8k_data_dir))
        one_error_line(done, ENV, rf"{mount}/run/\S+: No space left on device; free space")
        assert not list((mount / "run").rglob("*.tmp")), "a full disk must leave no .tmp behind"
        assert not (mount / "run" / "run.json").exists()


def test_disk_full_mid_run_keeps_finished_rows(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    # 400 one-row parts (~10 kB each) and the merged file need ~5 MB once the filler is gone.
    with tmpfs(tmp_path / "full", "size=12m") as mount, ModelServer() as srv:
        args = run_args(mount / "run", "--max-problems", "400", "--concurrency", "1", "--flush-rows", "1",
                        url=srv.base_url, data_dir=gsm8k_data_dir)  # fmt: skip
        _fill(mount, 120_000)  # room for run.json and some one-row parts, not for 400
        done = nel(*args)
        one_error_line(done, ENV, r"No space left on device; free space on that file system, then rerun")
        kept = rows_of(mount / "run")
        assert 0 < len(kept) < 400, len(kept)
        assert not list((mount / "run").rglob("*.tmp"))
        (mount / "filler").unlink()
        again = nel(*args)
        assert again.returncode == 0, again.stderr
        # Parts hold `kept`; the journal may hold more finished rows: none is redone.
        before = re.search(r"\((\d+) from before\)", again.stdout)
        assert before is not None and int(before.group(1)) >= len(kept), again.stdout


def test_disk_full_while_journaling_names_a_file_and_loses_no_journaled_row(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    """The journal fills the disk before any part is due (its writes are deferred to the end of a
    turn of the event loop): still one line naming a file, exit 4, and the rerun resumes the rows
    the journal holds."""
    with tmpfs(tmp_path / "full", "size=2m") as mount, ModelServer() as srv:
        args = run_args(mount / "run", "--max-problems", "1000", "--concurrency", "8", "--flush-rows", "5000",
                        url=srv.base_url, data_dir=gsm8k_data_dir)  # fmt: skip
        _fill(mount, 60_000)  # room for ~100 journal lines, not for 1000
        done = nel(*args)
        one_error_line(done, ENV, rf"{mount}/run/shards/\S+: No space left on device; free space on that file system")
        (mount / "filler").unlink()
        again = nel(*args)
        assert again.returncode == 0, again.stderr
        before = re.search(r"\((\d+) from before\)", again.stdout)
        assert before is not None and int(before.group(1)) > 0, again.stdout
