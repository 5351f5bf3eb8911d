"""Throughput of the embedded local model server: N concurrent requests vs one at a time.

Starts ``python -m nel.serving local://smollm2`` with ``start_local_server`` (as
``nel eval run --model-url local://smollm2`` does), sends the same prompts once
sequentially and once from ``--concurrency`` workers that each send their next prompt as
soon as the previous answer arrives (how the eval loop drives a server), and prints total
completion tokens/s for both and their ratio. Greedy decoding, so both passes generate the
same tokens.

    .venv/bin/python benchmarks/bench_local_batching.py                 # 16 prompts, c=8, 64 tokens
    .venv/bin/python benchmarks/bench_local_batching.py --concurrency 8 16 --max-tokens 128
    .venv/bin/python benchmarks/bench_local_batching.py --base-url http://127.0.0.1:8000/v1

The machine's load average is printed with the result: other processes competing for the
cores change absolute numbers a lot, the ratio much less.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nel.serving import start_local_server

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how photosynthesis works.",
    "Describe the water cycle step by step.",
    "Write a poem about autumn leaves.",
    "What are the main causes of the French Revolution?",
    "Explain the difference between a list and a tuple in Python.",
    "Give me a recipe for pancakes.",
    "Describe a typical day of a honeybee.",
    "Why is the sky blue? Explain in detail.",
    "Write a letter to a friend about a trip to the mountains.",
    "Explain what a black hole is.",
    "List ten tips for learning a new language and explain each.",
    "Describe the plot of a mystery novel you would like to write.",
    "How does a car engine work?",
    "Explain the rules of chess to a beginner.",
    "Write a dialogue between a cat and a dog.",
]


async def _one(session: aiohttp.ClientSession, url: str, prompt: str, max_tokens: int) -> tuple[int, float]:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0}
    started = time.perf_counter()
    async with session.post(f"{url}/chat/completions", json=body) as resp:
        data = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {data}")
    return data["usage"]["completion_tokens"], time.perf_counter() - started


async def run_pass(url: str, prompts: list[str], max_tokens: int, concurrency: int) -> dict:
    """Send every prompt with at most ``concurrency`` in flight; return totals."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for prompt in prompts:
        queue.put_nowait(prompt)
    tokens: list[int] = []
    latencies: list[float] = []
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker() -> None:
            while not queue.empty():
                prompt = queue.get_nowait()
                n, latency = await _one(session, url, prompt, max_tokens)
                tokens.append(n)
                latencies.append(latency)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    total = sum(tokens)
    return {
        "concurrency": concurrency,
        "requests": len(tokens),
        "completion_tokens": total,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(total / wall, 1),
        "mean_latency_s": round(sum(latencies) / len(latencies), 2),
    }


async def bench(url: str, args: argparse.Namespace) -> list[dict]:
    """Each round runs every concurrency level once; keep each level's best round."""
    prompts = (PROMPTS * ((args.prompts + len(PROMPTS) - 1) // len(PROMPTS)))[: args.prompts]
    await run_pass(url, prompts[:2], 4, 2)  # warm-up
    best: dict[int, dict] = {}
    for _ in range(args.repeat):
        for c in [1, *args.concurrency]:
            result = await run_pass(url, prompts, args.max_tokens, c)
            if c not in best or result["tokens_per_s"] > best[c]["tokens_per_s"]:
                best[c] = result
    return [best[c] for c in [1, *args.concurrency]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="local://smollm2")
    parser.add_argument("--base-url", help="use a running server instead of starting one")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the best round per level is kept")
    parser.add_argument("--max-batch-size", type=int, default=None, help="server --max-batch-size")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        if args.base_url:
            url = args.base_url.rstrip("/")
            startup = None
        else:
            server = stack.enter_context(start_local_server(args.model, max_batch_size=args.max_batch_size))
            url, startup = server.base_url, server.startup_seconds
        load_before = os.getloadavg()[0]
        results = asyncio.run(bench(url, args))
        load_after = os.getloadavg()[0]

    base = results[0]["tokens_per_s"]
    print(
        f"model {args.model}  prompts {args.prompts}  max_tokens {args.max_tokens}  cores {os.cpu_count()}"
        + (f"  server startup {startup:.1f}s" if startup is not None else "")
    )
    print(f"best of {args.repeat} round(s); load average before/after: {load_before:.2f} / {load_after:.2f}")
    print(
        f"{'concurrency':>11} {'requests':>8} {'tokens':>7} {'wall s':>7} {'tok/s':>7} {'mean lat s':>10} {'speedup':>8}"
    )
    for r in results:
        print(
            f"{r['concurrency']:>11} {r['requests']:>8} {r['completion_tokens']:>7} {r['wall_s']:>7} "
            f"{r['tokens_per_s']:>7} {r['mean_latency_s']:>10} {r['tokens_per_s'] / base:>7.2f}x"
        )
    if args.json:
        print(json.dumps({"results": results, "load_avg": [load_before, load_after]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
