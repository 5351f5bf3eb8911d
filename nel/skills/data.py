"""Where prepared benchmark data lives and how a split is read, row by row, with checks.

The layout is NeMo-Skills' prepared layout, ``<data_dir>/<benchmark>/<split>.jsonl``, so a
directory made by ``ns prepare_data`` works as is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import platformdirs

from nel.errors import DataError


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--data-dir``, else ``NEL_DATA_DIR``, else a per-user cache directory."""
    if explicit:
        return Path(explicit).expanduser()
    from_env = os.environ.get("NEL_DATA_DIR")
    if from_env:
        return Path(from_env).expanduser()
    return Path(platformdirs.user_cache_dir("nel")) / "data"


def split_path(data_dir: Path, benchmark: str, split: str) -> Path:
    return data_dir / benchmark / f"{split}.jsonl"


def read_jsonl(path: Path, required: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Every row of ``path``; a bad line or a missing field names the file and line."""
    required = tuple(required)
    rows: list[dict[str, Any]] = []
    try:
        handle = path.open("rb")  # bytes, so that a line that is not UTF-8 is named by its number
    except FileNotFoundError:
        raise DataError(f"dataset file {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"dataset file {path} is a directory, not a JSONL file") from None
    except OSError as exc:
        raise DataError(f"cannot read dataset file {path}: {exc.strerror or exc}") from None
    with handle:
        for lineno, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (byte {exc.start + 1} of the line)") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [name for name in required if name not in row]
            if missing:
                raise DataError(f"{path}:{lineno}: row lacks field(s) {', '.join(missing)}")
            rows.append(row)
    return rows


def write_jsonl_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    count = 0
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)  # a full disk must not leave half a split behind
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write names no file; the one-line error must
        raise
    return count
