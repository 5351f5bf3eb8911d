"""The run directory: `RunDir` owns every path in it, and run.json, the run's identity card.

    <output_dir>/
      run.json                    spec (no secrets), config hash, nel version
      shards/shard-00003-of-00008/
        part-*.parquet            trajectory rows, compacted from the journal as the shard runs
        journal-*.jsonl           rows finished since the last part (nel.store)
        progress.json             state and counts, rewritten as the shard runs
      deployment/                 logs of model servers nel started for a shard
      launch/ slurm/              the launcher's records and submitit's job logs
      metrics.json runtime.json trajectories.parquet report.txt   (written by the reducer)
      report.html                 `nel report` (nel.report), when no --out is given
      rescored/<scorer version>/  `nel rescore` (nel.rescore): a run dir of the same rows, scored again

Every shard of a run opens the same run.json: the first creates it, the others check
that their config matches, so a clash is caught before any request is sent. No other
module spells a name in here: they ask `RunDir` (and `ShardDir` for one shard's files).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from nel.errors import NotARunError, RunConflictError, StoreError
from nel.spec import identity_hash
from nel.version import __version__


@dataclass(frozen=True)
class ShardDir:
    """One shard's directory: its part files, journal segments and progress.json.

    Part ``N`` of a writer is the compaction of its journal segment ``N`` (same sequence
    number and token), which is how a reader tells a compacted segment from a pending one.
    """

    path: Path

    @property
    def progress(self) -> Path:
        return self.path / "progress.json"

    def part(self, seq: int, token: str) -> Path:
        return self.path / f"part-{seq:06d}-{token}.parquet"

    def journal(self, seq: int, token: str) -> Path:
        return self.path / f"journal-{seq:06d}-{token}.jsonl"

    def part_of(self, journal: Path) -> Path:
        """The part file that journal segment ``journal`` is compacted into."""
        return journal.with_name("part-" + journal.name.removeprefix("journal-")).with_suffix(".parquet")

    def parts(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet"))

    def journals(self) -> list[Path]:
        return sorted(self.path.glob("journal-*.jsonl"))

    def leftovers(self) -> list[Path]:
        """Temp files of writes a crash interrupted (never renamed into place, so never read)."""
        return sorted(self.path.glob("*.tmp")) + sorted(self.path.glob(".*.tmp"))


class RunDir:
    """Every path of one run; `clear` removes exactly what nel writes there."""

    __slots__ = ("root",)

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    @property
    def run_file(self) -> Path:
        return self.root / "run.json"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def deployment(self) -> Path:
        return self.root / "deployment"

    @property
    def launch(self) -> Path:
        return self.root / "launch"

    @property
    def submissions(self) -> Path:
        return self.launch / "submissions.json"

    @property
    def launch_record(self) -> Path:
        return self.launch / "launch.json"

    @property
    def slurm(self) -> Path:
        return self.root / "slurm"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def runtime(self) -> Path:
        return self.root / "runtime.json"

    @property
    def trajectories(self) -> Path:
        return self.root / "trajectories.parquet"

    @property
    def report(self) -> Path:
        return self.root / "report.txt"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def rescores(self) -> Path:
        return self.root / "rescored"

    def rescore(self, scorer_version: str) -> Path:
        """The default run dir of a rescore with ``scorer_version`` (a rescore is a run dir itself)."""
        return self.rescores / scorer_version

    def shard(self, idx: int, total: int) -> ShardDir:
        return ShardDir(self.shards / f"shard-{idx:05d}-of-{total:05d}")

    def deployment_log(self, role: str, idx: int, total: int) -> Path:
        """The log of the ``role`` ("model", "judge") server nel started for one shard."""
        return self.deployment / f"{role}-shard-{idx:05d}-of-{total:05d}.log"

    def slurm_job(self, job: str) -> Path:
        """submitit's folder of one job ("18", "17_3", or the "%j" pattern)."""
        return self.slurm / job

    def row_files(self) -> list[Path]:
        """Every part file and journal segment under shards/, of any shard."""
        if not self.shards.is_dir():
            return []
        return sorted(self.shards.glob("*/part-*.parquet")) + sorted(self.shards.glob("*/journal-*.jsonl"))

    def clear(self) -> None:
        """Remove what nel wrote into the run dir (and nothing else)."""
        for directory in (self.shards, self.deployment, self.launch, self.slurm, self.rescores):
            shutil.rmtree(directory, ignore_errors=True)
        for path in (self.run_file, self.metrics, self.runtime, self.trajectories, self.report, self.report_html):
            path.unlink(missing_ok=True)


def shard_dir(run_dir: Path, shard_idx: int, total_shards: int) -> Path:
    return RunDir(run_dir).shard(shard_idx, total_shards).path


def utcnow() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunInfo:
    run_dir: Path
    run_id: str
    total_shards: int
    spec: dict[str, Any]


def open_run(
    run_dir: Path,
    identity: dict[str, Any],
    *,
    total_shards: int,
    config: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> RunInfo:
    """Create the run dir and run.json, or check that an existing one is the same run.

    ``identity`` holds what changes results (hashed into the run id); ``config`` is the
    full resolved configuration, kept for the record. Neither may hold a secret. Rows
    without a run.json belong to a run nobody can name, so they are refused, not adopted.
    """
    rundir = RunDir(run_dir)
    path = rundir.run_file
    if overwrite:
        rundir.clear()
    run_id = identity_hash(identity)
    record: dict[str, Any] = {
        "nel_version": __version__,
        "run_id": run_id,
        "created_at": utcnow(),
        "total_shards": total_shards,
        "identity": identity,
        "spec": config or {},
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _refuse_orphan_rows(rundir)
    if _create_exclusive(path, record):
        return RunInfo(run_dir, run_id, total_shards, config or {})
    existing = read_run(run_dir)
    problems = _differences(existing, record)
    if problems:
        raise RunConflictError(
            f"{path} belongs to a different run: {'; '.join(problems)}. "
            "Use another --output-dir, or --overwrite to start over"
        )
    return RunInfo(run_dir, existing["run_id"], total_shards, existing["spec"])


def _refuse_orphan_rows(rundir: RunDir) -> None:
    rows = rundir.row_files()
    if rows:
        names = ", ".join(str(p.relative_to(rundir.root)) for p in rows[:3]) + (" ..." if len(rows) > 3 else "")
        raise RunConflictError(
            f"{rundir.root} holds {len(rows)} trajectory file(s) but no {rundir.run_file.name}, so "
            f"their run is unknown: {names}. Restore {rundir.run_file.name}, use another --output-dir, "
            "or --overwrite to delete them"
        )


def read_run(run_dir: Path) -> dict[str, Any]:
    path = RunDir(run_dir).run_file
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotARunError(f"{run_dir} is not a nel run directory: {path.name} is missing") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or "run_id" not in data or "total_shards" not in data:
        raise StoreError(f"{path} is not a nel run file (no run_id/total_shards)")
    return data


def clear_run(run_dir: Path) -> None:
    """Remove what nel wrote into run_dir (and nothing else)."""
    RunDir(run_dir).clear()


def data_digest(paths: Sequence[Path]) -> dict[str, str]:
    """SHA-256 (16 hex digits) of each data file a run scores against, keyed by path.

    Part of a run's identity: each part records it, so rows scored against another
    version of a file are named on resume instead of kept.
    """
    digests = {}
    for path in paths:
        sha = hashlib.sha256()
        try:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    sha.update(block)
        except OSError as exc:
            raise StoreError(f"cannot read data file {path}: {exc}") from exc
        digests[str(path)] = sha.hexdigest()[:16]
    return digests


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write ``path`` whole or not at all: a temp file beside it, renamed into place on
    success and deleted on any exception (a full disk leaves no ``.tmp`` behind)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write names no file; the one-line error must
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    with atomic_file(path) as handle:
        json.dump(data, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as handle:
        handle.write(text)


def write_progress(directory: Path, **fields: Any) -> None:
    write_json_atomic(ShardDir(directory).progress, {**fields, "updated_at": utcnow()})


def read_progress(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads(ShardDir(directory).progress.read_text())
    except (OSError, ValueError):
        return None


def _create_exclusive(path: Path, record: dict[str, Any]) -> bool:
    """Write run.json only if absent; atomic against shards starting at the same moment."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".run.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle, indent=2, default=str)
            handle.write("\n")
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)  # a failed write names no file; the one-line error must
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _differences(existing: dict[str, Any], new: dict[str, Any]) -> list[str]:
    problems = []
    old_ident, new_ident = existing.get("identity", {}), new["identity"]
    for key in sorted(set(old_ident) | set(new_ident)):
        if old_ident.get(key) != new_ident.get(key):
            problems.append(f"{key} was {old_ident.get(key)!r}, now {new_ident.get(key)!r}")
    if existing.get("total_shards") != new["total_shards"]:
        problems.append(f"total_shards was {existing.get('total_shards')}, now {new['total_shards']}")
    return problems
