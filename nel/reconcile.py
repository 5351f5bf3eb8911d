"""The one reconcile step of every launch: what is done, what is running, what to submit.

``python -m nel.launch``, ``nel resume`` and ``nel sweep`` all go through :func:`advance`,
whichever backend runs the shards, so "submit whatever is not done yet" is written once.

A shard's state joins two sources: its ``progress.json`` (written by the shard as it runs)
and the backend's view of the job that runs it (``launch/submissions.json`` names the job and
the backend). Neither alone is enough: a task killed by ``scancel`` or the OOM killer never
gets to write "failed", and a task still queued has no progress file yet.

    done        progress.json says done and every row it owes is finished
    running     its job is running (or, with no job to ask about, progress.json says running)
    pending     its job waits in the queue (also: requeued after preemption/timeout)
    failed      the job ended without finishing: its state, error and the log's tail are shown
    missing     never started: no progress.json and no job that could write one

Shards are numbered from 0, as in their directories (shard-00000-of-00004) and array tasks.
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from nel.backends import get_backend
from nel.backends.base import (
    COMPLETED,
    FAILED,
    PENDING,
    UNKNOWN,
    Backend,
    ClusterSettings,
    JobState,
    ShardRequest,
    Submission,
    read_submissions,
    record_submission,
    write_launch_record,
)
from nel.errors import ExitCode
from nel.rundir import RunDir, read_progress, read_run, shard_dir
from nel.spec import RunSpec

# A job a scheduler just accepted may be in none of its answers for a moment.
_GRACE_S = 60.0


@dataclass(frozen=True)
class ShardStatus:
    idx: int  # from 0
    state: str  # done | running | pending | failed | missing
    done: int = 0
    failed_rows: int = 0
    total: int | None = None
    job: str | None = None  # "17_3": the job (array task) that last ran, or runs, this shard
    job_state: str | None = None  # the backend's word for that job's state ("OUT_OF_MEMORY")
    detail: str | None = None  # why it failed: error, job state, log tail


@dataclass(frozen=True)
class RunStatus:
    run_dir: Path
    total_shards: int
    shards: list[ShardStatus]
    reducer_job: str | None = None
    reducer_state: str | None = None  # the backend's word for the latest reducer job's state
    reducer_active: bool = False
    reducer_detail: str | None = None
    metrics_written: bool = False
    submissions: list[Submission] = field(default_factory=list)

    def by_state(self, state: str) -> list[int]:
        return [s.idx for s in self.shards if s.state == state]

    @property
    def active(self) -> bool:
        """Something is still queued or running (a shard job or the reducer)."""
        return bool(self.by_state("running") or self.by_state("pending")) or self.reducer_active

    @property
    def complete(self) -> bool:
        return self.metrics_written and len(self.by_state("done")) == self.total_shards

    @property
    def todo(self) -> list[int]:
        return [s.idx for s in self.shards if s.state != "done"]

    def exit_code(self) -> ExitCode:
        if self.complete and not self.active:
            return ExitCode.OK
        return ExitCode.IN_PROGRESS if self.active else ExitCode.INCOMPLETE

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


def run_status(run_dir: str | Path, *, with_jobs: bool = True) -> RunStatus:
    """Where every shard of the run at ``run_dir`` stands.

    ``with_jobs=False`` asks no backend about the run's jobs: progress files only (a dry run)."""
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    total = int(run["total_shards"])
    submissions = read_submissions(run_dir)
    jobs = _Jobs(run_dir, submissions if with_jobs else [])
    shards = [_shard_status(run_dir, idx, total, submissions, jobs) for idx in range(total)]
    last = submissions[-1] if submissions else None
    reducer = jobs.state(last.reducer_job, last) if last is not None else None
    return RunStatus(
        run_dir=run_dir,
        total_shards=total,
        shards=shards,
        reducer_job=last.reducer_job if last else None,
        reducer_state=reducer.raw if reducer else None,
        reducer_active=bool(reducer and reducer.active),
        reducer_detail=jobs.log_tail(last) if (last and reducer and reducer.phase == FAILED) else None,
        metrics_written=RunDir(run_dir).metrics.exists(),
        submissions=submissions,
    )


class _Jobs:
    """The states of a run's jobs, asked of the backend of each submission (once per status)."""

    def __init__(self, run_dir: Path, submissions: list[Submission]) -> None:
        self.run_dir = run_dir
        self.states: dict[str, JobState] = {}
        self.asked = bool(submissions)
        by_backend: dict[str, list[str]] = {}
        for s in submissions:
            by_backend.setdefault(s.backend, []).extend(s.job_ids())
        for name, ids in by_backend.items():
            self.states.update(get_backend(name).states(ids))

    def state(self, job: str | None, submission: Submission) -> JobState | None:
        if job is None or not self.asked:
            return None
        if job in self.states:
            return self.states[job]
        if _age_s(submission.submitted_at) < _GRACE_S:
            return JobState(PENDING, "PENDING")  # just submitted: not yet visible to the scheduler
        return JobState(UNKNOWN, "UNKNOWN")

    def log_tail(self, submission: Submission, job: str | None = None) -> str:
        return get_backend(submission.backend).log_tail(self.run_dir, job or submission.reducer_job)


def _shard_status(
    run_dir: Path, idx: int, total: int, submissions: list[Submission], jobs: _Jobs
) -> ShardStatus:
    progress = read_progress(shard_dir(run_dir, idx, total)) or {}
    done = int(progress.get("done", 0) or 0)
    owed = progress.get("total")
    submission = next((s for s in reversed(submissions) if s.task_of(idx) is not None), None)
    job = submission.task_of(idx) if submission else None
    state = jobs.state(job, submission) if submission else None

    def status(name: str, detail: str | None = None) -> ShardStatus:
        return ShardStatus(
            idx, name, done=done, failed_rows=int(progress.get("failed", 0) or 0),
            total=None if owed is None else int(owed), job=job, job_state=state.raw if state else None,
            detail=detail,
        )  # fmt: skip

    in_file = progress.get("state")
    if in_file == "done" and (owed is None or done >= int(owed)):
        return status("done")
    if state is not None and state.active:
        return status(state.phase)
    if state is not None and state.phase == COMPLETED and in_file in ("failed", "done"):
        # The task ran to its end; some rows failed after their retries (recorded, with error_kind).
        return status("failed", _why(progress))
    if submission is not None and state is not None and state.phase != UNKNOWN:
        # The task ended without the shard finishing: killed, crashed, out of time or memory.
        tail = jobs.log_tail(submission, job)
        return status(
            "failed", f"{submission.backend.upper()} task {job} ended {state.raw}; {_why(progress)}\n{tail}"
        )
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


# --------------------------------------------------------------------------------------------
# The step


@dataclass(frozen=True)
class Target:
    """One run as a launcher wants it: the spec, its sharding, and how to submit it."""

    spec: RunSpec
    total_shards: int
    settings: ClusterSettings
    allow_partial: bool = False
    record: dict[str, Any] = field(default_factory=dict)  # launch/launch.json

    @property
    def run_dir(self) -> Path:
        return Path(self.spec.output_dir)


@dataclass(frozen=True)
class Step:
    """What :func:`advance` found and did.

    action: complete (nothing to do) | active (jobs still queued or running; nothing
    submitted) | gave-up (submitted ``max_submissions`` times already) | would-submit (a dry
    run; ``detail`` is what the backend would do) | submitted (jobs queued) | ran (the backend
    ran the shards and the reducer before returning; ``status`` says how that ended).
    """

    action: str
    status: RunStatus | None  # None: a new run that was not created (a dry run)
    todo: list[int]
    submission: Submission | None = None
    detail: str = ""


def advance(
    target: Target,
    backend: Backend,
    *,
    dry_run: bool = False,
    overwrite: bool = False,
    max_submissions: int | None = None,
    out: TextIO | None = None,
) -> Step:
    """Submit the shards of ``target`` that are not done (and a reducer), unless the run is
    complete, has jobs that are still active, or was submitted ``max_submissions`` times."""
    out = out or sys.stdout
    from nel.runner import open_spec_run

    run_dir = target.run_dir
    exists = RunDir(run_dir).run_file.exists()
    if exists and not overwrite:
        open_spec_run(target.spec, target.total_shards)  # refuses a clashing config; only reads
    status = run_status(run_dir) if exists else None
    if status is not None and status.active:
        return Step("active", status, [], detail=status.headline())
    if status is not None and status.complete and not overwrite:
        return Step("complete", status, [])
    todo = status.todo if (status is not None and not overwrite) else list(range(target.total_shards))
    tries = len(status.submissions) if status is not None else 0
    if max_submissions is not None and tries >= max_submissions:
        return Step(
            "gave-up", status, todo, detail=f"submitted {tries} times already; see nel status {run_dir}"
        )
    request = ShardRequest(
        run_dir, target.spec, target.total_shards, todo, target.settings, target.allow_partial
    )
    if dry_run:
        return Step(
            "would-submit", status, todo, detail=f"backend:  {backend.name}\n{backend.describe(request)}"
        )
    backend.check()  # before creating anything
    open_spec_run(target.spec, target.total_shards, overwrite=overwrite)  # or refuse a clashing config
    write_launch_record(run_dir, {**target.record, "backend": backend.name})
    submission = backend.submit(request, out)
    if submission is not None:
        record_submission(run_dir, submission)
    if backend.keeps_jobs:
        return Step("submitted", run_status(run_dir), todo, submission)
    return Step("ran", run_status(run_dir), todo, submission)
