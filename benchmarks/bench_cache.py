"""Response-cache stores: one file per entry (nel.cache) against SQLite in WAL mode; and what
the cache costs the eval loop.

    python benchmarks/bench_cache.py [--entries 4000] [--dir DIR]
    python benchmarks/bench_cache.py --loop [--requests 10000] [--rounds 3] [--main /path/to/main/tree]

Two processes at once each store the same ``--entries`` entries (the shards-of-one-array case
where both miss) and then read all of them back; entries are the size of a short chat reply
(~1.5 kB). Reported: entries/s per process for the writes and the reads, and whether every
entry read back whole. ``--dir`` picks the file system (run it on the NFS/Lustre mount the
cache would live on; the default is a local temporary directory).

``--loop``: the eval loop's requests/s on a zero-latency server at concurrency 64 (bench_loop.py's
throughput setup, uvloop as the CLI runs it), each run in a fresh process: the main tree (no
cache code), this tree with the cache off, on and empty (every call stores), and on and full
(every call a hit), against a bare aiohttp loop in the same rounds. Interleaved rounds, medians.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nel.cache import ResponseCache  # noqa: E402

REPLY = b'{"choices":[{"message":{"role":"assistant","content":"' + b"x" * 1400 + b'"},"finish_reason":"stop"}]}'


def files_worker(root: str, n: int, out: multiprocessing.Queue) -> None:
    cache = ResponseCache(root)
    keys = [cache.key("chat/completions", {"messages": [{"role": "user", "content": f"q{i}"}]}, (i, 0)) for i in range(n)]
    t0 = time.perf_counter()
    for key in keys:
        cache.put(key, REPLY)
    t1 = time.perf_counter()
    whole = sum(cache.get(key) == REPLY for key in keys)
    t2 = time.perf_counter()
    out.put(("files", n / (t1 - t0), n / (t2 - t1), whole))


def sqlite_worker(root: str, n: int, out: multiprocessing.Queue) -> None:
    db = sqlite3.connect(Path(root) / "cache.sqlite", timeout=60, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, reply BLOB)")
    keys = [ResponseCache.key("chat/completions", {"messages": [{"role": "user", "content": f"q{i}"}]}, (i, 0)).digest
            for i in range(n)]  # fmt: skip
    t0 = time.perf_counter()
    for key in keys:  # one commit per entry: a shard must not lose finished replies to a kill
        db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?)", (key, REPLY))
    t1 = time.perf_counter()
    whole = sum(db.execute("SELECT reply FROM entries WHERE key = ?", (key,)).fetchone()[0] == REPLY for key in keys)
    t2 = time.perf_counter()
    out.put(("sqlite-wal", n / (t1 - t0), n / (t2 - t1), whole))


def measure(worker: object, base: str, n: int) -> list[tuple[str, float, float, int]]:
    root = tempfile.mkdtemp(dir=base)
    if worker is sqlite_worker:  # create the database once, so the two do not race to make the table
        sqlite3.connect(Path(root) / "cache.sqlite").execute("PRAGMA journal_mode=WAL").connection.close()
    out: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=worker, args=(root, n, out)) for _ in range(2)]
    for proc in procs:
        proc.start()
    results = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    return results


CHILD = """
import sys, time, uvloop
tree, url, n, out, cache = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
sys.path[:0] = [tree, tree + "/benchmarks"]
import bench_loop
from nel import ChatSolver, ModelClient, run_evaluation
options = {}
if cache:
    from nel.cache import ResponseCache
    options["cache"] = ResponseCache(cache)
client = ModelClient(url, "m", "", concurrency=64, **options)
t0 = time.perf_counter()
result = uvloop.run(run_evaluation(bench_loop.TrivialEnv(n), ChatSolver(client), output_dir=out, concurrency=64,
                                   progress="none", reduce=False))
assert result.done == n and result.failed == 0, result
print(n / (time.perf_counter() - t0))
"""


def tree_run(tree: Path, url: str, n: int, out: Path, cache: Path | None = None) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(tree), url, str(n), str(out), str(cache or "")],
                          env=env, capture_output=True, text=True, check=True)  # fmt: skip
    return float(done.stdout.strip())


def loop_cost(main_tree: Path, n: int, rounds: int) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_loop import bare_aiohttp

    from nel.testing.model_server import start_server_process, stop_server_process

    proc, url = start_server_process(["--port", "0", "--no-record"])
    runs: dict[str, list[float]] = {"bare": [], "main": [], "off": [], "on_empty": [], "on_full": []}
    try:
        uvloop.run(bare_aiohttp(url, 2000, 64))  # warm up both sides
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(rounds):
                base, cache = Path(tmp), Path(tmp) / f"cache{i}"
                runs["bare"].append(uvloop.run(bare_aiohttp(url, n, 64)))
                runs["main"].append(tree_run(main_tree, url, n, base / f"m{i}"))
                runs["off"].append(tree_run(ROOT, url, n, base / f"o{i}"))
                runs["on_empty"].append(tree_run(ROOT, url, n, base / f"e{i}", cache))
                runs["on_full"].append(tree_run(ROOT, url, n, base / f"f{i}", cache))
    finally:
        stop_server_process(proc)
    med = {k: statistics.median(v) for k, v in runs.items()}
    for name, value in med.items():
        print(f"{name:9s} {value:8.0f} requests/s  vs bare {value / med['bare']:.3f}  vs main {value / med['main']:.3f}"
              f"  (rounds: {', '.join(f'{v:.0f}' for v in runs[name])})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=4000)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--loop", action="store_true", help="measure the eval loop with the cache off and on")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--main", default=str(ROOT), help="a tree without the cache, the baseline of 'off'")
    args = parser.parse_args()
    if args.loop:
        loop_cost(Path(args.main), args.requests, args.rounds)
        return
    base = args.dir or tempfile.mkdtemp()
    for worker in (files_worker, sqlite_worker):
        results = measure(worker, base, args.entries)
        name = results[0][0]
        writes = sum(r[1] for r in results) / len(results)
        reads = sum(r[2] for r in results) / len(results)
        whole = min(r[3] for r in results)
        print(f"{name:11s} writes {writes:8.0f}/s per process, reads {reads:8.0f}/s, whole {whole}/{args.entries}")


if __name__ == "__main__":
    main()
