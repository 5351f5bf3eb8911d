"""Shared fixtures: real local model servers, the shared benchmark sources over loopback."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

SOURCES = Path(__file__).resolve().parents[2] / "shared" / "data" / "sources"


@pytest.fixture(scope="session")
def sources_dir() -> Path:
    if not (SOURCES / "gsm8k" / "test.jsonl").exists():
        pytest.skip(f"benchmark sources not found at {SOURCES} (../shared/data/sources beside the repo)")
    return SOURCES


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextlib.contextmanager
def serve_folder(root: Path) -> Iterator[str]:
    """``root`` served over real HTTP on 127.0.0.1 while the block runs; yields its URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def sources_mirror(sources_dir: Path) -> Iterator[str]:
    """The upstream benchmark files served over real HTTP on 127.0.0.1."""
    with serve_folder(sources_dir) as url:
        yield url


@pytest.fixture(scope="session")
def gsm8k_data_dir(tmp_path_factory: pytest.TempPathFactory, sources_mirror: str) -> Path:
    """A data dir with gsm8k prepared through the real download path."""
    from nel.skills.catalog import get_benchmark
    from nel.skills.prepare import prepare

    data_dir = tmp_path_factory.mktemp("data")
    prepare(get_benchmark("gsm8k"), data_dir, mirror=sources_mirror, show_progress=False)
    return data_dir


@pytest.fixture(scope="module")
def fixture_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """An empty folder served over real HTTP on 127.0.0.1 (a module's tests put upstream-format
    files in it as ``<benchmark>/<file>``) and its URL, for ``--mirror`` / ``NEL_DATA_MIRROR``."""
    root = tmp_path_factory.mktemp("mirror")
    with serve_folder(root) as url:
        yield root, url


@pytest.fixture()
def mirror_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """``fixture_mirror`` for one test: an empty folder of its own, served over loopback HTTP."""
    root = tmp_path / "mirror"
    root.mkdir()
    with serve_folder(root) as url:
        yield root, url
