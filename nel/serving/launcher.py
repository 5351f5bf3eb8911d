"""start_local_server: run ``nel serve`` as a subprocess for the duration of an eval.

A subprocess, so the model's compute never shares the eval loop's GIL; stopped on exit,
and it exits by itself if the eval process dies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nel.deployment import log_tail, stop
from nel.errors import LocalServerError
from nel.serving.model import (
    check_dependencies,
    model_id_for,
    resolve_model,
)
from nel.serving.server import READY_PREFIX

log = logging.getLogger("nel.serving")


@dataclass
class LocalServer:
    """A running ``python -m nel.serving`` subprocess started by ``start_local_server``."""

    base_url: str  # "http://127.0.0.1:PORT/v1"
    model_id: str
    model_url: str
    pid: int
    startup_seconds: float
    _stderr_path: Path = field(repr=False)
    _process: subprocess.Popen = field(repr=False)

    def alive(self) -> bool:
        return self._process.poll() is None

    def stderr_tail(self, max_lines: int = 40) -> str:
        """The last lines the server wrote to stderr (its log), for error messages."""
        return log_tail(self._stderr_path, max_lines)


@contextlib.contextmanager
def start_local_server(
    model_url: str,
    *,
    startup_timeout: float = 600,
    max_batch_size: int | None = None,
    extra_args: tuple[str, ...] | list[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[LocalServer]:
    """Run ``python -m nel.serving MODEL --port 0`` in a subprocess; yield it once READY.

    Raises ``MissingDependencyError``/``ConfigError`` before starting anything when the URL
    or the packages are wrong, and ``LocalServerError`` (with the tail of the server's
    stderr) when the subprocess dies or is not ready within ``startup_timeout`` seconds.
    On exit its process group gets SIGTERM, then SIGKILL after 10 s. The server also exits by
    itself if this process dies.
    """
    source = resolve_model(model_url)
    check_dependencies(need_gguf=source.kind == "gguf")
    cmd = [
        sys.executable,
        "-m",
        "nel.serving",
        model_url,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--exit-with-parent",
    ]
    if max_batch_size is not None:
        cmd += ["--max-batch-size", str(max_batch_size)]
    cmd += list(extra_args)
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONUNBUFFERED"] = "1"
    child_env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see nel.serving.model.prepare_torch_env
    # make this very copy of nel importable in the child even when it is not installed
    package_root = str(Path(__file__).resolve().parents[2])
    child_env["PYTHONPATH"] = os.pathsep.join(
        [package_root] + [p for p in child_env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    with tempfile.TemporaryDirectory(prefix="nel-serve-") as tmp:
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            started = time.perf_counter()
            process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=child_env, start_new_session=True
            )
        try:
            base_url = _wait_ready(process, out_path, err_path, startup_timeout, model_url)
            yield LocalServer(
                base_url=base_url,
                model_id=model_id_for(model_url),
                model_url=model_url,
                pid=process.pid,
                startup_seconds=time.perf_counter() - started,
                _stderr_path=err_path,
                _process=process,
            )
        finally:
            stop(process, grace=10.0)


def _wait_ready(
    process: subprocess.Popen, out_path: Path, err_path: Path, timeout: float, model_url: str
) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            for line in out_path.read_text(errors="replace").splitlines():
                if line.startswith(READY_PREFIX):
                    return line[len(READY_PREFIX) :].strip()
        except OSError:
            pass
        code = process.poll()
        if code is not None:
            raise LocalServerError(
                f"the local model server for {model_url} exited with code {code} before it was ready; "
                f"its stderr ends with:\n{log_tail(err_path)}"
            )
        if time.monotonic() > deadline:
            stop(process, grace=10.0)
            raise LocalServerError(
                f"the local model server for {model_url} was not ready after {timeout:g}s; "
                f"its stderr ends with:\n{log_tail(err_path)}"
            )
        time.sleep(0.05)
