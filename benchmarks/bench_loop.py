"""Eval-loop throughput, latency hiding and memory, each as a ratio measured in one run.

    python benchmarks/bench_loop.py [--requests 20000] [--quick]

1. Zero-latency server, trivial scoring: nel's requests/s (loop + client + Parquet store)
   over a bare aiohttp loop sending the same requests at the same concurrency (64).
2. 50 ms latency, 10,000 requests, concurrency 256: wall time over N*latency/concurrency.
3. Peak RSS of a run of 10k and of 100k requests (each in a fresh process).
The model server runs in its own process so it does not share the client's GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nel import ChatSolver, EvalEnvironment, ModelClient, SeedResult, VerifyResult, run_evaluation  # noqa: E402
from nel.testing.model_server import start_server_process, stop_server_process  # noqa: E402


class TrivialEnv(EvalEnvironment):
    """Scoring that costs nothing, so the measurement is the loop itself."""

    name = "trivial"

    def __init__(self, size: int) -> None:
        self.size = size

    def dataset_size(self) -> int:
        return self.size

    async def seed(self, idx: int) -> SeedResult:
        return SeedResult(expected_answer="42", prompt=f"question {idx}")

    async def verify(self, response: str, expected: Any, **metadata: Any) -> VerifyResult:
        return VerifyResult(reward=1.0 if expected in response else 0.0, extracted_answer=expected)


async def bare_aiohttp(url: str, n: int, concurrency: int) -> float:
    """The baseline: the same POSTs with nothing else around them."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        counter = iter(range(n))

        async def worker() -> None:
            for idx in counter:
                body = {"model": "m", "messages": [{"role": "user", "content": f"question {idx}"}]}
                async with session.post(f"{url}/chat/completions", json=body) as resp:
                    json.loads(await resp.read())

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - t0)


def nel_run(url: str, n: int, concurrency: int, out: Path, loop: str = "asyncio", journal: bool = True) -> float:
    """nel's run_evaluation on the given event loop (the CLI runs it on uvloop); ``journal=False``
    measures what the per-row journal costs."""
    client = ModelClient(url, "m", concurrency=concurrency)
    runner = uvloop.run if loop == "uvloop" else asyncio.run
    t0 = time.perf_counter()
    result = runner(
        run_evaluation(TrivialEnv(n), ChatSolver(client), output_dir=out, concurrency=concurrency,
                       progress="none", reduce=False, journal=journal)  # fmt: skip
    )
    elapsed = time.perf_counter() - t0
    assert result.done == n and result.failed == 0, result
    return n / elapsed


def throughput(n: int, rounds: int = 5) -> dict[str, float]:
    """Medians over interleaved rounds: the 2 cores are shared with the server process."""
    proc, url = start_server_process(["--port", "0", "--no-record"])
    runs: dict[str, list[float]] = {"bare": [], "bare_uvloop": [], "nel": [], "nel_uvloop": [], "nel_uvloop_no_journal": []}
    try:
        asyncio.run(bare_aiohttp(url, 2000, 64))  # warm up both sides
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(rounds):
                runs["bare"].append(asyncio.run(bare_aiohttp(url, n, 64)))
                runs["bare_uvloop"].append(uvloop.run(bare_aiohttp(url, n, 64)))
                runs["nel"].append(nel_run(url, n, 64, Path(tmp) / f"a{i}"))
                runs["nel_uvloop"].append(nel_run(url, n, 64, Path(tmp) / f"u{i}", loop="uvloop"))
                runs["nel_uvloop_no_journal"].append(
                    nel_run(url, n, 64, Path(tmp) / f"j{i}", loop="uvloop", journal=False)
                )
    finally:
        stop_server_process(proc)
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {
        **{f"{k}_rps": round(v) for k, v in med.items()},
        "ratio_asyncio": round(med["nel"] / med["bare"], 3),
        "ratio_cli_uvloop_vs_bare": round(med["nel_uvloop"] / med["bare"], 3),
        "ratio_uvloop_vs_bare_uvloop": round(med["nel_uvloop"] / med["bare_uvloop"], 3),
        "journal_on_vs_off": round(med["nel_uvloop"] / med["nel_uvloop_no_journal"], 3),
    }


def latency_hiding(n: int = 10_000, latency: float = 0.05, concurrency: int = 256) -> dict[str, float]:
    proc, url = start_server_process(["--port", "0", "--no-record", "--latency", str(latency)])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            nel_run(url, n, concurrency, Path(tmp) / "run", loop="uvloop")
            wall = time.perf_counter() - t0
    finally:
        stop_server_process(proc)
    ideal = n * latency / concurrency
    return {"wall_s": wall, "ideal_s": ideal, "ratio": wall / ideal}


def peak_rss(n: int) -> float:
    """Run n requests in a fresh process and return its peak RSS in MB."""
    code = (
        "import sys, resource, tempfile; sys.path.insert(0, %r); sys.path.insert(0, %r);"
        "from bench_loop import nel_run; from pathlib import Path;"
        "d = tempfile.mkdtemp(); nel_run(sys.argv[1], int(sys.argv[2]), 64, Path(d) / 'run');"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    ) % (str(ROOT), str(ROOT / "benchmarks"))
    proc, url = start_server_process(["--port", "0", "--no-record"])
    try:
        out = subprocess.run([sys.executable, "-c", code, url, str(n)], capture_output=True, text=True, check=True)
    finally:
        stop_server_process(proc)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="skip the 100k-request RSS run")
    args = parser.parse_args()
    print("throughput (zero latency, concurrency 64):", json.dumps(throughput(args.requests)))
    print("latency hiding (50 ms, 10k requests, concurrency 256):", json.dumps(latency_hiding()))
    sizes = (10_000,) if args.quick else (10_000, 100_000)
    print("peak RSS MB:", json.dumps({n: round(peak_rss(n), 1) for n in sizes}))
    print(f"(self RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
