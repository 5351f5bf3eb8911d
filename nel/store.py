"""The trajectory store: a shard's journal, its Parquet parts, and reading both back.

Every finished row is appended to the shard's journal at once (a ``write`` to the page
cache, which outlives a SIGKILL of the process; in the eval loop, one ``write`` for all the
rows that finish in one turn of the event loop, before it waits on anything), and buffered;
every ``flush_rows`` rows or ``flush_seconds`` the buffer becomes a Parquet part, written
whole to ``*.tmp`` and renamed
into place, and the journal segment it came from is deleted. Part ``N`` and journal segment
``N`` share a name (`ShardDir`), so a crash between the rename and the delete leaves a
segment a reader recognises as compacted. `recover` turns what a killed writer left into
parts before a resume reads them: a SIGKILL loses only the requests in flight.

Journal segment format (JSON lines): a header object ``{"nel_journal": 1, "schema_version":
N, "columns": [...], "metadata": {...}}``, then one JSON array per row, its values in the
header's column order (`nel.trajectory.row_values`). A torn last line is ignored.

A row is *finished* when its error_kind is terminal (`TERMINAL_ERROR_KINDS`); a rerun
skips finished (problem_idx, repeat) pairs and redoes the rest. Rows that failed are kept,
and superseded at reduce time by a later attempt. Every part carries the run id and the
data digest of the run that wrote it; `finished_keys` refuses parts of another run.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from nel.errors import RunConflictError, StoreError
from nel.rundir import ShardDir
from nel.trajectory import (
    COLUMNS,
    SCHEMA_VERSION,
    TERMINAL_ERROR_KINDS,
    RowColumns,
    TrajectoryRow,
    check_version,
    conform,
    row_values,
    schema_with_metadata,
)

JOURNAL_FORMAT = 1
RUN_ID_KEY, DATA_KEY = "nel.run_id", "nel.data"


@dataclass(frozen=True)
class Staged:
    """A part ready to write: its rows, its file, and the journal segment it replaces."""

    table: pa.Table
    part: Path
    journal: Path | None


class ShardWriter:
    """Journals rows as they finish and compacts them into atomic Parquet part files.

    `append` is on the eval loop's hot path: one tuple and its journal line. With ``defer``
    (the event loop's ``call_soon``) the lines of the rows that finish in one turn of the loop
    go out in one ``write`` at its end, before the loop waits on anything: a syscall per row
    cost the loop 7-9% of its throughput (benchmarks/README.md). A deferred write that fails
    (a full disk) is raised by the next `append`, on the caller's path, not in the callback.
    Without ``defer``, each line is written at once. `stage` (in the loop: it holds the GIL)
    turns the buffer into a table and starts a new journal segment; `write` (in a thread:
    encoding, compression and fsync release the GIL) writes the part and deletes the segment
    it replaces.
    """

    def __init__(
        self,
        shard: ShardDir,
        *,
        metadata: dict[str, str] | None = None,
        flush_rows: int = 2000,
        flush_seconds: float = 10.0,
        journal: bool = True,
        defer: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        self.shard = shard
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.schema = schema_with_metadata(metadata or {})
        self._metadata = metadata or {}
        self._token = secrets.token_hex(4)
        self._seq = 1
        self._lock = threading.Lock()
        self._rows = RowColumns()
        self.rows_written = 0
        shard.path.mkdir(parents=True, exist_ok=True)
        self._fd = self._open_journal() if journal else -1
        self._defer = defer
        self._lines = bytearray()  # journal lines not yet written (only with `defer`)
        self._deferred_error: OSError | None = None

    @property
    def buffered(self) -> int:
        return len(self._rows)

    def append(self, row: TrajectoryRow) -> None:
        values = row_values(row)
        self._rows.append_values(values)
        if self._fd < 0:
            return
        if self._deferred_error is not None:
            raise self._deferred_error
        if self._defer is None:
            self._lines += _journal_line(values)
            self.write_journal()
        else:
            if not self._lines:
                self._defer(self._write_deferred)
            self._lines += _journal_line(values)

    def write_journal(self) -> None:
        """Write the journal lines not yet written; an OSError names the segment."""
        # Taken, not cleared after: a failed write keeps its buffer exported in the traceback,
        # and the lines are not retried (the shard stops; a retry would tear the segment).
        lines, self._lines = self._lines, bytearray()
        if not lines or self._fd < 0:
            return
        try:
            _write_all(self._fd, lines)
        except OSError as exc:
            if exc.filename is None:
                exc.filename = str(self.shard.journal(self._seq, self._token))
            raise

    def _write_deferred(self) -> None:
        try:
            self.write_journal()
        except OSError as exc:
            self._deferred_error = exc

    def flush(self) -> Path | None:
        """Write everything buffered as one part file; return its path (None if empty)."""
        staged = self.stage()
        if staged is None:
            return None
        self.write(staged)
        return staged.part

    def close(self) -> None:
        """Write what is buffered as the last part (no new journal segment is started for it),
        or drop the journal segment left empty."""
        staged = self.stage(last=True)
        if staged is not None:
            self.write(staged)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self.shard.journal(self._seq, self._token).unlink(missing_ok=True)

    def stage(self, *, last: bool = False) -> Staged | None:
        """Take the buffered rows as a table, name its part, and start the next journal segment
        (none when ``last``: the writer is closing)."""
        rows, self._rows = self._rows, RowColumns()
        if not len(rows):
            return None
        with self._lock:
            seq = self._seq
            self._seq += 1
        journal = None
        if self._fd >= 0:
            self.write_journal()  # the segment holds every row of the part it becomes
            os.close(self._fd)
            journal = self.shard.journal(seq, self._token)
            self._fd = -1 if last else self._open_journal()
        return Staged(rows.table(self.schema), self.shard.part(seq, self._token), journal)

    def write(self, staged: Staged) -> None:
        _write_atomic(staged.table, staged.part)
        if staged.journal is not None:
            staged.journal.unlink(missing_ok=True)  # its rows are in the part now
        with self._lock:
            self.rows_written += len(staged.table)

    def _open_journal(self) -> int:
        path = self.shard.journal(self._seq, self._token)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        header = {"nel_journal": JOURNAL_FORMAT, "schema_version": SCHEMA_VERSION,
                  "columns": list(COLUMNS), "metadata": self._metadata}  # fmt: skip
        try:
            _write_all(fd, orjson.dumps(header) + b"\n")
        except OSError as exc:
            os.close(fd)
            exc.filename = exc.filename or str(path)
            raise
        return fd


def _journal_line(values: Sequence[Any]) -> bytes:
    try:
        return orjson.dumps(values) + b"\n"
    except TypeError:  # something orjson cannot encode (a lone surrogate): the slow path
        return json.dumps(values, default=str).encode() + b"\n"


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_atomic(table: pa.Table, final: Path) -> None:
    tmp = final.with_name(final.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)  # a full disk must not leave a .tmp behind
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(final)  # a failed write names no file; the one-line error must
        raise


# --------------------------------------------------------------------------------------------
# Reading


def row_sources(shard: ShardDir) -> list[Path]:
    """The files holding this shard's rows: its parts, and journal segments not yet compacted."""
    parts = shard.parts()
    compacted = set(parts)
    return parts + [j for j in shard.journals() if shard.part_of(j) not in compacted]


def read_part(path: Path, columns: Iterable[str] | None = None, *, dictionary: Iterable[str] = ()) -> pa.Table:
    """Read one part file (or journal segment) in the current schema, naming the file on any fault.

    ``dictionary`` names string columns to read dictionary-encoded (few distinct values:
    4 bytes a row instead of a string).
    """
    if path.suffix == ".jsonl":
        table = read_journal(path)
        table = table.select(list(columns)) if columns is not None else table
        for name in dictionary:
            if name in table.column_names:
                i = table.column_names.index(name)
                table = table.set_column(i, name, table.column(i).dictionary_encode())
        return table
    wanted = list(columns) if columns is not None else None
    try:
        present = set(pq.read_schema(path).names)  # an older part may lack a newer column
        table = pq.read_table(
            path,
            columns=[c for c in wanted if c in present] if wanted is not None else None,
            read_dictionary=list(dictionary) or None,
        )
    except (pa.ArrowException, OSError) as exc:
        raise StoreError(
            f"cannot read part file {path}: {exc}. Move it aside (its rows will be redone) "
            "or delete it, then rerun"
        ) from exc
    return conform(table, f"part file {path}", wanted)


def read_journal(path: Path) -> pa.Table:
    """A journal segment's rows as a table (its header's metadata on the schema).

    The last line may be torn (the process died inside a write): it is left out. A
    segment whose header is torn holds no rows.
    """
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise StoreError(f"cannot read journal {path}: {exc}") from exc
    lines.pop()  # after the last newline: empty, or a torn line
    if not lines:
        return RowColumns().table(schema_with_metadata({}))
    try:
        header = orjson.loads(lines[0])
        names, meta, version = header["columns"], header["metadata"], int(header["schema_version"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"journal {path}:1: not a nel journal header ({exc})") from None
    check_version(version, f"journal {path}")
    picks = [names.index(c) if c in names else None for c in COLUMNS]
    rows = RowColumns()
    for lineno, line in enumerate(lines[1:], 2):
        try:
            values = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise StoreError(f"journal {path}:{lineno}: not a JSON row ({exc})") from None
        if len(values) != len(names):
            raise StoreError(f"journal {path}:{lineno}: {len(values)} values for {len(names)} columns")
        rows.append_values(values if names == list(COLUMNS) else [None if i is None else values[i] for i in picks])
    return rows.table(schema_with_metadata(meta))


def recover(shard: ShardDir) -> None:
    """Make what a killed writer left readable as parts, before a resume reads them.

    Temp files of interrupted writes are deleted (nobody renamed them into place); a journal
    segment whose part exists was compacted and is deleted; any other segment becomes its part.
    """
    for leftover in shard.leftovers():
        leftover.unlink(missing_ok=True)
    for journal in shard.journals():
        part = shard.part_of(journal)
        if not part.exists():
            table = read_journal(journal)
            if len(table):
                _write_atomic(table, part)
        journal.unlink(missing_ok=True)


def metadata_of(table: pa.Table) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}


def identity_problem(path: Path, meta: dict[str, str], run_id: str, data: dict[str, str] | None) -> str | None:
    """Why the rows of ``path`` are not this run's (None if they are). ``data`` None: not checked;
    a part of schema version 1 has no data digest, so its data is not checked either."""
    if meta.get(RUN_ID_KEY) != run_id:
        return f"{path.name} is of run {meta.get(RUN_ID_KEY) or 'unknown'}"
    if data is None or DATA_KEY not in meta:
        return None
    old = json.loads(meta[DATA_KEY])
    known = set(old.values())
    changed = [f for f, digest in data.items() if digest not in known]
    if changed or len(old) != len(data):
        was = ", ".join(f"{f} sha256 {d}" for f, d in old.items()) or "no data file"
        now = ", ".join(f"{f} sha256 {data[f]}" for f in changed) or "other files"
        return f"{path.name} was scored against {was}; now {now}"
    return None


def finished_keys(shard: ShardDir, run_id: str, data: dict[str, str] | None = None) -> set[tuple[int, int]]:
    """(problem_idx, repeat) pairs that already have a terminal row in this shard.

    Run `recover` first. A part of another run, or of this run scored against other data,
    is refused by name rather than adopted.
    """
    done: set[tuple[int, int]] = set()
    problems = []
    for path in row_sources(shard):
        table = read_part(path, ["problem_idx", "repeat", "error_kind"])
        if not len(table):  # a live writer's fresh segment: nothing to adopt or refuse
            continue
        problem = identity_problem(path, metadata_of(table), run_id, data)
        if problem is not None:
            problems.append(problem)
            continue
        idx = table.column("problem_idx").to_pylist()
        rep = table.column("repeat").to_pylist()
        kinds = table.column("error_kind").to_pylist()
        done.update((i, r) for i, r, k in zip(idx, rep, kinds) if k in TERMINAL_ERROR_KINDS)
    if problems:
        raise_foreign(shard.path, problems, run_id)
    return done


def raise_foreign(where: Path, problems: list[str], run_id: str) -> None:
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    raise RunConflictError(
        f"{where} holds {len(problems)} trajectory file(s) that are not of this run "
        f"(run {run_id} in run.json): {shown}. Move them out, restore the data, or use "
        "--overwrite to start over"
    )
