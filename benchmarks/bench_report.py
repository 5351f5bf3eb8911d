"""`nel report` on a 100,000-row run: time and file size, against reading the run's Parquet.

    python benchmarks/bench_report.py [--rows 100000] [--text 800]

A synthetic reduced run (bench_reduce's rows, with varied prompts of ~400 characters per problem
and responses of ``--text`` characters drawn from a 2,000-word vocabulary, so the text compresses
like prose rather than like one repeated line), then, each in a fresh process:
  - baseline: pyarrow.parquet.read_table of the run's trajectories.parquet (every column);
  - nel: build_report (summary, plots, the rows blob, the template) of the same run.
If chromium is on PATH, also the time until the page has inflated and rendered its rows
(``--dump-dom``), against the same for a 1,000-row report.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_reduce import measure  # noqa: E402

from nel.reduce import reduce_run  # noqa: E402
from nel.rundir import RunDir, write_json_atomic, write_progress  # noqa: E402
from nel.trajectory import SCHEMA, schema_with_metadata  # noqa: E402

REPEATS = 4
META = {"nel.benchmark": "synthetic", "nel.metrics_type": "math", "nel.score_names": "symbolic_correct",
        "nel.run_id": "bench"}  # fmt: skip


def _texts(rng: np.random.Generator, vocab: np.ndarray, n: int, chars: int) -> list[str]:
    words = rng.integers(0, len(vocab), size=(n, max(1, chars // 7)))
    return [" ".join(vocab[row]) for row in words]


def make_run(root: Path, rows: int, chars: int) -> None:
    """One shard per 25,000 rows, 4 repeats, 12 of 20 answers right, 1% failed as rate_limit."""
    shards = max(1, rows // 25_000)
    per_shard = rows // shards
    rundir = RunDir(root)
    write_json_atomic(rundir.run_file, {"run_id": "bench", "total_shards": shards, "spec": {}, "nel_version": "bench",
                                        "identity": {"bench": "synthetic", "repeats": REPEATS}, "created_at": ""})  # fmt: skip
    rng = np.random.default_rng(1)
    vocab = np.array(["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 10))) for _ in range(2000)])
    for s in range(shards):
        shard = rundir.shard(s, shards)
        shard.path.mkdir(parents=True)
        first = s * per_shard
        write_progress(shard.path, state="done", problems=[first // REPEATS, (first + per_shard) // REPEATS],
                       repeats=REPEATS, done=per_shard, failed=0, total=per_shard)  # fmt: skip
        pq.write_table(_part(rng, vocab, first, per_shard, chars), shard.part(0, "bench"), compression="zstd")
    reduce_run(root, allow_partial=True)


def _part(rng: np.random.Generator, vocab: np.ndarray, first: int, n: int, chars: int) -> pa.Table:
    keys = np.arange(first, first + n)
    problems = keys // REPEATS
    answers = rng.integers(0, 20, n)
    failed = rng.random(n) < 0.01
    prompts = {p: json.dumps([{"role": "user", "content": t}])
               for p, t in zip(np.unique(problems), _texts(rng, vocab, len(np.unique(problems)), 400))}  # fmt: skip
    started = np.int64(1_780_000_000_000_000) + keys * 1000
    columns = {
        "run_id": pa.array(["bench"] * n), "benchmark": pa.array(["synthetic"] * n),
        "problem_idx": pa.array(problems), "repeat": pa.array((keys % REPEATS).astype(np.int32)),
        "subset": pa.array(np.array(["algebra", "geometry", "counting"])[problems % 3]),
        "messages": pa.array([prompts[p] for p in problems]), "expected_answer": pa.array(["11"] * n),
        "response": pa.array(_texts(rng, vocab, n, chars)), "extracted_answer": pa.array(answers.astype(str)),
        "reward": pa.array((answers < 12).astype(float)), "correct": pa.array(answers < 12),
        "scores": pa.array([[("symbolic_correct", float(c))] for c in answers < 12], SCHEMA.field("scores").type),
        "finish_reason": pa.array(["stop"] * n), "prompt_tokens": pa.array(rng.integers(50, 200, n)),
        "completion_tokens": pa.array(rng.integers(100, 900, n)), "model_calls": pa.array(np.ones(n, np.int32)),
        "attempts": pa.array(np.ones(n, np.int32)), "model_latency_s": pa.array(rng.gamma(2.0, 0.5, n)),
        "verify_time_s": pa.array(rng.gamma(2.0, 0.001, n)),
        "error_kind": pa.array(np.where(failed, "rate_limit", "none")),
        "started_at": pa.array(started).cast(SCHEMA.field("started_at").type),
        "finished_at": pa.array(started + 500_000).cast(SCHEMA.field("finished_at").type),
    }  # fmt: skip
    arrays = [columns.get(f.name, pa.nulls(n, f.type)) for f in SCHEMA]
    return pa.Table.from_arrays(arrays, schema=schema_with_metadata(META))


READ = "import sys, pyarrow.parquet as pq; t = pq.read_table(sys.argv[1] + '/trajectories.parquet'); print(len(t))"
REPORT = "import sys; from nel.report import build_report; print(build_report([sys.argv[1]]))"


def browser_seconds(html: Path) -> float | None:
    chromium = shutil.which("chromium")
    if chromium is None:
        return None
    t0 = time.perf_counter()
    out = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=60000",
                          "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=600).stdout  # fmt: skip
    assert 'data-rows-ready="yes"' in out, "the rows never rendered"
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--text", type=int, default=800, help="characters per response")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp) / "big", Path(tmp) / "small"
        make_run(big, args.rows, args.text)
        make_run(small, 1000, args.text)
        read_s, _ = measure(READ, str(big))
        report_s, report_rss = measure(REPORT, str(big))
        measure(REPORT, str(small))
        html = big / "report.html"
        result = {"rows": args.rows, "response_chars": args.text,
                  "parquet_mb": round((big / "trajectories.parquet").stat().st_size / 1e6, 1),
                  "read_parquet_s": round(read_s, 2), "report_s": round(report_s, 2),
                  "report_vs_read": round(report_s / read_s, 1), "report_rss_mb": round(report_rss),
                  "html_mb": round(html.stat().st_size / 1e6, 1)}  # fmt: skip
        opened, opened_small = browser_seconds(html), browser_seconds(small / "report.html")
        if opened is not None and opened_small is not None:
            result.update(browser_open_s=round(opened, 2), browser_open_1k_rows_s=round(opened_small, 2))
        print(json.dumps(result))


if __name__ == "__main__":
    main()
