"""The SLURM backend, through submitit: a run's shards as one array job plus a reducer job.

A submission is two jobs::

    nel-<bench>          array job, one task per shard to run (0..k-1, at most
                         ``array_parallelism`` at once); task i runs shard ``shards[i]``
    nel-<bench>-reduce   one job, ``--dependency=afterany:<array job>``: it starts when every
                         task has ended, however it ended, and merges what is there

Both are ``submitit.helpers.Checkpointable``: at ``signal_delay_s`` before its time limit,
or when preempted, a task gets SIGUSR2, submitit requeues it (same job id), and the rerun
resumes from the shard's Parquet parts. submitit's own files (pickled task, logs) are in
``<run_dir>/slurm/``.

The API key never enters a pickle: a task carries the *name* of the environment variable
and reads the key on the compute node when it starts.

Job states come from ``squeue`` (live jobs) and ``sacct`` (ended ones; needs slurmdbd).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, TextIO

from nel.backends.base import (
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    UNKNOWN,
    ClusterSettings,
    JobState,
    ShardRequest,
    Submission,
    ranges,
)
from nel.errors import SlurmError
from nel.rundir import RunDir, utcnow
from nel.spec import RunSpec

# SLURM's job states, by what they mean for a shard.
_PENDING_STATES = frozenset(
    {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESV_DEL_HOLD"}
)
_RUNNING_STATES = frozenset(
    {"RUNNING", "COMPLETING", "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "SPECIAL_EXIT"}
)
_FAILED_STATES = frozenset(
    {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
     "DEADLINE", "REVOKED"}
)  # fmt: skip


def phase_of(state: str) -> str:
    """SLURM's word for a job's state -> a :class:`JobState` phase."""
    if state in _PENDING_STATES:
        return PENDING
    if state in _RUNNING_STATES:
        return RUNNING
    if state == "COMPLETED":
        return COMPLETED
    if state in _FAILED_STATES:
        return FAILED
    return UNKNOWN


class SlurmBackend:
    name: ClassVar[str] = "slurm"
    keeps_jobs: ClassVar[bool] = True

    def check(self) -> None:
        missing = [tool for tool in ("sbatch", "squeue", "scontrol") if shutil.which(tool) is None]
        if missing:
            raise SlurmError(
                f"SLURM is not available here ({', '.join(missing)} not on PATH). Submit from a login node, "
                "or run locally with hydra/launcher=basic (nel resume --local)"
            )

    def describe(self, request: ShardRequest) -> str:
        """The submission as the equivalent sbatch options."""
        spec, settings, shards = request.spec, request.settings, request.shards

        def flags(options: dict[str, Any]) -> str:
            return " ".join(f"--{k}" if v is True else f"--{k}={v}" for k, v in options.items())

        throttle = min(settings.array_parallelism, max(len(shards), 1))
        lines = [
            f"run dir:  {request.run_dir}",
            f"bench:    {spec.bench}   model: {spec.model.model_id} @ {spec.model.url}   repeats: {spec.repeats}",
            f"config:   {spec.config_hash()}   api key from: ${spec.model.api_key_env} (read on the compute node)",
        ]
        if shards:
            lines.append(
                f"array:    {len(shards)} task(s) for shard(s) {ranges(shards)} of {request.total_shards}: "
                f"sbatch --array=0-{len(shards) - 1}%{throttle} {flags(sbatch_options(settings))}"
            )
        else:
            lines.append("array:    none (every shard is done)")
        dependency = " --dependency=afterany:<array job>" if shards else ""
        lines.append(f"reducer:  sbatch{dependency} {flags(sbatch_options(settings, reducer=True))}")
        if settings.setup:
            lines.append("setup:    " + "; ".join(settings.setup))
        return "\n".join(lines)

    def submit(self, request: ShardRequest, out: TextIO) -> Submission:
        """``request.shards`` as one array job and a reducer that runs after it (``afterany``)."""
        self.check()
        run_dir = Path(request.run_dir).resolve()
        settings = request.settings
        bench = _slug(request.spec.bench.split("://", 1)[-1])
        array_job: str | None = None
        tasks: list[str] = []
        try:
            if request.shards:
                executor = _executor(run_dir, settings, name=f"{settings.job_name}-{bench}")
                executor.update_parameters(slurm_array_parallelism=settings.array_parallelism)
                task = ShardTask(request.spec.to_dict(), request.total_shards)
                jobs = executor.map_array(task, list(request.shards))
                tasks = [str(job.job_id) for job in jobs]
                array_job = tasks[0].split("_", 1)[0]
            executor = _executor(run_dir, settings, name=f"{settings.job_name}-{bench}-reduce", reducer=True)
            if array_job is not None:
                executor.update_parameters(slurm_dependency=f"afterany:{array_job}")
            reducer = executor.submit(ReduceTask(str(run_dir), request.allow_partial))
        except (subprocess.CalledProcessError, OSError, ValueError) as exc:
            detail = getattr(exc, "stderr", None) or getattr(exc, "output", None) or exc
            if isinstance(detail, bytes):
                detail = detail.decode(errors="replace")
            raise SlurmError(f"submitting run {run_dir} failed: {str(detail).strip()}") from exc
        return Submission(
            array_job,
            list(request.shards),
            tasks,
            str(reducer.job_id),
            request.total_shards,
            utcnow(),
            self.name,
        )

    def states(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        return {job: JobState(phase_of(state), state) for job, state in job_states(job_ids).items()}

    def cancel(self, job_ids: Iterable[str]) -> None:
        ids = [str(j) for j in job_ids if j]
        if ids:
            _run(["scancel", *ids])

    def log_tail(self, run_dir: Path, job: str) -> str:
        return log_tail(run_dir, job)


# --------------------------------------------------------------------------------------------
# What runs on the compute node


class ShardTask:
    """One array task: run shard ``shard_idx`` of the run to completion (resuming its parts).

    Pickled by submitit with the spec (no secrets) and the shard count; the argument is the
    shard index, so a resubmission of shards 3 and 7 is a two-task array whose tasks still
    know which shard they are.
    """

    def __init__(self, spec: dict[str, Any], total_shards: int) -> None:
        self.spec = spec
        self.total_shards = total_shards

    def __call__(self, shard_idx: int) -> dict[str, Any]:
        from nel.runner import run_shard  # the eval stack is only needed on the compute node

        spec = RunSpec.from_dict(self.spec)
        # The same contract as a hand-sharded `nel eval run` or slurm_templates/shards.sbatch.
        os.environ["NEL_SHARD_IDX"] = str(shard_idx)
        os.environ["NEL_TOTAL_SHARDS"] = str(self.total_shards)
        print(
            f"[nel] shard {shard_idx} of {self.total_shards} (SLURM job {_this_job()}, "
            f"restart {os.environ.get('SLURM_RESTART_COUNT', '0')}) run dir {spec.output_dir}",
            file=sys.stderr,
            flush=True,
        )
        result = run_shard(
            spec,
            shard_idx=shard_idx,
            total_shards=self.total_shards,
            api_key=os.environ.get(spec.model.api_key_env),
            progress="plain",
        )
        return {"shard": shard_idx, "total": result.total, "done": result.done, "failed": result.failed}

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit on SIGUSR2 (time limit near, or preemption): requeue as is.

        Nothing to save here: the shard's Parquet parts are its checkpoint, and the rerun
        skips every (problem, repeat) they already hold.
        """
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _this_job() -> str:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "?")


class ReduceTask:
    """The reducer job: merge the shards, write metrics; fails (naming what is missing) if incomplete."""

    def __init__(self, run_dir: str, allow_partial: bool) -> None:
        self.run_dir = run_dir
        self.allow_partial = allow_partial

    def __call__(self) -> dict[str, Any]:
        from nel.reduce import reduce_run

        result = reduce_run(self.run_dir, allow_partial=self.allow_partial)
        print(RunDir(self.run_dir).report.read_text(), file=sys.stderr, flush=True)
        return {"complete": result.complete, "problems": result.problem_summary}

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


# --------------------------------------------------------------------------------------------
# Submitting


def sbatch_options(settings: ClusterSettings, *, reducer: bool = False) -> dict[str, Any]:
    """The sbatch options of the shard array (or the reducer), as ``--key=value`` pairs.

    Used both to configure submitit and to show a dry run, so the two cannot disagree.
    """
    res = settings.reducer if reducer else settings
    options: dict[str, Any] = {
        "time": res.time_min,
        "cpus-per-task": res.cpus_per_task,
        "mem": f"{int(res.mem_gb * 1024)}M",
        "partition": settings.partition,
        "account": settings.account,
        "qos": settings.qos,
        "signal": f"USR2@{settings.signal_delay_s}",
        "requeue": True,
    }
    options.update({key.replace("_", "-"): value for key, value in settings.additional.items()})
    return {key: value for key, value in options.items() if value is not None}


def _executor(run_dir: Path, settings: ClusterSettings, *, name: str, reducer: bool = False) -> Any:
    import submitit

    kwargs: dict[str, Any] = {"slurm_max_num_timeout": settings.max_requeues}
    if settings.python:
        kwargs["slurm_python"] = settings.python
    executor = submitit.AutoExecutor(folder=RunDir(run_dir).slurm_job("%j"), cluster="slurm", **kwargs)
    res = settings.reducer if reducer else settings
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": res.time_min,
        "cpus_per_task": res.cpus_per_task,
        "mem_gb": res.mem_gb,
        "slurm_signal_delay_s": settings.signal_delay_s,
        "slurm_additional_parameters": {"requeue": True, **settings.additional},
    }
    for key in ("partition", "account", "qos"):
        if getattr(settings, key) is not None:
            params[f"slurm_{key}"] = getattr(settings, key)
    if settings.setup:
        params["slurm_setup"] = list(settings.setup)
    executor.update_parameters(**params)
    return executor


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


# --------------------------------------------------------------------------------------------
# Logs


def log_paths(run_dir: Path, job: str) -> tuple[Path, Path]:
    """submitit's stdout/stderr files of a job ("18") or an array task ("17_3")."""
    folder = RunDir(run_dir).slurm_job(job)
    return folder / f"{job}_0_log.out", folder / f"{job}_0_log.err"


_ERROR_LINE = re.compile(r"^\s*[\w.]*(Error|Exception|Interrupted|Killed)\b[\w.]*:")


def log_tail(run_dir: Path, job: str, lines: int = 12) -> str:
    """The last lines of a job's stderr (where tracebacks go), else of its stdout."""
    for path in reversed(log_paths(run_dir, job)):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        kept = [line for line in text.splitlines() if line.strip()]
        if kept:
            # A traceback's last "SomeError: message" line is what to act on: show it first.
            errors = [line for line in kept[-200:] if _ERROR_LINE.match(line)]
            head = f"error: {errors[-1].strip()}\n" if errors else ""
            return f"{head}{path}:\n" + "\n".join("    " + line for line in kept[-lines:])
    return f"(no log in {RunDir(run_dir).slurm_job(job)})"


# --------------------------------------------------------------------------------------------
# Job states


def job_states(job_ids: Iterable[str]) -> dict[str, str]:
    """SLURM's state of every job and array task of ``job_ids``: {"17_3": "RUNNING", "18": "PENDING"}.

    squeue answers for live jobs; sacct for ended ones. A job neither knows (accounting
    off, or purged) is absent from the result.
    """
    ids = sorted({str(j) for j in job_ids if j})
    if not ids:
        return {}
    states: dict[str, str] = {}
    if shutil.which("sacct"):
        out = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(ids)], check=False)
        for line in out.splitlines():
            job, _, state = line.partition("|")
            for key in _expand_job_id(job.strip()):
                states[key] = state.split()[0] if state.strip() else "UNKNOWN"
    # squeue last: it is the live truth (sacct can lag a few seconds behind a requeue).
    out = _run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(ids)], check=False)
    for line in out.splitlines():
        job, _, state = line.partition("|")
        if job.strip():
            states[job.strip()] = state.strip() or "UNKNOWN"
    return states


def _expand_job_id(job: str) -> list[str]:
    """``17_[2-4,7%2]`` (a pending array's compressed form) -> 17_2, 17_3, 17_4, 17_7."""
    match = re.fullmatch(r"(\d+)_\[([^\]]*)\]", job)
    if not match:
        return [job]
    base, spec = match.group(1), match.group(2).split("%", 1)[0]
    out: list[str] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit():
            out.extend(f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1))
    return out


def _run(cmd: list[str], *, check: bool = True) -> str:
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        if check:
            raise SlurmError(f"{' '.join(cmd)} failed: {exc}") from exc
        return ""
    if proc.returncode != 0:
        if check:
            raise SlurmError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
        return ""
    return proc.stdout
