"""The trajectory row: the one definition the loop fills, the store writes and the reducer reads.

`TrajectoryRow` is the typed record; each field's Arrow type sits beside it, and `SCHEMA`
(the Parquet contract, documented in docs/output.md) is derived from those fields, so a
field is added in one place: one line in `TrajectoryRow`, filled in nel/loop.py.

`RowColumns` buffers rows as value tuples and turns them into an Arrow table in one go per
part: on the loop's hot path a row costs one C-level attribute fetch and a list append,
with no dict per row. The same tuples are the journal's lines (nel/store.py).

Files carry `SCHEMA_VERSION` in their metadata. `conform` reads any older version into
the current schema (one migration step per version) and refuses a newer one by name.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from nel.errors import StoreError

SCHEMA_VERSION = 3
"""1: the first columns. 2: the same columns; a part also records the run's data digest
(``nel.data``) beside its run id, and a shard may hold journal segments. 3: adds
``tool_calls`` and ``cached_calls`` (null in rows read from older files)."""

VERSION_KEY = "nel.schema_version"
TERMINAL_ERROR_KINDS = frozenset({"none", "context_length", "unfinished_reasoning"})
"""Outcomes that are final for a row: success, a prompt the model cannot take, or a reply that
ran out of tokens while reasoning (the same request would again); the last two score as no answer."""

_TIMESTAMP = pa.timestamp("us", tz="UTC")


def _col(arrow: pa.DataType, default: Any = None) -> Any:
    return field(default=default, metadata={"arrow": arrow})


@dataclass(slots=True)
class TrajectoryRow:
    """One (problem_idx, repeat) attempt as it is stored; docs/output.md says what each field means.

    ``started_at``/``finished_at`` are epoch seconds here (cheap on the hot path) and
    ``timestamp[us, UTC]`` on disk.
    """

    run_id: str = _col(pa.string(), "")
    benchmark: str = _col(pa.string(), "")
    shard_idx: int = _col(pa.int32(), 0)
    total_shards: int = _col(pa.int32(), 1)
    problem_idx: int = _col(pa.int64(), 0)
    repeat: int = _col(pa.int32(), 0)
    subset: str | None = _col(pa.string())
    messages: str | None = _col(pa.string())
    expected_answer: str | None = _col(pa.string())
    response: str | None = _col(pa.string())
    reasoning_content: str | None = _col(pa.string())
    tool_calls: str | None = _col(pa.string())
    extracted_answer: str | None = _col(pa.string())
    reward: float = _col(pa.float64(), 0.0)
    correct: bool = _col(pa.bool_(), False)
    scores: dict[str, float] | None = _col(pa.map_(pa.string(), pa.float64()))
    details: str | None = _col(pa.string())
    finish_reason: str | None = _col(pa.string())
    prompt_tokens: int | None = _col(pa.int64())
    completion_tokens: int | None = _col(pa.int64())
    reasoning_tokens: int | None = _col(pa.int64())
    model_calls: int | None = _col(pa.int32())
    attempts: int | None = _col(pa.int32())
    cached_calls: int | None = _col(pa.int32())
    model_latency_s: float | None = _col(pa.float64())
    attempt_latencies_s: list[float] | tuple[float, ...] | None = _col(pa.list_(pa.float64()))
    verify_time_s: float | None = _col(pa.float64())
    error_kind: str = _col(pa.string(), "none")
    error: str | None = _col(pa.string())
    started_at: float = _col(_TIMESTAMP, 0.0)
    finished_at: float = _col(_TIMESTAMP, 0.0)


SCHEMA = pa.schema([(f.name, f.metadata["arrow"]) for f in fields(TrajectoryRow)])
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
_TIME_COLUMNS = frozenset(name for name in COLUMNS if SCHEMA.field(name).type == _TIMESTAMP)

row_values: Callable[[TrajectoryRow], tuple[Any, ...]] = operator.attrgetter(*COLUMNS)
"""A row's values in `COLUMNS` order, fetched in C."""


def schema_with_metadata(metadata: dict[str, str]) -> pa.Schema:
    """The row schema plus file-level facts the reducer needs (metrics type, score names, run id)."""
    meta = {VERSION_KEY: str(SCHEMA_VERSION), **metadata}
    return SCHEMA.with_metadata({k.encode(): v.encode() for k, v in meta.items()})


class RowColumns:
    """Rows of one part, kept as value tuples until `table` transposes them (in C) into columns."""

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: list[Sequence[Any]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def append_values(self, values: Sequence[Any]) -> None:
        """Add one row given as its values in `COLUMNS` order (`row_values`, a journal line)."""
        self._rows.append(values)

    def table(self, schema: pa.Schema = SCHEMA) -> pa.Table:
        columns = list(zip(*self._rows, strict=True)) if self._rows else [() for _ in COLUMNS]
        arrays = [_array(name, values) for name, values in zip(COLUMNS, columns, strict=True)]
        return pa.Table.from_arrays(arrays, schema=schema)


def _array(name: str, values: Sequence[Any]) -> pa.Array:
    if name in _TIME_COLUMNS:  # epoch seconds in the hot path, microseconds on disk
        micros = pc.cast(pc.multiply(pa.array(values, pa.float64()), 1e6), pa.int64(), safe=False)
        return micros.cast(_TIMESTAMP)
    return pa.array(values, SCHEMA.field(name).type)


def file_version(metadata: dict[bytes, bytes] | None, where: str) -> int:
    """The schema version a file says it has; a file without one is not a nel file."""
    raw = (metadata or {}).get(VERSION_KEY.encode())
    try:
        return int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise StoreError(f"{where} is not a nel trajectory file (no valid {VERSION_KEY} in its metadata)") from None


def conform(table: pa.Table, where: str, columns: Sequence[str] | None = None) -> pa.Table:
    """``table`` (read from ``where``) in the current layout: older versions migrated, newer refused.

    ``columns`` are the ones the reader asked for (all when None): a column an older version
    did not have is added as nulls, so tables of every version concatenate.
    """
    version = file_version(table.schema.metadata, where)
    check_version(version, where)
    while version < SCHEMA_VERSION:
        table = _MIGRATIONS[version](table)
        version += 1
    wanted = COLUMNS if columns is None else columns
    for name in wanted:
        if name not in table.column_names:
            table = table.append_column(SCHEMA.field(name), pa.nulls(table.num_rows, SCHEMA.field(name).type))
    return table.select(list(wanted)) if list(table.column_names) != list(wanted) else table


def check_version(version: int, where: str) -> None:
    """Refuse a version this nel cannot read: a newer one (by name), or one no nel wrote."""
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{where} has trajectory schema version {version}, but this nel reads versions up to "
            f"{SCHEMA_VERSION}: upgrade nel to read it"
        )
    if version < min(_MIGRATIONS):
        raise StoreError(f"{where} has trajectory schema version {version}, which no nel wrote")


def _from_v1(table: pa.Table) -> pa.Table:
    """Version 1 → 2: the columns are the same; v1 parts carry no data digest, which readers
    treat as unknown (the data check is skipped for them, see nel.store.check_identity)."""
    return _with_version(table, 2)


def _from_v2(table: pa.Table) -> pa.Table:
    """Version 2 → 3: ``tool_calls`` and ``cached_calls`` did not exist; `conform` adds them as nulls."""
    return _with_version(table, 3)


def _with_version(table: pa.Table, version: int) -> pa.Table:
    meta = dict(table.schema.metadata or {})
    meta[VERSION_KEY.encode()] = str(version).encode()
    return table.replace_schema_metadata(meta)


_MIGRATIONS: dict[int, Callable[[pa.Table], pa.Table]] = {1: _from_v1, 2: _from_v2}
"""version N → N+1; a new version adds one entry here."""
