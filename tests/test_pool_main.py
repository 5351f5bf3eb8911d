"""The scoring pool never re-runs its caller's script: an unguarded script evaluates once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq

from nel.skills.data import write_jsonl_atomic
from nel.testing.model_server import ModelServer, Rule

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from nel import ChatSolver, ModelClient, run_evaluation
    from nel.environments.skills import SkillsEnvironment

    print("start:", flush=True)
    env = SkillsEnvironment("aime24", data_dir=sys.argv[1], backend="native", scoring_workers=2)
    client = ModelClient(base_url=sys.argv[2], model="my-model", max_retries=0)
    bundle = asyncio.run(run_evaluation(env, ChatSolver(client), n_repeats=2, output_dir=sys.argv[3],
                                        progress="none"))
    asyncio.run(env.aclose())
    print("pass@1:", bundle.metrics["aime24"]["pass@1"]["symbolic_correct"], flush=True)
    """
)


def test_an_unguarded_script_runs_its_evaluation_once(tmp_path: Path):
    rows = [{"id": i, "problem": f"What is {i} + {i}?", "expected_answer": str(2 * i)} for i in range(6)]
    write_jsonl_atomic(tmp_path / "data" / "aime24" / "test.jsonl", rows)
    script = tmp_path / "eval_script.py"
    script.write_text(SCRIPT, encoding="utf-8")
    model = [Rule(match=f"What is {i} + {i}?", content=f"\\boxed{{{2 * i}}}") for i in range(6)]
    with ModelServer(rules=model) as server:
        done = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "data"), server.base_url, str(tmp_path / "run")],
            capture_output=True, text=True, timeout=300, env=os.environ.copy(), check=False,
        )  # fmt: skip
        requests = server.request_count
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("start:") == 1, done.stdout
    assert "pass@1: 100.0" in done.stdout
    assert requests == 12  # 6 problems x 2 repeats, asked once
    parts = sorted((tmp_path / "run").rglob("*.parquet"))
    keys = [(r["problem_idx"], r["repeat"]) for p in parts if "shards" in p.parts
            for r in pq.read_table(p, columns=["problem_idx", "repeat"]).to_pylist()]  # fmt: skip
    assert sorted(keys) == [(i, r) for i in range(6) for r in range(2)]
