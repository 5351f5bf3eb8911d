"""Real SLURM: array job + reducer through submitit, failure and resume, scancel, requeue, sweeps.

Needs a running cluster whose nodes can reach 127.0.0.1 of this machine (the single-node
cluster of tools/slurm_up.sh, which CI starts before pytest) and working accounting
(`sacct`), which submitit relies on. Without them every test here skips, saying why, or
fails when NEL_REQUIRE_SLURM=1 (as in CI, where a missing cluster is a broken setup).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from nel.backends.base import read_submissions
from nel.backends.slurm import log_paths
from nel.cluster import EXIT_COMPLETE, EXIT_IN_PROGRESS, status_main
from nel.launch import compose_plan
from nel.reconcile import run_status
from nel.testing.model_server import ModelServer
from tests.test_launch import (
    SECRET,
    Answerer,
    launch,
    run_overrides,
    scores,
    sweep_json,
    unsharded_metrics,
    write_sweep,
)  # fmt: skip

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
N_PROBLEMS = 12  # the same as test_launch (its helpers use it)
FAST = [
    "cluster.time_min=10",
    "cluster.signal_delay_s=60",
    "cluster.mem_gb=0.5",
    "cluster.reducer.mem_gb=0.5",
    "poll_s=1",
]


def _why_no_slurm() -> str | None:
    if shutil.which("sinfo") is None:
        return "sinfo not found: no SLURM on this machine (tools/slurm_up.sh starts a single-node cluster)"
    try:
        info = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], check=False, capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return "sinfo timed out: slurmctld is not answering"
    if info.returncode != 0:
        return f"sinfo failed: {info.stderr.strip()} (is slurmctld running? tools/slurm_up.sh)"
    states = [s.strip() for s in info.stdout.split()]
    if not any(s.startswith(("idle", "mix")) for s in states):
        return f"no idle SLURM node (sinfo states: {', '.join(states) or 'none'})"
    if shutil.which("sacct") is None:
        return "sacct not found: submitit needs SLURM accounting (slurmdbd)"
    acct = subprocess.run(
        ["sacct", "-n", "-X", "-S", "now-1minutes"], check=False, capture_output=True, text=True, timeout=20
    )
    if acct.returncode != 0:
        return f"sacct does not work ({acct.stderr.strip()}); start slurmdbd (tools/slurm_up.sh)"
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster() -> None:
    reason = _why_no_slurm()
    if reason and os.environ.get("NEL_REQUIRE_SLURM") == "1":
        pytest.fail(f"NEL_REQUIRE_SLURM=1 but {reason}")  # CI started a cluster: not finding it is a failure
    if reason:
        pytest.skip(reason)


@pytest.fixture()
def answerer(gsm8k_data_dir: Path) -> Answerer:
    return Answerer(gsm8k_data_dir, N_PROBLEMS)


@pytest.fixture()
def server(answerer: Answerer) -> Iterator[ModelServer]:
    with ModelServer(answer_fn=answerer) as srv:
        yield srv


@pytest.fixture()
def cancel_after(request: pytest.FixtureRequest) -> Iterator[Callable[[Path], None]]:
    """Register run dirs whose jobs must not outlive the test (scancel them at teardown)."""
    runs: list[Path] = []
    yield runs.append
    for run_dir in runs:
        ids = [j for s in read_submissions(run_dir) for j in s.job_ids()]
        if ids:
            subprocess.run(["scancel", *ids], check=False, capture_output=True)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def cluster(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m nel.cluster status|resume|sweep ...`` (what `nel status` etc. run)."""
    return subprocess.run(
        [sys.executable, "-m", "nel.cluster", *args], check=False, capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def sacct_state(job: str) -> str:
    out = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-o", "State", "-j", job], check=False, capture_output=True, text=True
    )
    return out.stdout.strip().split("\n")[-1].split(" ")[0]


def settled_sacct_state(job: str, want: str, timeout: float = 30) -> str:
    """sacct's view of ``job``, waiting up to ``timeout`` for it to become ``want``:
    slurmdbd records a job's end a moment after the job itself ends."""
    deadline = time.monotonic() + timeout
    while (state := sacct_state(job)) != want and time.monotonic() < deadline:
        time.sleep(1)
    return state


# --------------------------------------------------------------------------------------------


def test_array_run_matches_unsharded_and_basic_launcher(
    server: ModelServer, gsm8k_data_dir: Path, tmp_path: Path, cancel_after: Callable[[Path], None]
) -> None:
    overrides = run_overrides(server, gsm8k_data_dir, tmp_path / "slurm", "repeats=2", *FAST)
    reference = scores(unsharded_metrics(overrides, tmp_path / "reference"))
    run_dir = compose_plan([*overrides, "shards=4"]).run_dir
    cancel_after(run_dir)
    before = server.request_count

    done = launch(*overrides, "shards=4", "--wait", env={"NEL_API_KEY": SECRET})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "submitted array job" in done.stdout and "complete" in done.stdout
    assert scores(json.loads((run_dir / "metrics.json").read_text())) == reference
    assert server.request_count - before == N_PROBLEMS * 2

    (submission,) = read_submissions(run_dir)
    assert submission.shards == [0, 1, 2, 3] and len(submission.tasks) == 4
    assert all(task.startswith(f"{submission.array_job}_") for task in submission.tasks)
    assert settled_sacct_state(submission.reducer_job, "COMPLETED") == "COMPLETED"
    status = run_status(run_dir)
    assert [s.state for s in status.shards] == ["done"] * 4 and status.complete and not status.active
    # slurmdbd records a finished array task's state a moment after the job ends; poll briefly
    deadline = time.monotonic() + 30
    while {s.job_state for s in status.shards} != {"COMPLETED"} and time.monotonic() < deadline:
        time.sleep(1)
        status = run_status(run_dir)
    assert {s.job_state for s in status.shards} == {"COMPLETED"}

    # The key travelled to the compute node in the job's environment, never through a file.
    assert {r.headers.get("authorization") for r in server.requests[before:]} == {f"Bearer {SECRET}"}
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"{path} holds the API key"

    # hydra/launcher=basic: the same shards in-process give the same metrics.
    basic_root = tmp_path / "basic"
    basic = launch(
        *run_overrides(server, gsm8k_data_dir, basic_root, "repeats=2"), "shards=4", "hydra/launcher=basic"
    )
    assert basic.returncode == 0, basic.stderr
    (basic_dir,) = [p for p in basic_root.iterdir() if p.is_dir()]
    assert scores(json.loads((basic_dir / "metrics.json").read_text())) == reference


def test_failing_shard_is_reported_by_the_reducer_and_fixed_by_resume(
    server: ModelServer, answerer: Answerer, gsm8k_data_dir: Path, tmp_path: Path,
    cancel_after: Callable[[Path], None],
) -> None:  # fmt: skip
    overrides = run_overrides(server, gsm8k_data_dir, tmp_path / "runs", "shards=4", *FAST)
    run_dir = compose_plan(overrides).run_dir
    cancel_after(run_dir)
    answerer.fail = {6, 7}  # problems 6-8 are shard 2 of 4

    done = launch(*overrides, "--wait")
    assert done.returncode == 1, done.stdout + done.stderr
    assert not (run_dir / "metrics.json").exists()
    # slurmdbd records the reducer's end a moment after it ends: wait for that state, not for time
    wait_for(lambda: run_status(run_dir).reducer_state == "FAILED", "sacct to record the failed reducer", 60)
    status = run_status(run_dir)
    assert [s.state for s in status.shards] == ["done", "done", "failed", "done"]
    assert "IncompleteRunError" in (status.reducer_detail or "") and "2 row(s) failed" in (
        status.reducer_detail or ""
    )
    assert "incomplete" in (run_dir / "report.txt").read_text().lower()
    shown = cluster("status", str(run_dir))
    assert shown.returncode == 1 and f"nel resume {run_dir}" in shown.stdout

    answerer.fail = set()
    resumed = cluster("resume", str(run_dir), "--wait", "--poll", "1")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    _, second = read_submissions(run_dir)
    assert second.shards == [2], "resume resubmits only the shard that is not done"
    reference = unsharded_metrics(
        run_overrides(server, gsm8k_data_dir, tmp_path / "x"), tmp_path / "reference"
    )
    assert scores(json.loads((run_dir / "metrics.json").read_text())) == scores(reference)
    rows = pq.read_table(run_dir / "trajectories.parquet", columns=["problem_idx", "repeat"]).to_pylist()
    assert sorted((r["problem_idx"], r["repeat"]) for r in rows) == [(i, 0) for i in range(N_PROBLEMS)]
    assert cluster("resume", str(run_dir)).returncode == 0  # complete: nothing to do


def test_scancel_of_a_running_task_is_reported_by_status(
    server: ModelServer, answerer: Answerer, gsm8k_data_dir: Path, tmp_path: Path,
    cancel_after: Callable[[Path], None],
) -> None:  # fmt: skip
    answerer.delay = 5.0  # 6 problems a shard, one at a time: 30 s, time enough to cancel one
    overrides = run_overrides(server, gsm8k_data_dir, tmp_path / "runs", "shards=2", "concurrency=1", *FAST)
    run_dir = compose_plan(overrides).run_dir
    cancel_after(run_dir)
    done = launch(*overrides)
    assert done.returncode == 0, done.stderr
    (submission,) = read_submissions(run_dir)

    err_log = log_paths(run_dir, submission.tasks[1])[1]

    def shard_1_started() -> bool:  # SLURM runs the task and the task has begun the shard (its log says so)
        return run_status(run_dir).shards[1].state == "running" and "[nel] shard 1 of 2" in _text(err_log)

    wait_for(shard_1_started, "shard 1 to be running")
    subprocess.run(["scancel", submission.tasks[1]], check=True)
    # squeue drops the task before sacct records CANCELLED: wait for a settled state, not just "not running"
    wait_for(lambda: run_status(run_dir).shards[1].state not in ("running", "pending"), "status to notice the cancelled task")

    shard = run_status(run_dir).shards[1]
    assert shard.job_state == "CANCELLED" and shard.job == submission.tasks[1]
    assert f"SLURM task {submission.tasks[1]} ended CANCELLED" in (shard.detail or "")
    assert "_log.err" in (shard.detail or ""), "the tail of the task's log is shown"
    shown = cluster("status", str(run_dir))
    assert "CANCELLED" in shown.stdout and shown.returncode in (1, EXIT_IN_PROGRESS)
    assert cluster("resume", str(run_dir)).returncode == EXIT_IN_PROGRESS or not run_status(run_dir).active


def test_task_that_hits_its_time_limit_requeues_and_resumes(
    server: ModelServer, answerer: Answerer, gsm8k_data_dir: Path, tmp_path: Path,
    cancel_after: Callable[[Path], None],
) -> None:  # fmt: skip
    # One minute of time limit, SIGUSR2 10 s before it (SLURM may send it up to its check
    # period earlier); 12 problems at 5 s each take 60 s in one task, so the first attempt is
    # stopped part way and submitit requeues the task.
    answerer.delay = 5.0
    overrides = [
        *run_overrides(server, gsm8k_data_dir, tmp_path / "runs", "shards=1", "concurrency=1"),
        "cluster.time_min=1", "cluster.signal_delay_s=10", "cluster.mem_gb=0.5", "poll_s=1",
    ]  # fmt: skip
    run_dir = compose_plan(overrides).run_dir
    cancel_after(run_dir)
    assert launch(*overrides).returncode == 0
    (submission,) = read_submissions(run_dir)
    task = submission.tasks[0]
    log = run_dir / "slurm" / task / f"{task}_0_log.err"

    def requeued_and_released() -> bool:
        # SLURM holds a requeued job for ~2 minutes (BeginTime); release it so the test takes seconds.
        out = subprocess.run(
            ["squeue", "-h", "-j", task, "-o", "%r"], check=False, capture_output=True, text=True
        ).stdout
        if "BeginTime" in out:
            subprocess.run(
                ["scontrol", "update", f"JobId={task}", "StartTime=now"], check=False, capture_output=True
            )
        return log.exists() and "restart 1" in log.read_text()

    wait_for(requeued_and_released, "the task to be requeued and restarted", timeout=150, every=1)
    answerer.delay = 0.0
    final = cluster("status", str(run_dir), "--wait", "--poll", "1", timeout=300)
    assert final.returncode == EXIT_COMPLETE, final.stdout + final.stderr
    text = log.read_text()
    assert "Caught signal SIGUSR2" in text and "timed-out" in text
    # What the first attempt finished (and flushed on its way out) the second one skips.
    first_end = next(line for line in text.splitlines() if " end: " in line)
    second_start = [line for line in text.splitlines() if " start: " in line][1]
    finished = int(first_end.split(" end: ")[1].split("/")[0])
    assert f"({finished} from before)" in second_start, (first_end, second_start)
    rows = (
        pq.read_table(run_dir / "trajectories.parquet", columns=["problem_idx"])
        .column("problem_idx")
        .to_pylist()
    )
    assert sorted(rows) == list(range(N_PROBLEMS)), "each problem exactly once"


def test_sweep_run_twice_submits_once(
    server: ModelServer, gsm8k_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    cancel_after: Callable[[Path], None],
) -> None:  # fmt: skip
    # Every job is submitted held (sbatch --hold), so the second sweep sees both runs queued
    # however fast or slow the machine is; the test releases them when it is ready.
    sweep_file = write_sweep(
        tmp_path / "sweep.yaml", server, gsm8k_data_dir, "slurm", "+cluster.additional.hold=true"
    )
    assert sweep_json(sweep_file, capsys) == (EXIT_IN_PROGRESS, ["submitted", "submitted"])
    run_dirs = sorted(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert len(run_dirs) == 2
    for run_dir in run_dirs:
        cancel_after(run_dir)

    assert sweep_json(sweep_file, capsys) == (EXIT_IN_PROGRESS, ["running", "running"])
    assert all(len(read_submissions(d)) == 1 for d in run_dirs)

    jobs = [j for d in run_dirs for s in read_submissions(d) for j in s.job_ids()]
    subprocess.run(["scontrol", "release", *jobs], check=True, capture_output=True)
    for run_dir in run_dirs:
        assert status_main([str(run_dir), "--wait", "--poll", "1"]) == EXIT_COMPLETE
    assert sweep_json(sweep_file, capsys) == (0, ["collected", "collected"])
    assert sweep_json(sweep_file, capsys) == (0, ["complete", "complete"])
    assert all(len(read_submissions(d)) == 1 for d in run_dirs)
    table = pq.read_table(tmp_path / "runs" / "results.parquet").to_pylist()
    assert {r["setting"] for r in table} == {"greedy", "sampled"}
    assert len({(r["config_hash"], r["mode"], r["metric"]) for r in table}) == len(table)


def test_sbatch_templates_run_a_sharded_eval(
    server: ModelServer, gsm8k_data_dir: Path, tmp_path: Path
) -> None:
    """slurm_templates/ without Python: the same env-var contract as the launcher."""
    run_dir = tmp_path / "run"
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    flags = ["--bench", "skills://gsm8k", "--model-url", server.base_url, "--model-id", "mock", "--data-dir",
             str(gsm8k_data_dir), "--max-problems", str(N_PROBLEMS), "--max-retries", "0", "--output-dir", str(run_dir)]  # fmt: skip
    common = ["sbatch", "--parsable", "--mem=512M"]
    array = subprocess.run(
        [*common, f"--output={logs}/%x-%A_%a.out", "--array=0-2", "--export=ALL,NEL_TOTAL_SHARDS=3", str(REPO / "slurm_templates" / "shards.sbatch"), *flags],
        capture_output=True, text=True, env=env, check=True,
    ).stdout.strip().split(";")[0]  # fmt: skip
    reducer = subprocess.run(
        [*common, f"--output={logs}/%x-%j.out", f"--dependency=afterany:{array}", str(REPO / "slurm_templates" / "reduce.sbatch"), str(run_dir)],
        capture_output=True, text=True, env=env, check=True,
    ).stdout.strip().split(";")[0]  # fmt: skip
    try:
        wait_for(
            lambda: sacct_state(reducer) in ("COMPLETED", "FAILED", "CANCELLED"), "the reducer", timeout=180
        )
    finally:
        subprocess.run(["scancel", array, reducer], check=False, capture_output=True)
    assert settled_sacct_state(reducer, "COMPLETED") == "COMPLETED", "\n".join(p.read_text() for p in logs.iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["gsm8k"]["pass@1"]["num_entries"] == N_PROBLEMS
    assert sorted(p.name for p in (run_dir / "shards").iterdir()) == [
        f"shard-{i:05d}-of-00003" for i in range(3)
    ]
