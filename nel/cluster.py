"""Operating a run: where its shards stand (`nel status`), finishing it (`nel resume`),
running shards in this process, and following a submitted run until it is reduced.

A shard's state joins two sources: its ``progress.json`` (written by the shard as it runs)
and SLURM's view of the task that runs it (``launch/submissions.json`` names the task).
Neither alone is enough: a task killed by ``scancel`` or the OOM killer never gets to
write "failed", and a task still pending has no progress file yet.

    done        progress.json says done and every row it owes is finished
    running     its SLURM task is running (or, without SLURM, progress.json says running)
    pending     its SLURM task waits in the queue (also: requeued after preemption/timeout)
    failed      the task ended without finishing: SLURM state, error and the log's tail are shown
    missing     never started: no progress.json and no task that could write one

Exit codes of ``status_main``: 0 complete (metrics written), 3 in progress, 1 needs
``nel resume`` (something failed or is missing, nothing is active), 2 bad input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from nel.errors import ConfigError, ExitCode, NelError, exit_code_for
from nel.rundir import RunDir, read_progress, read_run, shard_dir
from nel.slurm import (
    ACTIVE_STATES,
    FAILED_STATES,
    ClusterSettings,
    Submission,
    job_states,
    log_tail,
    read_launch_record,
    read_submissions,
)
from nel.spec import RunSpec

EXIT_COMPLETE, EXIT_NEEDS_RESUME, EXIT_BAD_INPUT, EXIT_IN_PROGRESS = (
    ExitCode.OK,
    ExitCode.INCOMPLETE,
    ExitCode.USAGE,
    ExitCode.IN_PROGRESS,
)
# A job sbatch accepted may be in neither squeue's nor sacct's answer for a moment.
_GRACE_S = 60.0


@dataclass(frozen=True)
class ShardStatus:
    idx: int
    state: str  # done | running | pending | failed | missing
    done: int = 0
    failed_rows: int = 0
    total: int | None = None
    job: str | None = None  # "17_3": the SLURM task that last ran (or runs) this shard
    slurm_state: str | None = None
    detail: str | None = None  # why it failed: error, SLURM state, log tail


@dataclass(frozen=True)
class RunStatus:
    run_dir: Path
    total_shards: int
    shards: list[ShardStatus]
    reducer_job: str | None = None
    reducer_state: str | None = None  # SLURM state of the latest reducer job
    reducer_detail: str | None = None
    metrics_written: bool = False
    submissions: list[Submission] = field(default_factory=list)

    def by_state(self, state: str) -> list[int]:
        return [s.idx for s in self.shards if s.state == state]

    @property
    def active(self) -> bool:
        """Something is still queued or running (a shard task or the reducer)."""
        return bool(self.by_state("running") or self.by_state("pending")) or (
            self.reducer_state in ACTIVE_STATES
        )

    @property
    def complete(self) -> bool:
        return self.metrics_written and len(self.by_state("done")) == self.total_shards

    def exit_code(self) -> int:
        if self.complete and not self.active:
            return EXIT_COMPLETE
        return EXIT_IN_PROGRESS if self.active else EXIT_NEEDS_RESUME

    def headline(self) -> str:
        counts = {
            state: len(self.by_state(state)) for state in ("done", "running", "pending", "failed", "missing")
        }
        rows_done = sum(s.done for s in self.shards)
        rows_total = sum(s.total or 0 for s in self.shards)
        shards = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        reducer = (
            "reduced" if self.metrics_written and not self.active else (self.reducer_state or "not submitted")
        )
        rows = f"{rows_done}/{rows_total} rows" if rows_total else "rows unknown"
        return f"shards: {shards} | {rows} | reducer {self.reducer_job or '-'}: {reducer}"


def run_status(run_dir: str | Path, *, with_slurm: bool = True) -> RunStatus:
    """Where every shard of the run at ``run_dir`` stands."""
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    total = int(run["total_shards"])
    submissions = read_submissions(run_dir)
    states: dict[str, str] | None = None  # None: SLURM not consulted
    if with_slurm and submissions:
        states = job_states(j for s in submissions for j in s.job_ids())
    shards = [_shard_status(run_dir, idx, total, submissions, states) for idx in range(total)]
    reducer_job = submissions[-1].reducer_job if submissions else None
    reducer_state = (
        _job_state(reducer_job, submissions[-1], states) if (reducer_job and states is not None) else None
    )
    reducer_detail = None
    if reducer_state in FAILED_STATES and reducer_job is not None:
        reducer_detail = log_tail(run_dir, reducer_job)
    return RunStatus(
        run_dir=run_dir,
        total_shards=total,
        shards=shards,
        reducer_job=reducer_job,
        reducer_state=reducer_state,
        reducer_detail=reducer_detail,
        metrics_written=RunDir(run_dir).metrics.exists(),
        submissions=submissions,
    )


def _job_state(job: str, submission: Submission, states: dict[str, str]) -> str:
    if job in states:
        return states[job]
    if _age_s(submission.submitted_at) < _GRACE_S:
        return "PENDING"  # just submitted: not yet visible to squeue/sacct
    return "UNKNOWN"


def _shard_status(
    run_dir: Path, idx: int, total: int, submissions: list[Submission], states: dict[str, str] | None
) -> ShardStatus:
    progress = read_progress(shard_dir(run_dir, idx, total)) or {}
    done = int(progress.get("done", 0) or 0)
    owed = progress.get("total")
    submission = next((s for s in reversed(submissions) if s.task_of(idx) is not None), None)
    job = submission.task_of(idx) if submission else None
    slurm = _job_state(job, submission, states) if (job and submission and states is not None) else None

    def status(state: str, detail: str | None = None) -> ShardStatus:
        return ShardStatus(
            idx, state, done=done, failed_rows=int(progress.get("failed", 0) or 0),
            total=None if owed is None else int(owed), job=job, slurm_state=slurm, detail=detail,
        )  # fmt: skip

    in_file = progress.get("state")
    if in_file == "done" and (owed is None or done >= int(owed)):
        return status("done")
    if slurm in ACTIVE_STATES:
        return status(
            "pending" if slurm in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "CONFIGURING") else "running"
        )
    if slurm == "COMPLETED" and in_file in ("failed", "done"):
        # The task ran to its end; some rows failed after their retries (recorded, with error_kind).
        return status("failed", _why(progress))
    if job is not None and slurm is not None and slurm != "UNKNOWN":
        # The task ended without the shard finishing: killed, crashed, out of time or memory.
        return status("failed", f"SLURM task {job} ended {slurm}; {_why(progress)}\n{log_tail(run_dir, job)}")
    if not progress:
        return status("missing")
    if in_file == "running":
        return status("running", _staleness(progress))
    return status("failed", _why(progress))


def _why(progress: dict[str, Any]) -> str:
    if not progress:
        return "the shard never wrote progress.json"
    parts = [
        f"progress.json says {progress.get('state')} at {progress.get('done')}/{progress.get('total')} rows"
    ]
    if progress.get("error"):
        parts.append(f"error: {progress['error']}")
    if progress.get("failed"):
        parts.append(f"{progress['failed']} row(s) failed after their retries; a rerun retries them")
    return "; ".join(parts)


def _staleness(progress: dict[str, Any]) -> str | None:
    updated = progress.get("updated_at")
    if not updated:
        return None
    age = _age_s(updated)
    return f"last progress {age:.0f}s ago" if age > 120 else None


def _age_s(iso: str) -> float:
    try:
        then = dt.datetime.fromisoformat(iso)
    except ValueError:
        return float("inf")
    if then.tzinfo is None:
        then = then.replace(tzinfo=dt.timezone.utc)
    return (dt.datetime.now(dt.timezone.utc) - then).total_seconds()


def format_status(status: RunStatus, *, details: bool = True) -> str:
    lines = [f"run {status.run_dir} ({status.total_shards} shards)", status.headline(), ""]
    lines.append(f"{'shard':>6}  {'state':<8} {'rows':>13}  {'failed':>6}  {'slurm task':<12} slurm state")
    for s in status.shards:
        rows = f"{s.done}/{s.total}" if s.total is not None else "-"
        lines.append(
            f"{s.idx:>6}  {s.state:<8} {rows:>13}  {s.failed_rows:>6}  {s.job or '-':<12} {s.slurm_state or '-'}"
        )
    if details:
        for s in status.shards:
            if s.detail and s.state in ("failed", "running"):
                lines.append(f"\nshard {s.idx} ({s.state}): " + s.detail)
        if status.reducer_detail:
            lines.append(f"\nreducer {status.reducer_job} {status.reducer_state}: {status.reducer_detail}")
    hint = _next_step(status)
    if hint:
        lines.append("\n" + hint)
    return "\n".join(lines)


def _next_step(status: RunStatus) -> str | None:
    if status.complete and not status.active:
        return f"complete: {RunDir(status.run_dir).report}"
    if status.active:
        return f"in progress; follow with: nel status {status.run_dir} (or squeue -u $USER)"
    return f"to finish it: nel resume {status.run_dir}"


# --------------------------------------------------------------------------------------------
# Following a submitted run


def watch(run_dir: Path, *, poll_s: float = 10.0, out: TextIO | None = None) -> RunStatus:
    """Print a line whenever the run's state changes, until nothing is active; return the end state."""
    out = out or sys.stdout
    started = time.monotonic()
    last = None
    while True:
        status = run_status(run_dir)
        line = status.headline()
        if line != last:
            print(f"[{time.monotonic() - started:6.0f}s] {line}", file=out, flush=True)
            last = line
        if not status.active:
            return status
        time.sleep(poll_s)


# --------------------------------------------------------------------------------------------
# Running shards here (hydra/launcher=basic, nel resume --local)


def run_here(
    spec: RunSpec, *, total_shards: int, shards: Sequence[int], allow_partial: bool, out: TextIO | None = None
) -> int:
    """Run ``shards`` one after another in this process, then the reducer; return an exit code."""
    from nel.reduce import reduce_run
    from nel.runner import run_shard

    out = out or sys.stdout
    api_key = os.environ.get(spec.model.api_key_env)
    for idx in shards:
        print(f"nel: shard {idx} of {total_shards}", file=out, flush=True)
        try:
            result = run_shard(spec, shard_idx=idx, total_shards=total_shards, api_key=api_key)
        except NelError as exc:
            # Like a failed array task: note it, run the other shards, let the reducer name it.
            print(f"nel: shard {idx} failed: {exc}", file=sys.stderr, flush=True)
            continue
        print(
            f"nel: shard {idx}: {result.done}/{result.total} done, {result.failed} failed",
            file=out,
            flush=True,
        )
    try:
        reduce_run(spec.output_dir, allow_partial=allow_partial)
    except NelError as exc:
        print(f"nel: reduce: {exc}", file=sys.stderr, flush=True)
        return EXIT_NEEDS_RESUME
    print(RunDir(spec.output_dir).report.read_text(), file=out, flush=True)
    return EXIT_COMPLETE


# --------------------------------------------------------------------------------------------
# nel status / nel resume


def status_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nel status",
        description="Show where every shard of a run stands: done, running, pending, failed (with the "
        "tail of its log) or missing. Exit 0 complete, 5 in progress, 1 needs `nel resume`, 2 bad input (docs/cli.md).",
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.add_argument("--wait", action="store_true", help="follow the run until nothing is active")
    parser.add_argument(
        "--poll", type=float, default=10.0, metavar="S", help="seconds between polls (--wait)"
    )
    args = parser.parse_args(argv)
    try:
        status = watch(args.run_dir, poll_s=args.poll) if args.wait else run_status(args.run_dir)
    except NelError as exc:
        print(f"nel status: {exc}", file=sys.stderr)
        return int(exit_code_for(exc))
    if args.json:
        print(json.dumps(_status_json(status), indent=2))
    else:
        print(format_status(status))
    return status.exit_code()


def _status_json(status: RunStatus) -> dict[str, Any]:
    return {
        "run_dir": str(status.run_dir),
        "total_shards": status.total_shards,
        "complete": status.complete,
        "active": status.active,
        "reducer": {
            "job": status.reducer_job,
            "state": status.reducer_state,
            "detail": status.reducer_detail,
        },
        "shards": [s.__dict__ for s in status.shards],
    }


def resume_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nel resume",
        description="Finish a run: resubmit only the shards that are not done (they resume from their "
        "Parquet parts) plus a new reducer. Cluster settings are the run's own (launch/launch.json) "
        "with any KEY=VALUE overrides applied, e.g. cluster.time_min=600.",
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("overrides", nargs="*", metavar="cluster.KEY=VALUE")
    parser.add_argument("--wait", action="store_true", help="follow the run until it is reduced")
    parser.add_argument("--dry-run", action="store_true", help="print what would be submitted")
    parser.add_argument("--local", action="store_true", help="run the shards in this process, no SLURM")
    parser.add_argument("--allow-partial", action="store_true", help="let the reducer write partial metrics")
    parser.add_argument("--poll", type=float, default=10.0, metavar="S")
    args = parser.parse_args(argv)
    try:
        return _resume(args)
    except NelError as exc:
        print(f"nel resume: {exc}", file=sys.stderr)
        return int(exit_code_for(exc))


def _resume(args: argparse.Namespace) -> int:
    from nel.slurm import submit

    run_dir: Path = args.run_dir.resolve()
    run = read_run(run_dir)
    spec = RunSpec.from_dict(run["spec"]).validate()
    if Path(spec.output_dir).resolve() != run_dir:  # the run dir was moved: follow it
        spec = RunSpec.from_dict({**run["spec"], "output_dir": str(run_dir)}).validate()
    total = int(run["total_shards"])
    record = read_launch_record(run_dir) or {}
    allow_partial = bool(args.allow_partial or record.get("shards", {}).get("allow_partial", False))
    status = run_status(run_dir, with_slurm=not args.local)
    if status.active:
        jobs = sorted({s.job for s in status.shards if s.state in ("running", "pending") and s.job})
        print(
            f"nel resume: {run_dir} still has active jobs ({', '.join(jobs) or status.reducer_job}); "
            "wait for them (nel status --wait) or scancel them first",
            file=sys.stderr,
        )
        return EXIT_IN_PROGRESS
    todo = [s.idx for s in status.shards if s.state != "done"]
    if not todo and status.metrics_written:
        print(f"nel resume: {run_dir} is complete; nothing to do")
        return EXIT_COMPLETE
    if args.local:
        return run_here(spec, total_shards=total, shards=todo, allow_partial=allow_partial)
    settings = cluster_settings(record.get("cluster", {}), args.overrides)
    if args.dry_run:
        print(describe_submission(spec, total, todo, settings))
        return EXIT_COMPLETE
    submission = submit(
        run_dir, spec, total_shards=total, shards=todo, settings=settings, allow_partial=allow_partial
    )
    print(describe_submitted(run_dir, submission))
    if not args.wait:
        return EXIT_COMPLETE
    return finish_wait(run_dir, args.poll)


def finish_wait(run_dir: Path, poll_s: float) -> int:
    final = watch(run_dir, poll_s=poll_s)
    print(format_status(final))
    report = RunDir(run_dir).report
    if final.complete and report.exists():
        print("\n" + report.read_text())
    return final.exit_code()


def cluster_settings(base: dict[str, Any], overrides: Sequence[str]) -> ClusterSettings:
    """``base`` (a run's recorded cluster section) with ``cluster.KEY=VALUE`` overrides applied."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    cfg: Any = OmegaConf.create({"cluster": base})
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key.startswith("cluster."):
            raise ConfigError(
                f"override {item!r} must look like cluster.KEY=VALUE (e.g. cluster.time_min=600)"
            )
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"bad override: {exc}") from exc
    return ClusterSettings.from_dict(OmegaConf.to_container(cfg.cluster, resolve=True))  # type: ignore[arg-type]


def describe_submission(spec: RunSpec, total: int, shards: Sequence[int], settings: ClusterSettings) -> str:
    """What :func:`nel.slurm.submit` would submit, as the equivalent sbatch options."""
    from nel.slurm import sbatch_options

    def flags(options: dict[str, Any]) -> str:
        return " ".join(f"--{k}" if v is True else f"--{k}={v}" for k, v in options.items())

    throttle = min(settings.array_parallelism, max(len(shards), 1))
    lines = [
        f"run dir:  {spec.output_dir}",
        f"bench:    {spec.bench}   model: {spec.model.model_id} @ {spec.model.url}   repeats: {spec.repeats}",
        f"config:   {spec.config_hash()}   api key from: ${spec.model.api_key_env} (read on the compute node)",
    ]
    if shards:
        lines.append(
            f"array:    {len(shards)} task(s) for shard(s) {_ranges(shards)} of {total}: "
            f"sbatch --array=0-{len(shards) - 1}%{throttle} {flags(sbatch_options(settings))}"
        )
    else:
        lines.append("array:    none (every shard is done)")
    dependency = " --dependency=afterany:<array job>" if shards else ""
    lines.append(f"reducer:  sbatch{dependency} {flags(sbatch_options(settings, reducer=True))}")
    if settings.setup:
        lines.append("setup:    " + "; ".join(settings.setup))
    return "\n".join(lines)


def describe_submitted(run_dir: Path, submission: Submission) -> str:
    jobs = ",".join(submission.job_ids())
    lines = [f"nel: run dir  {run_dir}"]
    if submission.array_job:
        lines.append(
            f"nel: submitted array job {submission.array_job} (shards {_ranges(submission.shards)} "
            f"of {submission.total_shards}) and reducer job {submission.reducer_job} "
            f"(afterany:{submission.array_job})"
        )
    else:
        lines.append(f"nel: every shard is done; submitted reducer job {submission.reducer_job}")
    lines += [
        f"nel: watch    nel status {run_dir}   (or: squeue -j {jobs}; sacct -j {jobs})",
        f"nel: logs     {RunDir(run_dir).slurm}/",
        f"nel: results  {RunDir(run_dir).report} and metrics.json once job {submission.reducer_job} is done",
    ]
    return "\n".join(lines)


def _ranges(indices: Sequence[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2,5,7-8"."""
    parts: list[str] = []
    ordered = sorted(indices)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nel.cluster status|resume|sweep ...`` (the same as ``nel status|resume|sweep``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"status": status_main, "resume": resume_main}
    if argv and argv[0] == "sweep":
        from nel.sweep import sweep_main

        return sweep_main(argv[1:])
    if not argv or argv[0] not in commands:
        print("usage: python -m nel.cluster {status,resume,sweep} ...", file=sys.stderr)
        return EXIT_BAD_INPUT
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
