"""The README's main job, shrunk: a real model served by `local://`, real HumanEval scoring."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import psutil

from tests.test_serving import needs_model


@needs_model
def test_local_model_runs_human_eval_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    before = {p.pid for p in psutil.process_iter()}
    done = subprocess.run(
        [sys.executable, "-m", "nel", "eval", "run", "--bench", "skills://human-eval", "--model-url",
         "local://smollm2", "--max-problems", "3", "--max-tokens", "96", "--output-dir", str(out),
         "--progress", "plain"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())["human-eval"]["pass@1"]
    assert metrics["num_entries"] == 3
    assert 0.0 <= metrics["passing_base_tests"] <= 100.0
    rows = pd.read_parquet(out / "trajectories.parquet")
    assert len(rows) == 3 and set(rows.error_kind) == {"none"}
    assert (rows.completion_tokens > 0).all() and rows.response.str.len().gt(0).all()
    assert set(rows.finish_reason) <= {"stop", "length"}
    assert all("status" in json.loads(d) for d in rows.details)  # the sandbox really ran each program
    run = json.loads((out / "run.json").read_text())
    assert run["identity"]["model_id"] == "smollm2"
    leftover = [p for p in psutil.process_iter(["cmdline"]) if p.pid not in before
                and "nel.serving" in " ".join(p.info["cmdline"] or [])]  # fmt: skip
    assert not leftover, "the local model server outlived the run"
