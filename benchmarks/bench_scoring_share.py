"""How much of a GSM8K eval's wall time is spent waiting on math scoring.

    python benchmarks/bench_scoring_share.py [--repeats 4] [--sources ../shared/data/sources]

GSM8K is prepared through the real download path from the upstream file served over
loopback; a zero-latency model server (its own process) answers every problem with a
realistic boxed response (half right). The same run is timed twice at concurrency 64: with
nel's math scorer (process pool, math-verify), and with a scorer that does nothing. The
share of wall time scoring costs is 1 - trivial/real; near 0 means scoring is never the
bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.server
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nel import ChatSolver, ModelClient, VerifyResult, run_evaluation
from nel.environments.skills import SkillsEnvironment
from nel.skills.catalog import get_benchmark
from nel.skills.data import read_jsonl
from nel.skills.prepare import prepare
from nel.testing.model_server import start_server_process, stop_server_process


class TrivialScoring(SkillsEnvironment):
    async def verify(self, response: str, expected: Any, **metadata: Any) -> VerifyResult:
        return VerifyResult(reward=0.0, scores={"symbolic_correct": 0.0})


def serve_dir(directory: Path) -> str:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def rules_for(rows: list[dict]) -> dict:
    rules = []
    for i, row in enumerate(rows):
        answer = row["expected_answer"] if i % 2 == 0 else -7
        text = (f"Let's compute step by step. First, we find the parts. Then we add them up: "
                f"the result is {answer}. Therefore the final answer is \\boxed{{{answer}}}.")  # fmt: skip
        rules.append({"match": row["problem"][:120], "content": text})
    return {"rules": rules}


def timed(env: SkillsEnvironment, url: str, repeats: int, out: Path) -> tuple[float, dict]:
    client = ModelClient(url, "m", concurrency=64)
    t0 = time.perf_counter()
    result = asyncio.run(run_evaluation(env, ChatSolver(client), n_repeats=repeats, output_dir=out,
                                        progress="none", concurrency=64))  # fmt: skip
    wall = time.perf_counter() - t0
    asyncio.run(env.aclose())
    return wall, result.metrics or {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--sources", type=Path, default=ROOT.parent / "shared" / "data" / "sources")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        prepare(get_benchmark("gsm8k"), data, mirror=serve_dir(args.sources), show_progress=False)
        rows = read_jsonl(data / "gsm8k" / "test.jsonl")
        rules = Path(tmp) / "rules.json"
        rules.write_text(json.dumps(rules_for(rows)))
        proc, url = start_server_process(["--port", "0", "--no-record", "--rules", str(rules)])
        try:
            real, metrics = timed(SkillsEnvironment("gsm8k", data_dir=data), url, args.repeats, Path(tmp) / "a")
            trivial, _ = timed(TrivialScoring("gsm8k", data_dir=data), url, args.repeats, Path(tmp) / "b")
        finally:
            stop_server_process(proc)
    n = len(rows) * args.repeats
    print(json.dumps({
        "requests": n, "real_scoring_s": round(real, 2), "trivial_scoring_s": round(trivial, 2),
        "real_rps": round(n / real), "trivial_rps": round(n / trivial),
        "scoring_share_of_wall": round(max(0.0, 1 - trivial / real), 3),
        "symbolic_correct": metrics["gsm8k"]["pass@1"]["symbolic_correct"],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
