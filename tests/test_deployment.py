"""Model servers started by nel (``model.deployment``): config, start-up, health, stop, SLURM.

The deployed command in most tests is the programmable test server
(``python -m nel.testing.model_server``), which starts in well under a second; the SLURM test
needs a running cluster (skips, or fails under NEL_REQUIRE_SLURM=1, like tests/test_slurm.py)
and the last test the embedded model (skips like tests/test_serving.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psutil
import pytest

from nel.backends.base import read_submissions
from nel.deployment import DeploymentError, DeploymentSpec, deployed
from nel.errors import ConfigError
from nel.launch import compose_plan
from nel.runner import run_shard
from nel.spec import ModelSpec, RunSpec
from tests.test_launch import launch
from tests.test_serving import needs_model
from tests.test_slurm import FAST, _why_no_slurm

MOCK_COMMAND = "python -m nel.testing.model_server --port {port}"


def server_processes(marker: str = "nel.testing.model_server") -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if marker in cmdline and "pytest" not in cmdline:
            found.append(proc)
    return found


def deployed_spec(tmp_path: Path, data_dir: Path, command: str = MOCK_COMMAND, **deployment: object) -> RunSpec:
    return RunSpec.from_dict(
        {
            "bench": "skills://gsm8k",
            "model": {
                "url": "deploy://",
                "model_id": "mock",
                "max_retries": 0,
                "deployment": {"command": command, "startup_timeout": 60, **deployment},
            },
            "output_dir": str(tmp_path / "run"),
            "max_problems": 3,
            "data_dir": str(data_dir),
            "concurrency": 4,
        }
    ).validate()


# --------------------------------------------------------------------------------------------
# A run against a deployed server


def test_run_shard_starts_the_deployed_server_and_stops_it(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    before = {p.pid for p in server_processes()}
    spec = deployed_spec(tmp_path, gsm8k_data_dir)
    result = run_shard(spec, progress="none")
    assert result.metrics is not None, result.incomplete
    run_dir = Path(spec.output_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["gsm8k"]["pass@1"]["num_entries"] == 3
    rows = pd.read_parquet(run_dir / "trajectories.parquet")
    assert len(rows) == 3 and set(rows.error_kind) == {"none"}
    assert rows.response.str.contains("boxed").all()  # the test server's default answer

    run = json.loads((run_dir / "run.json").read_text())
    assert run["identity"] == spec.identity() and "url" not in json.dumps(run["identity"])
    # run.json keeps the spec as written, not the address of a server that died with the shard
    assert run["spec"]["model"]["url"] == "deploy://"
    assert run["spec"]["model"]["deployment"]["command"] == MOCK_COMMAND
    log = run_dir / "deployment" / "model-shard-00000-of-00001.log"
    ready = re.search(r"READY (http://127\.0\.0\.1:\d+/v1)", log.read_text())
    assert ready, "the server's output is kept in the run dir"
    served_url = ready.group(1)

    leftover = [p for p in server_processes() if p.pid not in before]
    assert not leftover, f"the deployed server outlived the shard: {leftover}"
    with pytest.raises(OSError):
        urllib.request.urlopen(served_url + "/models", timeout=2)

    # The identity does not depend on how the model is reached: the same run with a fixed URL
    # is the same run (it resumes, finding every row done).
    fixed = RunSpec.from_dict({**spec.to_dict(), "model": {**spec.to_dict()["model"], "url": served_url,
                                                           "deployment": None}})  # fmt: skip
    assert fixed.identity() == spec.identity() and fixed.config_hash() == spec.config_hash()


def test_deployed_yields_a_working_url_and_terminates_the_process_group(tmp_path: Path) -> None:
    # The server runs under a shell-less wrapper that forks it: the whole group must go.
    command = (
        "python -c 'import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))' "
        f"{sys.executable} -m nel.testing.model_server --port {{port}}"
    )
    before = {p.pid for p in server_processes()}
    with deployed(DeploymentSpec(command, startup_timeout=30), log_path=tmp_path / "server.log") as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        with urllib.request.urlopen(url + "/models", timeout=5) as response:
            assert json.loads(response.read())["data"][0]["id"] == "mock-model"
        assert [p for p in server_processes() if p.pid not in before]
    assert not [p for p in server_processes() if p.pid not in before]


def test_a_judge_deployment_is_served_in_the_same_shard(tmp_path: Path) -> None:
    from nel.runner import _served_model
    from nel.sharding import Shard

    deployment = {"command": MOCK_COMMAND, "startup_timeout": 30}
    spec = RunSpec.from_dict({
        "bench": "skills://simpleqa", "output_dir": str(tmp_path / "run"),
        "model": {"url": "http://127.0.0.1:9/v1", "model_id": "m"},
        "judge": {"url": "", "model_id": "judge", "deployment": deployment},
    }).validate()  # fmt: skip
    with _served_model(spec, Shard(1, 2)) as served:
        assert served.model == spec.model
        assert served.judge is not None and served.judge.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(served.judge.url + "/models", timeout=5) as response:
            assert response.status == 200
    assert (tmp_path / "run" / "deployment" / "judge-shard-00001-of-00002.log").exists()


@needs_model
def test_a_local_url_is_served_as_a_deployment_of_nel_serve() -> None:
    """runner serves local:// models through the same lifecycle as any deployment."""
    from nel.serving.launcher import local_deployment
    from nel.serving.server import _parser

    spec = local_deployment("local://smollm2", max_batch_size=4)
    argv = spec.argv(1234, "smollm2")
    assert argv == [sys.executable, "-m", "nel.serving", "local://smollm2", "--host", "127.0.0.1",
                    "--max-batch-size", "4", "--port", "1234", "--exit-with-parent"]  # fmt: skip
    parsed = _parser().parse_args(argv[3:])  # the command is one nel serve accepts
    assert (parsed.model, parsed.port, parsed.max_batch_size, parsed.exit_with_parent) == (
        "local://smollm2", 1234, 4, True,
    )  # fmt: skip
    assert (spec.health_path, spec.base_path, spec.startup_timeout, spec.stop_grace) == ("/v1/models", "/v1", 600, 10)


# --------------------------------------------------------------------------------------------
# Failing servers


def test_server_that_exits_at_once_is_reported_with_its_stderr(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    command = "python -c \"import sys; print('no GPU found: giving up', file=sys.stderr); sys.exit(3)\" {port}"
    started = time.monotonic()
    with pytest.raises(DeploymentError) as caught:
        run_shard(deployed_spec(tmp_path, gsm8k_data_dir, command), progress="none")
    message = str(caught.value)
    assert "exited with code 3" in message and "no GPU found: giving up" in message
    assert time.monotonic() - started < 20
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_server_that_never_becomes_healthy_times_out(tmp_path: Path) -> None:
    command = "python -c \"import time; print('loading weights...', flush=True); time.sleep(300)\" {port}"
    marker = "loading weights"
    started = time.monotonic()
    with pytest.raises(DeploymentError) as caught:
        with deployed(DeploymentSpec(command, startup_timeout=2, stop_grace=2)):
            pytest.fail("never healthy, so never yielded")
    elapsed = time.monotonic() - started
    assert elapsed < 10, elapsed
    message = str(caught.value)
    assert "startup_timeout=2s" in message and "loading weights..." in message
    assert not server_processes(marker), "the server that never came up was stopped"


def test_health_path_that_never_answers_200_times_out(tmp_path: Path) -> None:
    with pytest.raises(DeploymentError, match="/no-such-path did not answer 200"):
        with deployed(DeploymentSpec(MOCK_COMMAND, health_path="/no-such-path", startup_timeout=2)):
            pass


# --------------------------------------------------------------------------------------------
# Configuration


def test_unknown_placeholder_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown placeholder\(s\) \{gpus\}, \{host\}; known: \{port\}"):
        DeploymentSpec("vllm serve {checkpoint} --host {host} --port {port} -tp {gpus}").validate()
    raw = {"bench": "skills://gsm8k", "output_dir": "/tmp/x",
           "model": {"url": "", "model_id": "m", "deployment": {"command": "serve --port {port} {nope}"}}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"model\.deployment\.command has unknown placeholder\(s\) \{nope\}"):
        RunSpec.from_dict(raw).validate()
    with pytest.raises(ConfigError, match="unknown placeholder"):
        with deployed(DeploymentSpec("serve --port {port} {nope}")):
            pass
    with pytest.raises(ConfigError, match=r"has no \{port\}"):
        DeploymentSpec("vllm serve {model}").validate()


def test_deployment_config_validation() -> None:
    base = {"bench": "skills://gsm8k", "output_dir": "/tmp/x"}
    # no URL needed: empty or deploy://
    for url in ("", "deploy://"):
        spec = RunSpec.from_dict({**base, "model": {"url": url, "model_id": "m",
                                                    "deployment": {"command": "s --port {port}"}}}).validate()  # fmt: skip
        assert isinstance(spec.model.deployment, DeploymentSpec)
        assert RunSpec.from_dict(spec.to_dict()) == spec  # run.json round trip
    with pytest.raises(ConfigError, match=r"unknown model\.deployment key\(s\) cmd; valid keys: base_path, checkpoint"):
        RunSpec.from_dict({**base, "model": {"url": "", "model_id": "m", "deployment": {"cmd": "s"}}})
    with pytest.raises(ConfigError, match="leave url empty or deploy://"):
        RunSpec.from_dict({**base, "model": {"url": "local://smollm2", "model_id": "m",
                                             "deployment": {"command": "s --port {port}"}}}).validate()  # fmt: skip
    with pytest.raises(ConfigError, match="url is empty"):
        RunSpec.from_dict({**base, "model": {"url": "", "model_id": "m"}}).validate()
    with pytest.raises(ConfigError, match="tp must be"):
        DeploymentSpec("s --port {port}", tp=0).validate()
    # placeholders and the interpreter
    spec = DeploymentSpec("vllm serve {checkpoint} --port {port} --tensor-parallel-size {tp} --name {model}", tp=4)
    assert spec.argv(8000, "org/model") == [
        "vllm", "serve", "org/model", "--port", "8000", "--tensor-parallel-size", "4", "--name", "org/model",
    ]  # fmt: skip
    assert DeploymentSpec("x {checkpoint} {port}", checkpoint="/ck pt").argv(1, "m")[1] == "/ck"  # shlex-split
    assert DeploymentSpec("nel serve local://smollm2 --port {port}").argv(5)[:3] == [sys.executable, "-m", "nel"]
    # The identity is the served model id: deployment and URL are not part of it.
    plain = ModelSpec(url="http://h:1/v1", model_id="m")
    with_deployment = ModelSpec(url="deploy://", model_id="m", deployment=DeploymentSpec("s --port {port}"))
    assert (RunSpec(bench="skills://gsm8k", model=plain, output_dir="/x").identity()
            == RunSpec(bench="skills://gsm8k", model=with_deployment, output_dir="/x").identity())  # fmt: skip


def test_hydra_model_configs_with_a_deployment() -> None:
    plan = compose_plan(["model=deployed_nel_serve", "output_root=/tmp/unused"])
    deployment = plan.spec.model.deployment
    assert deployment == DeploymentSpec("nel serve local://smollm2 --port {port}", startup_timeout=600)
    assert plan.spec.model.model_id == "smollm2" and plan.spec.model.url == "deploy://"
    assert RunSpec.from_dict(plan.spec.to_dict()) == plan.spec

    vllm = compose_plan(["model=vllm_example", "model.deployment.checkpoint=/ckpt/step-10", "output_root=/tmp/u"])
    assert vllm.spec.model.deployment is not None and vllm.spec.model.deployment.tp == 8
    assert vllm.spec.model.deployment.argv(9000, vllm.spec.model.model_id)[:3] == ["vllm", "serve", "/ckpt/step-10"]

    with pytest.raises(ConfigError, match=r"unknown placeholder\(s\) \{gpu\}"):
        compose_plan(["model=deployed_nel_serve", 'model.deployment.command="serve --port {port} {gpu}"',
                      "output_root=/tmp/unused"])  # fmt: skip
    with pytest.raises(ConfigError, match="startup_tmeout"):
        compose_plan(["model=deployed_nel_serve", "model.deployment.startup_tmeout=3", "output_root=/tmp/u"])


# --------------------------------------------------------------------------------------------
# SLURM: each array task deploys its own server


@pytest.fixture()
def slurm_cluster() -> None:
    reason = _why_no_slurm()
    if reason and os.environ.get("NEL_REQUIRE_SLURM") == "1":
        pytest.fail(f"NEL_REQUIRE_SLURM=1 but {reason}")
    if reason:
        pytest.skip(reason)


@pytest.fixture()
def jobs_to_cancel() -> Iterator[list[Path]]:
    runs: list[Path] = []
    yield runs
    for run_dir in runs:
        ids = [j for s in read_submissions(run_dir) for j in s.job_ids()]
        if ids:
            subprocess.run(["scancel", *ids], check=False, capture_output=True)


@pytest.mark.slurm
def test_slurm_array_tasks_each_deploy_their_server(
    slurm_cluster: None, gsm8k_data_dir: Path, tmp_path: Path, jobs_to_cancel: list[Path]
) -> None:
    overrides = [
        "bench=skills/gsm8k", "model=deployed_nel_serve", f'model.deployment.command="{MOCK_COMMAND}"',
        "model.deployment.startup_timeout=120", "model.model_id=mock", "model.max_retries=0",
        f"data_dir={gsm8k_data_dir}", f"output_root={tmp_path / 'runs'}", "max_problems=6", "concurrency=4",
        "shards=2", *FAST,
    ]  # fmt: skip
    run_dir = compose_plan(overrides).run_dir
    jobs_to_cancel.append(run_dir)
    done = launch(*overrides, "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["gsm8k"]["pass@1"]["num_entries"] == 6
    rows = pd.read_parquet(run_dir / "trajectories.parquet")
    assert sorted(rows.problem_idx) == list(range(6)) and set(rows.error_kind) == {"none"}
    (submission,) = read_submissions(run_dir)
    assert len(submission.tasks) == 2
    for idx in range(2):  # each task started (and logged) its own server
        log = run_dir / "deployment" / f"model-shard-{idx:05d}-of-00002.log"
        assert "READY http://127.0.0.1:" in log.read_text()


# --------------------------------------------------------------------------------------------
# The embedded model as the deployed command


@pytest.mark.local_model
@needs_model
def test_nel_serve_as_the_deployed_command_on_human_eval(tmp_path: Path) -> None:
    spec = RunSpec.from_dict(
        {
            "bench": "skills://human-eval",
            "model": {
                "url": "deploy://",
                "model_id": "smollm2",
                "max_tokens": 96,
                "temperature": 0.0,
                "deployment": {"command": "python -m nel.serving local://smollm2 --port {port}",
                               "startup_timeout": 600},
            },
            "output_dir": str(tmp_path / "run"),
            "max_problems": 1,
        }
    )  # fmt: skip
    before = {p.pid for p in server_processes("nel.serving")}
    result = run_shard(spec, progress="none")
    assert result.metrics is not None, result.incomplete
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["human-eval"]["pass@1"]
    assert metrics["num_entries"] == 1
    rows = pd.read_parquet(tmp_path / "run" / "trajectories.parquet")
    assert set(rows.error_kind) == {"none"} and (rows.completion_tokens > 0).all()
    assert not [p for p in server_processes("nel.serving") if p.pid not in before]


def test_deployment_override_on_a_model_without_one_is_a_clear_config_error() -> None:
    from nel.launch import compose_plan

    with pytest.raises(ConfigError, match=r"null node.*conf/model/\*\.yaml"):
        compose_plan(["bench=skills/gsm8k", "model=openai_compatible",
                      "model.deployment.command='nel serve x --port {port}'"])  # fmt: skip
