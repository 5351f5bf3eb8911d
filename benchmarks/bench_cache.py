"""Response-cache stores: one file per entry (nel.cache) against SQLite in WAL mode.

    python benchmarks/bench_cache.py [--entries 4000] [--dir DIR]

Two processes at once each store the same ``--entries`` entries (the shards-of-one-array case
where both miss) and then read all of them back; entries are the size of a short chat reply
(~1.5 kB). Reported: entries/s per process for the writes and the reads, and whether every
entry read back whole. ``--dir`` picks the file system (run it on the NFS/Lustre mount the
cache would live on; the default is a local temporary directory).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=4000)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
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
