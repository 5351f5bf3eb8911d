"""Download a benchmark from its original public source into the prepared layout.

Sources are fetched with httpx (this is not a hot path). ``NEL_DATA_MIRROR`` (or the
``mirror`` argument) replaces every upstream URL with ``<mirror>/<mirror_name>``, which is
how tests serve real upstream files over loopback and how air-gapped sites point nel at
an internal copy. The result is checked (fields, row count) before it is renamed into
place, so a failed prepare never leaves a half-written split behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import httpx
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from nel.errors import DataError
from nel.skills.catalog import Benchmark, Source
from nel.skills.data import read_jsonl, split_path, write_jsonl_atomic


def source_url(source: Source, mirror: str | None = None) -> str:
    mirror = mirror or os.environ.get("NEL_DATA_MIRROR")
    return f"{mirror.rstrip('/')}/{source.mirror_name}" if mirror else source.url


def prepare(bench: Benchmark, data_dir: Path, *, mirror: str | None = None, show_progress: bool = True) -> Path:
    """Fetch, convert, check and write ``<data_dir>/<bench>/<split>.jsonl``; return its path."""
    if bench.convert is None or not bench.sources:
        raise DataError(f"benchmark {bench.name!r} has no native preparation: {bench.not_runnable or 'no source'}")
    target = split_path(data_dir, bench.name, bench.eval_split)
    with tempfile.TemporaryDirectory(prefix=f"nel-prepare-{bench.name}-") as tmp:
        downloaded = [
            _download(source_url(s, mirror), Path(tmp) / f"source-{i}", show_progress) for i, s in enumerate(bench.sources)
        ]
        try:
            rows = list(bench.convert(downloaded))
        except DataError:
            raise
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(f"cannot convert {bench.name} from {source_url(bench.sources[0], mirror)}: {exc!r}") from exc
        _check(bench, rows)
        staged = Path(tmp) / "staged.jsonl"
        write_jsonl_atomic(staged, rows)
        read_jsonl(staged, bench.required_fields)  # what we wrote must read back
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp_target = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp_target.write_bytes(staged.read_bytes())
        os.replace(tmp_target, target)
    return target


def _check(bench: Benchmark, rows: list[dict]) -> None:
    if bench.num_problems is not None and len(rows) != bench.num_problems:
        raise DataError(
            f"{bench.name}: source gave {len(rows)} rows, expected {bench.num_problems}; refusing to write "
            "a partial dataset"
        )
    for i, row in enumerate(rows):
        missing = [f for f in bench.required_fields if f not in row]
        if missing:
            raise DataError(f"{bench.name}: converted row {i} lacks {', '.join(missing)}")


def _download(url: str, dest: Path, show_progress: bool) -> Path:
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=60.0) as resp:
            if resp.status_code != 200:
                raise DataError(f"download of {url} failed: HTTP {resp.status_code}")
            total = int(resp.headers.get("Content-Length", 0)) or None
            with dest.open("wb") as handle, _bar(show_progress) as bar:
                task = bar.add_task(url.rsplit("/", 1)[-1], total=total)
                for chunk in resp.iter_bytes():
                    handle.write(chunk)
                    bar.update(task, advance=len(chunk))
    except httpx.HTTPError as exc:
        raise DataError(f"download of {url} failed: {exc}") from exc
    return dest


def _bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("downloading {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        disable=not enabled,
        transient=True,
    )
