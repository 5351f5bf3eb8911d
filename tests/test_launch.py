"""nel.launch without SLURM: config composition, validation, the basic (in-process) launcher,
`nel status` / `nel resume --local` / `nel sweep` (mode: local) against a real local model server.

The SLURM half of the story (array jobs, reducer job, scancel, requeue) is tests/test_slurm.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from nel.backends.base import ClusterSettings
from nel.backends.slurm import _expand_job_id
from nel.cluster import EXIT_COMPLETE, EXIT_NEEDS_RESUME, resume_main, status_main
from nel.errors import ConfigError
from nel.launch import compose_plan, conf_dir, normalize_overrides
from nel.reconcile import run_status
from nel.skills.data import read_jsonl
from nel.spec import ModelSpec, RunSpec
from nel.sweep import SweepFile, sweep_main
from nel.testing.model_server import ModelServer, Rule

REPO = Path(__file__).resolve().parents[1]
SECRET = "sk-launch-test-secret-never-on-disk-8f3a"
BENCHMARKS = ("gsm8k", "math-500", "aime24", "aime25", "hmmt_feb25", "gpqa", "mmlu", "mmlu-pro", "simpleqa",
              "human-eval", "ifbench", "ifeval")  # fmt: skip
N_PROBLEMS = 12


def launch(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m nel.launch ARGS`` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "nel.launch", *args], check=False, capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )  # fmt: skip


class Answerer:
    """Answers GSM8K problems over HTTP: right for even problem indices, wrong for odd ones;
    HTTP 500 for the problem indices in ``fail`` (mutable while the server runs)."""

    def __init__(self, data_dir: Path, n: int) -> None:
        rows = read_jsonl(data_dir / "gsm8k" / "test.jsonl")[:n]
        self.problems = [(i, row["problem"], row["expected_answer"]) for i, row in enumerate(rows)]
        self.fail: set[int] = set()
        self.delay = 0.0

    def __call__(self, body: dict[str, Any]) -> Rule:
        text = body["messages"][-1]["content"]
        for idx, problem, expected in self.problems:
            if problem in text:
                if idx in self.fail:
                    return Rule(status=500, delay=self.delay)
                value = expected if idx % 2 == 0 else -1
                return Rule(content=f"Step by step... so it is \\boxed{{{value}}}.", delay=self.delay)
        return Rule(status=400, message="unknown problem")


@pytest.fixture()
def answerer(gsm8k_data_dir: Path) -> Answerer:
    return Answerer(gsm8k_data_dir, N_PROBLEMS)


@pytest.fixture()
def server(answerer: Answerer) -> Iterator[ModelServer]:
    with ModelServer(answer_fn=answerer) as srv:
        yield srv


def run_overrides(srv: ModelServer, data_dir: Path, root: Path, *extra: str) -> list[str]:
    return [
        "bench=skills/gsm8k", f"model.url={srv.base_url}", "model.model_id=mock", f"data_dir={data_dir}",
        f"output_root={root}", f"max_problems={N_PROBLEMS}", "model.max_retries=0", "concurrency=4", *extra,
    ]  # fmt: skip


def scores(metrics: dict[str, Any]) -> dict[str, Any]:
    """metrics.json without its timing entries (wall-clock seconds differ between runs)."""
    if isinstance(metrics, dict):
        return {k: scores(v) for k, v in metrics.items() if "seconds" not in k}
    return metrics


def unsharded_metrics(plan_overrides: list[str], out: Path) -> dict[str, Any]:
    """The reference: the same config as one shard through the core, no launcher involved."""
    from nel.runner import run_shard

    spec = compose_plan([*plan_overrides, f"output_dir={out}", "hydra/launcher=basic"]).spec
    result = run_shard(spec, shard_idx=0, total_shards=1, progress="none")
    assert result.metrics is not None, result.incomplete
    return json.loads((out / "metrics.json").read_text())


# --------------------------------------------------------------------------------------------
# Composition and validation


def test_every_benchmark_has_a_config_that_selects_its_uri() -> None:
    found = {p.stem for p in (conf_dir() / "bench" / "skills").glob("*.yaml")}
    assert set(BENCHMARKS) <= found
    for name in sorted(found):
        plan = compose_plan([f"bench=skills/{name}", "output_root=/tmp/unused"])
        assert plan.spec.bench == f"skills://{name}"


def test_composed_config_is_exactly_one_runspec() -> None:
    plan = compose_plan([
        "bench=skills/aime24", "model.url=http://10.0.0.5:8000/v1", "model.model_id=Qwen/Qwen3-8B",
        "model.temperature=0.6", "model.top_p=0.95", "+model.extra_body.chat_template_kwargs.enable_thinking=false",
        "repeats=8", "max_problems=10", "system_prompt=Be brief.", "shards=4", "output_dir=/tmp/some/run",
    ])  # fmt: skip
    expected = RunSpec(
        bench="skills://aime24",
        model=ModelSpec(url="http://10.0.0.5:8000/v1", model_id="Qwen/Qwen3-8B", temperature=0.6, top_p=0.95,
                        extra_body={"chat_template_kwargs": {"enable_thinking": False}}),
        output_dir="/tmp/some/run", repeats=8, max_problems=10, system_prompt="Be brief.",
    )  # fmt: skip
    assert plan.spec == expected
    assert plan.total_shards == 4 and plan.backend == "slurm"
    # The schema is derived from RunSpec: every field of it is a key of the composed config.
    assert RunSpec.from_dict(plan.spec.to_dict()) == plan.spec


def test_shards_spellings() -> None:
    assert normalize_overrides(["shards=8"]) == ['shards="8"']
    assert normalize_overrides(["shards=13"]) == ["shards.count=13"]
    assert normalize_overrides(["bench=skills://gpqa", "--wait", "--dry-run"]) == [
        "bench=skills/gpqa", "wait=true", "dry_run=true",
    ]  # fmt: skip
    # --multirun sweeps: each option is checked; a list of counts sweeps shards.count
    assert normalize_overrides(["bench=skills/gsm8k,skills/aime24", "shards=2,3"]) == [
        "bench=skills/gsm8k,skills/aime24", "shards.count=2,3",
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="unknown bench 'skills/aime2'"):
        normalize_overrides(["bench=skills/gsm8k,skills/aime2"])
    assert compose_plan(["shards=8"]).total_shards == 8
    assert compose_plan(["shards=13"]).total_shards == 13


def test_misspelt_options_get_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"unknown bench 'skills/gsm8kk'; did you mean 'skills/gsm8k'"):
        normalize_overrides(["bench=skills/gsm8kk"])
    with pytest.raises(ConfigError, match=r"unknown cluster 'defualt'; did you mean 'default'"):
        normalize_overrides(["cluster=defualt"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["repeat=3"], "repeat=3: no key 'repeat'; did you mean 'repeats'?"),
        (["model.temprature=0.5"], "no key 'model.temprature'; did you mean 'model.temperature'?"),
        (["repeats=1,2"], "Ambiguous value for argument 'repeats=1,2'"),
        (["backend=slrum"], "unknown backend; did you mean 'slurm'?"),
        (["repeats=abc"], "could not be converted to Integer"),
        (["repeats=0"], "repeats must be >= 1 and <= 10000, got 0"),
        (["model=openai_compatible"], "model.model_id is not set: add model.model_id=..."),
        (["model.url=ftp://x"], "must start with http://, https:// or local://"),
        (["shards.count=0"], "shards.count must be >= 1"),
        (["shards.policy=random"], "shards.policy 'random' is not one of contiguous"),
        (["+cluster.additional.time=5"], "cluster.additional sets time, which nel manages itself"),
        (["cluster.time_min=1", "cluster.signal_delay_s=90"], "must be shorter than cluster.time_min"),
        (["bench=skills/gsm8kk"], "did you mean 'skills/gsm8k'"),
    ],
)
def test_bad_input_is_refused_with_a_message_that_names_it(
    args: list[str], message: str, tmp_path: Path
) -> None:
    done = launch(*args, f"output_root={tmp_path}", "--dry-run")
    assert done.returncode == 2, done.stdout + done.stderr  # ExitCode.USAGE
    # one line, as docs/cli.md promises: no Hydra report, no traceback
    assert done.stderr.startswith("nel: error: ") and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr
    assert not any(tmp_path.iterdir()), "nothing may be created for a refused config"


def test_unknown_key_without_dry_run_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = launch("repeat=4", f"output_root={tmp_path}")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [
        done.stderr.strip()
    ] and "no key 'repeat'; did you mean 'repeats'?" in done.stderr


def test_dry_run_prints_the_submission_and_creates_nothing(tmp_path: Path) -> None:
    done = launch("bench=skills/mmlu", "shards=8", "cluster.array_parallelism=3", f"output_root={tmp_path}",
                  "cluster=example_site", "--dry-run")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "sbatch --array=0-7%3 --time=720 --cpus-per-task=4 --mem=16384M --partition=cpu" in done.stdout
    assert "--dependency=afterany:<array job>" in done.stdout
    assert "module load python/3.11" in done.stdout
    assert not any(tmp_path.iterdir())


def test_dry_run_of_the_local_backend_says_what_it_would_run_here(tmp_path: Path) -> None:
    for backend in ("hydra/launcher=basic", "backend=local"):
        done = launch("bench=skills/gsm8k", "shards=4", f"output_root={tmp_path}", backend, "--dry-run")
        assert done.returncode == 0, done.stderr
        assert "backend:  local" in done.stdout and "sbatch" not in done.stdout
        assert "local:    shard(s) 0-3 of 4 in this process, one after another, then the reducer" in done.stdout
        assert not any(tmp_path.iterdir())


def test_help_lists_every_option_in_numeric_order_and_the_launchers() -> None:
    done = launch("--help")
    assert done.returncode == 0, done.stderr
    lines: dict[str, str] = {}
    for line in done.stdout.splitlines():  # the groups come first, the config after them
        lines.setdefault(line.split(":", 1)[0].strip(), line)
    assert "1*, 2, 4, 8, 16, 32, 64" in lines["shards"]
    assert "nel_slurm* (backend slurm), basic (backend local)" in lines["hydra/launcher"]
    assert "skills/gsm8k*" in lines["bench"] and "repeats: 1" in done.stdout  # the config follows


def test_a_clashing_run_dir_names_the_launcher_spelling_and_overwrite_starts_over(
    server: ModelServer, gsm8k_data_dir: Path, tmp_path: Path
) -> None:
    from nel.runner import open_spec_run

    overrides = run_overrides(server, gsm8k_data_dir, tmp_path / "runs")
    first = compose_plan([*overrides, "shards=2"])
    open_spec_run(first.spec, first.total_shards)  # a run of 2 shards; the shard count is not in the hash
    assert compose_plan([*overrides, "shards=3"]).run_dir == first.run_dir

    clash = launch(*overrides, "shards=3", "hydra/launcher=basic")
    assert clash.returncode == 2 and clash.stderr.count("\n") == 1, clash.stderr
    assert "total_shards" in clash.stderr and "output_dir=..., or --overwrite" in clash.stderr
    assert "--output-dir" not in clash.stderr

    done = launch(*overrides, "shards=3", "hydra/launcher=basic", "--overwrite")
    assert done.returncode == 0, done.stderr
    assert json.loads((first.run_dir / "run.json").read_text())["total_shards"] == 3
    assert (first.run_dir / "metrics.json").exists()


def test_run_dir_follows_the_config_hash() -> None:
    base = ["bench=skills/gsm8k", "output_root=/tmp/r"]
    one = compose_plan(base).run_dir
    assert one.parent == Path("/tmp/r") and one.name.startswith("gsm8k__smollm2__")
    assert compose_plan([*base, "model.max_retries=9", "concurrency=3", "shards=4"]).run_dir == one
    assert compose_plan([*base, "repeats=2"]).run_dir != one
    assert compose_plan([*base, "model.temperature=0.7"]).run_dir != one


def test_cluster_settings_reject_unknown_keys_listing_the_valid_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown cluster key\(s\) partiton; valid keys: account, additional"
    ):
        ClusterSettings.from_dict({"partiton": "gpu"})
    with pytest.raises(ConfigError, match=r"unknown cluster.reducer key\(s\) gpus"):
        ClusterSettings.from_dict({"reducer": {"gpus": 1}})


def test_pending_array_ids_are_expanded() -> None:
    assert _expand_job_id("17_[2-4,7%2]") == ["17_2", "17_3", "17_4", "17_7"]
    assert _expand_job_id("17_3") == ["17_3"]
    assert _expand_job_id("18") == ["18"]


# --------------------------------------------------------------------------------------------
# The basic launcher, status and resume against a real model server (no SLURM)


def test_basic_launcher_matches_an_unsharded_run_and_keeps_no_secret(
    server: ModelServer, gsm8k_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = run_overrides(server, gsm8k_data_dir, tmp_path / "runs", "repeats=2")
    reference = unsharded_metrics(overrides, tmp_path / "reference")
    requests_before = server.request_count

    done = launch(*overrides, "shards=3", "hydra/launcher=basic", env={"NEL_API_KEY": SECRET})
    assert done.returncode == 0, done.stderr
    run_dir = compose_plan([*overrides, "shards=3"]).run_dir
    assert scores(json.loads((run_dir / "metrics.json").read_text())) == scores(reference)
    assert server.request_count - requests_before == N_PROBLEMS * 2
    # The key reached the server, and no file of the run holds it.
    assert {r.headers.get("authorization") for r in server.requests[requests_before:]} == {f"Bearer {SECRET}"}
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert status_main([str(run_dir)]) == EXIT_COMPLETE
    capsys.readouterr()
    assert status_main([str(run_dir), "--wait", "--poll", "0.1"]) == EXIT_COMPLETE
    assert (run_dir / "report.txt").read_text().strip() in capsys.readouterr().out, "--wait prints the report"

    again = launch(*overrides, "shards=3", "hydra/launcher=basic")
    assert again.returncode == 0 and "already complete" in again.stdout
    assert server.request_count - requests_before == N_PROBLEMS * 2, "a complete run must not be rerun"


def test_failed_shard_is_reported_then_resumed_locally(
    server: ModelServer,
    answerer: Answerer,
    gsm8k_data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    overrides = run_overrides(server, gsm8k_data_dir, tmp_path / "runs", "shards=3")
    answerer.fail = {5, 6}  # problems 4-7 are shard 1 of 3
    done = launch(*overrides, "hydra/launcher=basic")
    assert done.returncode == 1
    assert "incomplete" in done.stderr
    run_dir = compose_plan(overrides).run_dir
    assert not (run_dir / "metrics.json").exists()

    status = run_status(run_dir, with_jobs=False)
    assert [s.state for s in status.shards] == ["done", "failed", "done"]
    assert "2 row(s) failed after their retries" in (status.shards[1].detail or "")
    capsys.readouterr()
    assert status_main([str(run_dir), "--json"]) == EXIT_NEEDS_RESUME
    shown = json.loads(capsys.readouterr().out)
    assert [s["state"] for s in shown["shards"]] == ["done", "failed", "done"]

    answerer.fail = set()
    before = server.request_count
    assert resume_main([str(run_dir), "--local"]) == EXIT_COMPLETE
    assert server.request_count - before == 2, "only shard 1's two failed rows are asked again"
    reference = unsharded_metrics(
        run_overrides(server, gsm8k_data_dir, tmp_path / "runs"), tmp_path / "reference"
    )
    assert scores(json.loads((run_dir / "metrics.json").read_text())) == scores(reference)
    assert resume_main([str(run_dir), "--local"]) == EXIT_COMPLETE  # nothing left to do


def test_status_of_a_run_whose_shards_never_started(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nel.runner import open_spec_run

    plan = compose_plan(["bench=skills/gsm8k", f"output_root={tmp_path}", "shards=2"])
    open_spec_run(plan.spec, plan.total_shards)
    assert [s.state for s in run_status(plan.run_dir).shards] == ["missing", "missing"]
    assert status_main([str(plan.run_dir)]) == EXIT_NEEDS_RESUME
    assert f"nel resume {plan.run_dir}" in capsys.readouterr().out
    assert status_main([str(tmp_path / "nope")]) == 2


# --------------------------------------------------------------------------------------------
# nel sweep, local mode


def write_sweep(path: Path, srv: ModelServer, data_dir: Path, backend: str, *common: str) -> Path:
    extra = "".join(f", {c}" for c in common)
    path.write_text(
        f"""
name: test-sweep
output_root: runs
results: runs/results.parquet
backend: {backend}
common: [shards=2, "model.url={srv.base_url}", "data_dir={data_dir}", max_problems={N_PROBLEMS}, concurrency=4{extra}]
models:
  mock: [model.model_id=mock]
benchmarks: [gsm8k]
settings:
  greedy: [repeats=1]
  sampled: [repeats=2, model.temperature=0.7]
"""
    )
    return path


def sweep_json(sweep_file: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """``nel sweep FILE --json``: its exit code and the action of each run, in grid order."""
    capsys.readouterr()
    code = sweep_main([str(sweep_file), "--json"])
    return code, [json.loads(line)["action"] for line in capsys.readouterr().out.splitlines()]


def test_local_sweep_twice_runs_each_config_once(
    server: ModelServer, gsm8k_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep_file = write_sweep(tmp_path / "sweep.yaml", server, gsm8k_data_dir, "local")
    assert sweep_json(sweep_file, capsys) == (0, ["collected", "collected"])
    requests = server.request_count
    assert requests == N_PROBLEMS * 3

    assert sweep_json(sweep_file, capsys) == (0, ["complete", "complete"])
    assert server.request_count == requests

    table = pq.read_table(tmp_path / "runs" / "results.parquet").to_pylist()
    assert {row["setting"] for row in table} == {"greedy", "sampled"}
    greedy = [
        r
        for r in table
        if r["setting"] == "greedy" and r["mode"] == "pass@1" and r["metric"] == "symbolic_correct"
    ]
    assert len(greedy) == 1 and greedy[0]["value"] == pytest.approx(50.0)  # even problems are answered right
    assert len({(r["config_hash"], r["mode"], r["metric"]) for r in table}) == len(table)


def test_sweep_file_errors_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: [a]\n")
    assert sweep_main([str(bad)]) == 2
    assert f"{bad}: unknown key(s) model" in capsys.readouterr().err
    assert sweep_main([str(tmp_path / "missing.yaml")]) == 2
    bad.write_text("name: x\nmodels: [a]\nbenchmarks: [gsm8k]\nbackend: slrum\n")
    assert sweep_main([str(bad)]) == 2
    assert "backend must be one of local, slurm, got 'slrum'" in capsys.readouterr().err
    old = tmp_path / "old.yaml"  # sweep files from before backends say mode:
    old.write_text("name: x\nmodels: [a]\nbenchmarks: [gsm8k]\nmode: local\n")
    assert SweepFile.load(old).backend == "local"


def test_launch_plan_record_has_no_secret_fields() -> None:
    plan = compose_plan(
        ["bench=skills/gsm8k", "model=openai_compatible", "model.model_id=gpt-x", "output_root=/tmp/r"]
    )
    assert plan.spec.model.api_key_env == "OPENAI_API_KEY"
    record = json.dumps(plan.record())
    assert "OPENAI_API_KEY" not in record  # the record holds cluster settings only
    assert dataclasses.asdict(plan.settings) == plan.record()["cluster"]


def test_both_entry_points_send_the_same_sampling(tmp_path: Path) -> None:
    """`nel eval run` and `python -m nel.launch` build one RunSpec with one set of defaults, so the
    same evaluation gets the same identity (run id) and the same request body either way."""
    from nel.cli import _parser, _spec_from_args

    url = "http://127.0.0.1:8000/v1"
    plan = compose_plan(["bench=skills/gsm8k", f"output_root={tmp_path}", "model=openai_compatible",
                         "model.model_id=m", f"model.url={url}"])  # fmt: skip
    args = _parser().parse_args(["eval", "run", "--bench", "skills://gsm8k", "--model-url", url,
                                 "--model-id", "m", "--output-dir", str(tmp_path / "cli")])  # fmt: skip
    cli = _spec_from_args(args)
    assert cli.model.sampling() == plan.spec.model.sampling() == {"temperature": 0.0}
    ident_cli, ident_launch = cli.identity(), plan.spec.identity()
    assert ident_cli["sampling"] == ident_launch["sampling"], (ident_cli, ident_launch)
