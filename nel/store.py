"""Parquet trajectory store: the versioned row schema, shard part writers and readers.

A shard appends rows to small part files, each written whole to ``*.tmp`` and renamed
into place, so a reader never sees half a file and a SIGKILL loses at most the rows
still buffered in memory. A row is *finished* when its error_kind is terminal (see
`TERMINAL_ERROR_KINDS`); a rerun skips finished (problem_idx, repeat) pairs and redoes
the rest. Rows that failed are kept, and superseded at reduce time by a later attempt.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nel.errors import StoreError

SCHEMA_VERSION = 1
TERMINAL_ERROR_KINDS = frozenset({"none", "context_length"})
"""Outcomes that are final for a row: success, or a prompt the model cannot take."""

SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("benchmark", pa.string()),
        ("shard_idx", pa.int32()),
        ("total_shards", pa.int32()),
        ("problem_idx", pa.int64()),
        ("repeat", pa.int32()),
        ("subset", pa.string()),
        ("messages", pa.string()),
        ("expected_answer", pa.string()),
        ("response", pa.string()),
        ("reasoning_content", pa.string()),
        ("extracted_answer", pa.string()),
        ("reward", pa.float64()),
        ("correct", pa.bool_()),
        ("scores", pa.map_(pa.string(), pa.float64())),
        ("details", pa.string()),
        ("finish_reason", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("reasoning_tokens", pa.int64()),
        ("model_calls", pa.int32()),
        ("attempts", pa.int32()),
        ("model_latency_s", pa.float64()),
        ("attempt_latencies_s", pa.list_(pa.float64())),
        ("verify_time_s", pa.float64()),
        ("error_kind", pa.string()),
        ("error", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
    ]
)
COLUMNS = tuple(SCHEMA.names)
_TIME_COLUMNS = ("started_at", "finished_at")


def schema_with_metadata(metadata: dict[str, str]) -> pa.Schema:
    """The row schema plus file-level facts the reducer needs (metrics type, score names)."""
    meta = {"nel.schema_version": str(SCHEMA_VERSION), **metadata}
    return SCHEMA.with_metadata({k.encode(): v.encode() for k, v in meta.items()})


def part_files(shard_dir: Path) -> list[Path]:
    return sorted(shard_dir.glob("part-*.parquet"))


class ShardWriter:
    """Buffers rows and writes them as atomic Parquet part files.

    ``flush_rows``/``flush_seconds`` bound how much a crash can lose. `append` only keeps
    the row (it is on the eval loop's hot path); `flush`, which the caller may run in a
    worker thread, turns the rows into columns and writes them. Appends and flushes may
    interleave: a flush swaps the buffer out first (list operations are atomic under the GIL).
    """

    def __init__(
        self,
        shard_dir: Path,
        *,
        metadata: dict[str, str] | None = None,
        flush_rows: int = 2000,
        flush_seconds: float = 10.0,
    ) -> None:
        self.shard_dir = shard_dir
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.schema = schema_with_metadata(metadata or {})
        self._token = secrets.token_hex(4)
        self._seq = 0
        self._lock = threading.Lock()
        self._rows: list[dict[str, Any]] = []
        self.rows_written = 0
        shard_dir.mkdir(parents=True, exist_ok=True)

    @property
    def buffered(self) -> int:
        return len(self._rows)

    def append(self, row: dict[str, Any]) -> None:
        """Buffer one row; ``started_at``/``finished_at`` are epoch seconds (floats)."""
        self._rows.append(row)

    def flush(self) -> Path | None:
        """Write everything buffered as one part file; return its path (None if empty)."""
        staged = self.stage()
        if staged is None:
            return None
        self.write(*staged)
        return staged[1]

    def stage(self) -> tuple[pa.Table, Path] | None:
        """Turn the buffered rows into a table and name its part file.

        This half holds the GIL (Python objects → Arrow); the eval loop runs it inline,
        which measured faster than a thread contending for the GIL. `write` releases the
        GIL (encoding, compression, fsync) and may run in a thread.
        """
        rows, self._rows = self._rows, []
        if not rows:
            return None
        with self._lock:
            self._seq += 1
            final = self.shard_dir / f"part-{self._seq:06d}-{self._token}.parquet"
        columns = {name: [row.get(name) for row in rows] for name in COLUMNS}
        for name in _TIME_COLUMNS:  # epoch seconds in the hot path, timestamps on disk
            columns[name] = _timestamps(columns[name])
        return pa.Table.from_pydict(columns, schema=self.schema), final

    def write(self, table: pa.Table, final: Path) -> None:
        _write_atomic(table, final)
        with self._lock:
            self.rows_written += len(table)


def _timestamps(seconds: list[float | None]) -> pa.Array:
    micros = pa.array(seconds, pa.float64())
    micros = pc.cast(pc.multiply(micros, 1e6), pa.int64(), safe=False)
    return micros.cast(pa.timestamp("us", tz="UTC"))


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


def read_part(path: Path, columns: Iterable[str] | None = None, *, dictionary: Iterable[str] = ()) -> pa.Table:
    """Read one part file, turning any corruption into a StoreError naming the file.

    ``dictionary`` names string columns to read dictionary-encoded (few distinct values:
    4 bytes a row instead of a string).
    """
    try:
        return pq.read_table(
            path,
            columns=list(columns) if columns is not None else None,
            read_dictionary=list(dictionary) or None,
        )
    except (pa.ArrowException, OSError) as exc:
        raise StoreError(
            f"cannot read part file {path}: {exc}. Move it aside (its rows will be redone) "
            "or delete it, then rerun"
        ) from exc


def finished_keys(shard_dir: Path) -> set[tuple[int, int]]:
    """(problem_idx, repeat) pairs that already have a terminal row in this shard.

    Also removes ``*.tmp`` leftovers of writes that a crash interrupted: they were never
    renamed into place, so no reader counted them.
    """
    for leftover in shard_dir.glob("*.tmp"):
        leftover.unlink(missing_ok=True)
    done: set[tuple[int, int]] = set()
    for path in part_files(shard_dir):
        table = read_part(path, ["problem_idx", "repeat", "error_kind"])
        idx = table.column("problem_idx").to_pylist()
        rep = table.column("repeat").to_pylist()
        kinds = table.column("error_kind").to_pylist()
        done.update((i, r) for i, r, k in zip(idx, rep, kinds) if k in TERMINAL_ERROR_KINDS)
    return done
