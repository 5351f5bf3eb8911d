"""The run directory: where a run's files live, and run.json, the run's identity card.

    <output_dir>/
      run.json                    spec (no secrets), config hash, nel version
      shards/shard-00003-of-00008/
        part-*.parquet            trajectory rows, appended as the shard runs
        progress.json             state and counts, rewritten as the shard runs
      metrics.json runtime.json trajectories.parquet report.txt   (written by the reducer)

Every shard of a run opens the same run.json: the first creates it, the others check
that their config matches, so a clash is caught before any request is sent.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nel.errors import RunConflictError, StoreError
from nel.spec import identity_hash
from nel.version import __version__

RUN_FILE = "run.json"
OUTPUTS = ("metrics.json", "runtime.json", "trajectories.parquet", "report.txt")


def shard_dir(run_dir: Path, shard_idx: int, total_shards: int) -> Path:
    return run_dir / "shards" / f"shard-{shard_idx:05d}-of-{total_shards:05d}"


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
    full resolved configuration, kept for the record. Neither may hold a secret.
    """
    path = run_dir / RUN_FILE
    if overwrite and path.exists():
        clear_run(run_dir)
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


def read_run(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{run_dir} is not a nel run directory: {RUN_FILE} is missing") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or "run_id" not in data or "total_shards" not in data:
        raise StoreError(f"{path} is not a nel run file (no run_id/total_shards)")
    return data


def clear_run(run_dir: Path) -> None:
    """Remove what nel wrote into run_dir (and nothing else)."""
    for directory in ("shards", "launch", "slurm"):  # launch/ and slurm/: the launcher's job records
        shutil.rmtree(run_dir / directory, ignore_errors=True)
    for name in (RUN_FILE, *OUTPUTS):
        (run_dir / name).unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=False, default=str)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)  # a full disk must not leave a .tmp behind
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write names no file; the one-line error must
        raise


def write_progress(directory: Path, **fields: Any) -> None:
    write_json_atomic(directory / "progress.json", {**fields, "updated_at": utcnow()})


def read_progress(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / "progress.json").read_text())
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
