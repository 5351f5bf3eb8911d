"""What a launcher backend is: the ``Backend`` protocol and the records it shares with the core.

A backend runs a run's shards somewhere (this process, SLURM, ...) as one *submission*: an
array of shard tasks plus a reduce task that starts once every shard task has ended, however
it ended. The core (nel.reconcile) decides what to submit; a backend only carries it out and
answers for the jobs it made. Job states use one vocabulary (:class:`JobState`), so the core
never reads a scheduler's own words.

Every submission is appended to ``<run_dir>/launch/submissions.json`` with the name of its
backend, which is how ``nel status`` knows whom to ask about it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TextIO

from nel.errors import ConfigError, StoreError
from nel.keys import reject_unknown_keys
from nel.rundir import RunDir, write_json_atomic
from nel.spec import RunSpec

# JobState.phase values
PENDING, RUNNING, COMPLETED, FAILED, UNKNOWN = "pending", "running", "completed", "failed", "unknown"
ACTIVE_PHASES = frozenset({PENDING, RUNNING})


@dataclass(frozen=True)
class JobState:
    """Where one job (or array task) stands: ``phase`` for the core, ``raw`` for people.

    phase: pending | running | completed (ended with exit 0) | failed (ended otherwise:
    crashed, cancelled, out of time or memory) | unknown (the backend does not know the job).
    raw: the backend's own word ("OUT_OF_MEMORY"), shown by ``nel status``.
    """

    phase: str
    raw: str

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES


@dataclass(frozen=True)
class ReducerResources:
    time_min: int = 60
    cpus_per_task: int = 1
    mem_gb: float = 4.0


@dataclass(frozen=True)
class ClusterSettings:
    """Where and how a run's jobs are submitted (``conf/cluster/*.yaml``).

    One set for every backend: each reads the keys that apply to it (the local backend none,
    SLURM all of them; a Kubernetes backend would map time, cpus and memory to a Job's limits).
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 240
    cpus_per_task: int = 1
    mem_gb: float = 2.0
    array_parallelism: int = 64
    signal_delay_s: int = 120
    max_requeues: int = 3
    job_name: str = "nel"
    python: str | None = None
    setup: list[str] = field(default_factory=list)
    additional: dict[str, Any] = field(default_factory=dict)
    reducer: ReducerResources = field(default_factory=ReducerResources)

    def validate(self) -> ClusterSettings:
        for name in ("time_min", "cpus_per_task", "array_parallelism"):
            if getattr(self, name) < 1:
                raise ConfigError(f"cluster.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.mem_gb <= 0 or self.reducer.mem_gb <= 0:
            raise ConfigError("cluster.mem_gb and cluster.reducer.mem_gb must be > 0")
        if self.signal_delay_s < 0 or self.max_requeues < 0:
            raise ConfigError("cluster.signal_delay_s and cluster.max_requeues must be >= 0")
        if self.signal_delay_s >= self.time_min * 60:
            raise ConfigError(
                f"cluster.signal_delay_s ({self.signal_delay_s}) must be shorter than cluster.time_min "
                f"({self.time_min} min), or every task would checkpoint as soon as it starts"
            )
        clash = sorted(set(self.additional) & MANAGED_SBATCH_OPTIONS)
        if clash:
            raise ConfigError(
                f"cluster.additional sets {', '.join(clash)}, which nel manages itself; "
                "use the cluster.* keys (time_min, cpus_per_task, mem_gb, partition, ...) instead"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterSettings:
        data = dict(data)
        reducer_raw = data.pop("reducer", None) or {}
        reject_unknown_keys(ReducerResources, reducer_raw, "cluster.reducer")
        reject_unknown_keys(cls, data, "cluster")
        data["setup"] = list(data.get("setup") or [])
        data["additional"] = dict(data.get("additional") or {})
        return cls(reducer=ReducerResources(**reducer_raw), **data).validate()


# sbatch options nel sets from ClusterSettings (or submitit sets); not overridable via `additional`.
MANAGED_SBATCH_OPTIONS = frozenset(
    {"array", "dependency", "time", "cpus_per_task", "mem", "partition", "account", "qos", "job_name",
     "output", "error", "signal", "open_mode"}
)  # fmt: skip


@dataclass(frozen=True)
class ShardRequest:
    """What the core asks a backend to run: ``shards`` of the run, then its reducer."""

    run_dir: Path
    spec: RunSpec
    total_shards: int
    shards: list[int]  # the shards that are not done; may be empty (then only the reducer)
    settings: ClusterSettings
    allow_partial: bool = False


@dataclass(frozen=True)
class Submission:
    """One submission: which shards went into which array job, and the reducer after it."""

    array_job: str | None  # None: every shard was done, only the reducer was submitted
    shards: list[int]  # array task i runs shard shards[i] ...
    tasks: list[str]  # ... whose job id is tasks[i] (SLURM: "17_3"; a one-task "array" is a plain job "17")
    reducer_job: str
    total_shards: int
    submitted_at: str
    backend: str = "slurm"  # whom to ask about these jobs (records written before backends: SLURM)

    def task_of(self, shard_idx: int) -> str | None:
        if shard_idx not in self.shards:
            return None
        return self.tasks[self.shards.index(shard_idx)]

    def job_ids(self) -> list[str]:
        return [j for j in (self.array_job, self.reducer_job) if j is not None]


class Backend(Protocol):
    """Runs a run's shards and its reducer somewhere, and answers for the jobs it made.

    Implementations: nel.backends.local (this process), nel.backends.slurm (submitit). A new
    one is a module with a class like these plus one line in ``nel.backends.BACKENDS``.
    """

    name: ClassVar[str]
    keeps_jobs: ClassVar[bool]
    """True when ``submit`` returns while jobs still run (their states are then asked for);
    False when it returns after the shards and the reducer have run (the local backend)."""

    def check(self) -> None:
        """Raise :class:`~nel.errors.LaunchError` if this backend cannot run here.

        Called before anything is created, so a missing scheduler leaves no run dir behind."""

    def describe(self, request: ShardRequest) -> str:
        """What :meth:`submit` would do with ``request``, for ``--dry-run``; creates nothing."""

    def submit(self, request: ShardRequest, out: TextIO) -> Submission | None:
        """Run or queue ``request.shards`` as one array, and a reducer that starts after all of
        them have ended. Returns the submission (recorded in submissions.json by the caller),
        or None for a backend that keeps no jobs."""

    def states(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        """The state of each job or array task of ``job_ids`` that the backend knows."""

    def cancel(self, job_ids: Iterable[str]) -> None:
        """Stop the jobs (queued or running); their shards keep the rows they finished."""

    def log_tail(self, run_dir: Path, job: str) -> str:
        """The end of a job's log, to show why it failed."""


# --------------------------------------------------------------------------------------------
# The run's records of its launches


def record_submission(run_dir: Path, submission: Submission) -> None:
    entries = [dataclasses.asdict(s) for s in read_submissions(run_dir)]
    entries.append(dataclasses.asdict(submission))
    write_json_atomic(RunDir(run_dir).submissions, entries)


def read_submissions(run_dir: Path) -> list[Submission]:
    path = RunDir(run_dir).submissions
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    try:
        return [Submission(**entry) for entry in raw]
    except TypeError as exc:
        raise StoreError(f"{path} is not a nel submissions file: {exc}") from exc


def write_launch_record(run_dir: Path, record: dict[str, Any]) -> None:
    """The launcher's settings (backend, cluster, shards, overrides), so `nel resume` can reuse them."""
    write_json_atomic(RunDir(run_dir).launch_record, record)


def read_launch_record(run_dir: Path) -> dict[str, Any] | None:
    path = RunDir(run_dir).launch_record
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else None


def ranges(indices: Sequence[int]) -> str:
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
