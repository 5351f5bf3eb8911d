"""One lifecycle for every server process nel starts: a model deployment, the ``local://``
server, the test model server.

    start       the command (no shell), stdin closed, output appended to a log file, this very
                copy of nel first on the child's PYTHONPATH, in its own process group
    wait_ready  until a readiness check passes (GET a health URL, or a READY line); if the
                process exits first or the timeout passes, stop it and raise, quoting its log
    log_tail    the end of that log, for error messages
    stop        SIGTERM to the process group, SIGKILL to whatever is left after a grace period
                (workers the server forked, such as tensor-parallel ranks, included)
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


@dataclass(frozen=True)
class Readiness:
    """How to tell that a server is ready, and how to say that it is not (yet)."""

    check: Callable[[], str | None]  # the server's base URL once it is ready, else None
    awaited: str  # for "exited before ...": "http://127.0.0.1:8000/v1/models answered"
    missing: str  # for "was not ready (...)": "http://127.0.0.1:8000/v1/models did not answer 200"


def health_check(url: str, base_url: str) -> Readiness:
    """Ready when ``GET url`` answers 200; the server is then reached at ``base_url``."""
    return Readiness(
        lambda: base_url if http_ok(url) else None, f"{url} answered", f"{url} did not answer 200"
    )


def ready_line(path: Path, prefix: str) -> Readiness:
    """Ready when the file ``path`` (the server's stdout) has a line ``PREFIX<base url>``."""

    def check() -> str | None:
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith(prefix):
                    return line[len(prefix) :].strip()
        return None

    return Readiness(check, f"it printed {prefix.strip()!r}", f"no {prefix.strip()!r} line")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(
    base: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``base`` (default: this environment) plus ``extra``, unbuffered, with this copy of nel
    importable first, so the child runs the same code even where nel is not installed."""
    env = {**(os.environ if base is None else base), **(extra or {}), "PYTHONUNBUFFERED": "1"}
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != PACKAGE_ROOT]
    env["PYTHONPATH"] = os.pathsep.join([PACKAGE_ROOT, *rest])
    return env


class ServerProcess:
    """A server subprocess, from start to stop. ``error`` is the exception class its
    failures raise (DeploymentError, LocalServerError, ...); ``name`` is how messages call it."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        argv: list[str],
        log: Path,
        name: str,
        error: type[Exception],
        own_group: bool = True,
    ) -> None:
        self.process = process
        self.own_group = own_group
        self.argv = argv
        self.log = log
        self.name = name
        self.error = error
        self.base_url: str | None = None  # set by wait_ready

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        stdout: Path | int | None = None,
        own_group: bool = True,
        name: str | None = None,
        error: type[Exception] = RuntimeError,
    ) -> ServerProcess:
        """Start ``argv``; stderr (and stdout, unless ``stdout`` is a file path or
        ``subprocess.PIPE``) is appended to ``log``. ``own_group=False`` keeps the child in the
        caller's process group, so Ctrl-C in a terminal reaches it too."""
        argv = list(argv)
        name = name or f"the server {shlex.join(argv)}"
        log.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as files:
            err = files.enter_context(open(log, "ab"))
            err.write(f"--- nel: starting {shlex.join(argv)} ---\n".encode())
            err.flush()
            out: IO[bytes] | int = err  # one log for both
            if isinstance(stdout, Path):
                out = files.enter_context(open(stdout, "ab"))
            elif stdout is not None:
                out = stdout
            try:
                process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=dict(env or child_env()),
                    start_new_session=own_group,
                )  # fmt: skip
            except OSError as exc:
                raise error(f"cannot start {name}: {exc}") from None
        return cls(process, argv, log, name, error, own_group)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(
        self, ready: Readiness, timeout: float, *, timeout_name: str = "startup_timeout", grace: float = 10.0
    ) -> str:
        """Poll ``ready`` until it passes; return the server's base URL. If the process exits
        first, or ``timeout`` seconds pass, stop it and raise ``self.error`` quoting its log."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        try:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise self.error(
                        f"{self.name} exited with code {code} before {ready.awaited}; "
                        f"its log ({self.log}) ends with:\n{self.log_tail()}"
                    )
                url = ready.check()
                if url is not None:
                    self.base_url = url
                    return url
                if time.monotonic() > deadline:
                    raise self.error(
                        f"{self.name} was not ready ({ready.missing}) within {timeout_name}={timeout:g}s; "
                        f"its log ({self.log}) ends with:\n{self.log_tail()}"
                    )
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 1.5, 1.0)
        except BaseException:
            self.stop(grace)
            raise

    def log_tail(self, max_lines: int = 40) -> str:
        return log_tail(self.log, max_lines)

    def stop(self, grace: float = 30.0) -> None:
        stop(self.process, grace, group=self.own_group)


def log_tail(path: Path, max_lines: int = 40, max_chars: int = 6000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    lines = [line for line in text.splitlines() if "it/s]" not in line]  # drop progress bars
    return "\n".join(lines[-max_lines:])[-max_chars:] or "(empty)"


def stop(process: subprocess.Popen[bytes], grace: float = 30.0, *, group: bool = True) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after ``grace`` seconds.

    ``group=False``: the process does not lead its own group; it is signalled alone."""
    _signal(process, signal.SIGTERM, group)
    deadline = time.monotonic() + grace
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace)
    # workers the server forked (vLLM's engine, tensor-parallel ranks) may outlive it
    while group and _group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal(process, signal.SIGKILL, group)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


def _signal(process: subprocess.Popen[bytes], signum: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(process.pid, signum)
        elif process.poll() is None:
            process.send_signal(signum)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
