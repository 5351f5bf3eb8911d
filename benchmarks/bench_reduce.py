"""Reducer scale: 64 shards x 100,000 rows merged into metrics, against a plain pyarrow scan.

    python benchmarks/bench_reduce.py [--shards 64] [--rows 100000] [--keep DIR]

Synthetic shards are generated with the real schema (realistic column mix, short strings),
then, each in a fresh process so peak RSS is its own:
  - baseline: pyarrow.dataset scan of every part file into one table (all columns);
  - nel: reduce_run (pick one row per key, metrics, runtime stats, merged trajectories.parquet).
Reports wall time ratio (target <= 2) and nel's peak RSS (target < 2 GB).
"""

from __future__ import annotations

import argparse
import json
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

from nel.rundir import RunDir, write_json_atomic, write_progress  # noqa: E402
from nel.trajectory import schema_with_metadata  # noqa: E402

REPEATS = 4
PART_ROWS = 25_000


def make_run(root: Path, shards: int, rows_per_shard: int) -> None:
    problems_per_shard = rows_per_shard // REPEATS
    rundir = RunDir(root)
    write_json_atomic(rundir.run_file, {
        "run_id": "bench", "total_shards": shards, "identity": {"bench": "synthetic", "repeats": REPEATS},
        "spec": {}, "nel_version": "bench", "created_at": "",
    })  # fmt: skip
    meta = {"nel.benchmark": "synthetic", "nel.metrics_type": "math", "nel.score_names": "symbolic_correct",
            "nel.run_id": "bench"}
    schema = schema_with_metadata(meta)
    rng = np.random.default_rng(0)
    for s in range(shards):
        shard = rundir.shard(s, shards)
        directory = shard.path
        directory.mkdir(parents=True)
        start = s * problems_per_shard
        write_progress(directory, state="done", problems=[start, start + problems_per_shard], repeats=REPEATS,
                       done=rows_per_shard, failed=0, total=rows_per_shard)  # fmt: skip
        for p, lo in enumerate(range(0, rows_per_shard, PART_ROWS)):
            n = min(PART_ROWS, rows_per_shard - lo)
            pq.write_table(_part(rng, start * REPEATS + lo, n, s, shards, schema), shard.part(p, "bench"),
                           compression="zstd")  # fmt: skip


def _part(rng: np.random.Generator, first_key: int, n: int, shard: int, shards: int, schema: pa.Schema) -> pa.Table:
    keys = np.arange(first_key, first_key + n)
    answers = rng.integers(0, 20, n)
    correct = answers < 12
    now = np.int64(1_780_000_000_000_000)
    started = now + keys * 1000
    text = pa.array(["Let me work through this carefully. First we add the numbers, then we check. "] * n)
    columns = {
        "run_id": pa.array(["bench"] * n), "benchmark": pa.array(["synthetic"] * n),
        "shard_idx": pa.array(np.full(n, shard, np.int32)), "total_shards": pa.array(np.full(n, shards, np.int32)),
        "problem_idx": pa.array(keys // REPEATS), "repeat": pa.array((keys % REPEATS).astype(np.int32)),
        "subset": pa.nulls(n, pa.string()),
        "messages": pa.array(['[{"role": "user", "content": "Solve: what is 3 + 4 times 2?"}]'] * n),
        "expected_answer": pa.array(["11"] * n), "response": text, "reasoning_content": pa.nulls(n, pa.string()),
        "extracted_answer": pa.array(answers.astype(str)), "reward": pa.array(correct.astype(float)),
        "correct": pa.array(correct),
        "scores": pa.array([[("symbolic_correct", float(c))] for c in correct], pa.map_(pa.string(), pa.float64())),
        "details": pa.nulls(n, pa.string()), "finish_reason": pa.array(["stop"] * n),
        "prompt_tokens": pa.array(rng.integers(50, 200, n)), "completion_tokens": pa.array(rng.integers(100, 900, n)),
        "reasoning_tokens": pa.nulls(n, pa.int64()), "model_calls": pa.array(np.ones(n, np.int32)),
        "attempts": pa.array(np.ones(n, np.int32)), "model_latency_s": pa.array(rng.gamma(2.0, 0.5, n)),
        "attempt_latencies_s": pa.array([[0.5]] * n, pa.list_(pa.float64())),
        "verify_time_s": pa.array(rng.gamma(2.0, 0.001, n)), "error_kind": pa.array(["none"] * n),
        "error": pa.nulls(n, pa.string()),
        "tool_calls": pa.nulls(n, pa.string()), "cached_calls": pa.array(np.zeros(n, np.int32)),
        "started_at": pa.array(started).cast(pa.timestamp("us", tz="UTC")),
        "finished_at": pa.array(started + 500_000).cast(pa.timestamp("us", tz="UTC")),
    }  # fmt: skip
    return pa.Table.from_pydict(columns, schema=schema)


SCAN = (
    "import pyarrow.dataset as ds, sys, pathlib; files = sorted(map(str, pathlib.Path(sys.argv[1]).rglob('part-*.parquet')));"
    "t = ds.dataset(files, format='parquet').to_table(); print(len(t))"
)
REDUCE = "import sys; from nel.reduce import reduce_run; r = reduce_run(sys.argv[1]); print(r.runtime['rows'])"


def measure(code: str, arg: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of ``code`` in a fresh interpreter (imports excluded)."""
    wrapper = (
        "import time, resource, sys; sys.path.insert(0, %r); import pyarrow, numpy, nel.reduce; t0 = time.perf_counter()\n"
        "%s\nprint('WALL', time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    ) % (str(ROOT), code)
    out = subprocess.run([sys.executable, "-c", wrapper, arg], capture_output=True, text=True, check=True).stdout
    _, wall, rss = out.strip().splitlines()[-1].split()
    return float(wall), float(rss)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "run"
        t0 = time.perf_counter()
        make_run(root, args.shards, args.rows)
        print(f"generated {args.shards} x {args.rows} rows in {time.perf_counter() - t0:.1f}s")
        scan_wall, scan_rss = measure(SCAN, str(root / "shards"))
        reduce_wall, reduce_rss = measure(REDUCE, str(root))
        result = {"rows": args.shards * args.rows, "scan_s": round(scan_wall, 2), "scan_rss_mb": round(scan_rss),
                  "reduce_s": round(reduce_wall, 2), "reduce_rss_mb": round(reduce_rss),
                  "wall_ratio": round(reduce_wall / scan_wall, 2)}  # fmt: skip
        print(json.dumps(result))


if __name__ == "__main__":
    main()
