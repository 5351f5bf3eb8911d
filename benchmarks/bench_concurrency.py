"""``--concurrency auto`` against the best fixed concurrency, on servers with a known peak.

    python benchmarks/bench_concurrency.py [--requests 2000] [--peak 16] [--latency 0.05]

Two test-server processes (``nel.testing.model_server``), each with its throughput peak at
``--peak`` requests in flight:

* ``queue``: latency stretches by (n/peak)^2 above the peak (a server that queues): requests/s
  rise to the peak and fall beyond it. Only the latency signal can find it.
* ``429``: a request above the peak gets 429 with Retry-After: 1 (a rate-limited API).

For each, requests/s of ModelClient at fixed concurrencies (a sweep around the peak) and with
the adaptive limit (``AdaptiveLimit``, 256 workers), the same requests; the ratio adaptive /
best fixed is the figure (target >= 0.9).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nel.client import ModelClient  # noqa: E402
from nel.concurrency import AdaptiveLimit  # noqa: E402
from nel.testing.model_server import start_server_process, stop_server_process  # noqa: E402

MESSAGES = [{"role": "user", "content": "What is 2+2?"}]


async def _run(url: str, requests: int, workers: int, limiter: AdaptiveLimit | None) -> float:
    client = ModelClient(url, "m", concurrency=workers, max_retries=100, backoff_base=0.05,
                         backoff_max=1.0, limiter=limiter)  # fmt: skip
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await client.chat(MESSAGES)

    async with client:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        return requests / (time.perf_counter() - started)


def scenario(name: str, server_args: list[str], requests: int, fixed: list[int]) -> float:
    proc, url = start_server_process(["--no-record", *server_args])
    try:
        rates = {c: asyncio.run(_run(url, requests, c, None)) for c in fixed}
        limiter = AdaptiveLimit(256)
        adaptive = asyncio.run(_run(url, requests, 256, limiter))
    finally:
        stop_server_process(proc)
    best = max(rates, key=rates.__getitem__)
    ratio = adaptive / rates[best]
    print(f"{name}: fixed " + ", ".join(f"{c}: {r:.0f}" for c, r in rates.items()) + " req/s")
    print(f"{name}: adaptive {adaptive:.0f} req/s (limit ended at {int(limiter.limit)}, "
          f"range {min(v for _, v in limiter.history)}-{max(v for _, v in limiter.history)}); "
          f"best fixed {best}: {rates[best]:.0f} req/s; ratio {ratio:.2f}")  # fmt: skip
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--peak", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    p = args.peak
    fixed = sorted({max(1, p // 2), p * 3 // 4, p, p * 5 // 4, p * 3 // 2, p * 2, p * 4})
    common = ["--latency", str(args.latency)]
    scenario("queue", [*common, "--peak-concurrency", str(p)], args.requests, fixed)
    scenario("429", [*common, "--max-concurrency", str(p)], args.requests, fixed)


if __name__ == "__main__":
    main()
