"""Every benchmark nel can run has its Hydra config: ``python -m nel.launch bench=skills/NAME`` works
for each runnable catalog row, and every config names a benchmark of the catalog."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nel.launch import compose_plan, conf_dir
from nel.skills.catalog import CATALOG

RUNNABLE = sorted(name for name, b in CATALOG.items() if b.not_runnable is None and b.scoring is not None)
CONFIGS = sorted(p.stem for p in (conf_dir() / "bench" / "skills").glob("*.yaml"))


def test_every_runnable_benchmark_has_a_config():
    missing = [name for name in RUNNABLE if name not in CONFIGS]
    assert not missing, f"runnable but no conf/bench/skills/<name>.yaml: {missing}"
    assert {"arc-challenge", "triviaqa", "hle"} <= set(RUNNABLE)


@pytest.mark.parametrize("name", CONFIGS)
def test_each_config_selects_its_catalog_benchmark(name: str):
    assert name in CATALOG, f"conf/bench/skills/{name}.yaml names no catalog benchmark"
    plan = compose_plan([f"bench=skills/{name}", "hydra/launcher=basic", "output_root=/tmp/unused"])
    assert plan.spec.bench == f"skills://{name}"
    assert plan.backend == "local"


def test_launch_dry_run_of_a_new_benchmark(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "nel.launch", "bench=skills/triviaqa", "hydra/launcher=basic",
         f"output_root={tmp_path}", "--dry-run"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "bench:    skills://triviaqa" in done.stdout
    assert not any(tmp_path.iterdir())
