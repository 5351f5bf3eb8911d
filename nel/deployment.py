"""Model servers started by nel itself: a ``deployment`` on a model config.

A model config may carry, instead of a fixed URL, a command that serves the model::

    deployment:
      command: vllm serve {checkpoint} --port {port} --tensor-parallel-size {tp}
      checkpoint: /ckpts/step-4000
      tp: 8

Each shard (a SLURM array task, a shard of the basic launcher, ``nel eval run``) then starts
that command on a free port of 127.0.0.1, waits until ``GET {health_path}`` answers 200,
points its client at ``http://127.0.0.1:{port}{base_path}``, runs, and stops the server
(SIGTERM to its process group, SIGKILL after a grace period). If the server exits early or
is not healthy within ``startup_timeout`` seconds, :class:`DeploymentError` says so with the
tail of the server's log.

Placeholders in ``command``: ``{port}``, ``{model}`` (the model id), ``{checkpoint}`` (the
``checkpoint``, else the model id) and ``{tp}``. A leading ``python``/``python3`` runs under
the interpreter that runs nel, and a leading ``nel`` as ``python -m nel``, so a deployment
works the same on a compute node whose PATH lacks nel's environment.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nel.errors import ConfigError, DeploymentError
from nel.keys import reject_unknown_keys

PLACEHOLDERS = ("port", "model", "checkpoint", "tp")
DEPLOY_URL = "deploy://"
"""What ``model.url`` may say for a deployed model (an empty URL is accepted as well)."""


@dataclass(frozen=True)
class DeploymentSpec:
    """How to start the server of a model for the duration of a shard."""

    command: str
    health_path: str = "/v1/models"
    base_path: str = "/v1"
    startup_timeout: float = 900.0
    checkpoint: str | None = None
    tp: int = 1
    env: dict[str, str] = field(default_factory=dict)
    stop_grace: float = 30.0

    def validate(self, where: str = "model.deployment") -> DeploymentSpec:
        if not isinstance(self.command, str) or not self.command.strip():
            raise ConfigError(f"{where}.command is empty: give the command that serves the model")
        names = placeholders(self.command, where)
        unknown = sorted(names - set(PLACEHOLDERS))
        if unknown:
            raise ConfigError(
                f"{where}.command has unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; "
                f"known: {', '.join('{' + n + '}' for n in PLACEHOLDERS)}"
            )
        if "port" not in names:
            raise ConfigError(
                f"{where}.command {self.command!r} has no {{port}}: the server must listen on the port nel picks"
            )
        for name in ("health_path", "base_path"):
            value = getattr(self, name)
            if not isinstance(value, str) or not (value == "" or value.startswith("/")):
                raise ConfigError(f"{where}.{name} must be a path starting with '/', got {value!r}")
        if not self.startup_timeout > 0:
            raise ConfigError(f"{where}.startup_timeout must be > 0, got {self.startup_timeout!r}")
        if not self.stop_grace >= 0:
            raise ConfigError(f"{where}.stop_grace must be >= 0, got {self.stop_grace!r}")
        if not isinstance(self.tp, int) or self.tp < 1:
            raise ConfigError(f"{where}.tp must be an integer >= 1, got {self.tp!r}")
        return self

    def argv(self, port: int, model_id: str | None = None) -> list[str]:
        """The command with its placeholders filled in, split like a shell would (no shell runs)."""
        self.validate()
        checkpoint = self.checkpoint or model_id
        names = placeholders(self.command, "model.deployment")
        if "model" in names and not model_id:
            raise ConfigError("model.deployment.command uses {model} but the model has no model_id")
        if "checkpoint" in names and not checkpoint:
            raise ConfigError(
                "model.deployment.command uses {checkpoint} but neither checkpoint nor model_id is set"
            )
        text = self.command.format(port=port, model=model_id or "", checkpoint=checkpoint or "", tp=self.tp)
        try:
            argv = shlex.split(text)
        except ValueError as exc:
            raise ConfigError(f"model.deployment.command {self.command!r} cannot be split: {exc}") from None
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        elif argv and argv[0] == "nel":
            argv[:1] = [sys.executable, "-m", "nel"]
        return argv

    @classmethod
    def from_dict(cls, raw: Any, where: str = "model.deployment") -> DeploymentSpec:
        if isinstance(raw, cls):
            return raw
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a mapping with at least a command, got {raw!r}")
        reject_unknown_keys(cls, raw, where)
        data = dict(raw)
        data["env"] = {str(k): str(v) for k, v in (data.get("env") or {}).items()}
        if "command" not in data:
            raise ConfigError(f"{where}.command is missing: give the command that serves the model")
        return cls(**data)


def placeholders(template: str, where: str = "model.deployment") -> set[str]:
    """The ``{name}`` fields of ``template`` (``{{``/``}}`` are literal braces)."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"{where}.command {template!r} is not a valid template: {exc}") from None


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def deployed(
    spec: DeploymentSpec, *, model_id: str | None = None, log_path: Path | str | None = None
) -> Iterator[str]:
    """Start ``spec.command`` on a free port, wait until healthy, yield its base URL, stop it.

    The server's stdout and stderr go to ``log_path`` (appended to; a temporary file when
    None). Raises :class:`DeploymentError` with the log's tail when the server exits before
    it is healthy or is not healthy within ``spec.startup_timeout`` seconds.
    """
    port = free_port()
    argv = spec.argv(port, model_id)
    env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
    # make this very copy of nel importable in the child even when it is not installed
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != package_root]
    )
    with contextlib.ExitStack() as stack:
        if log_path is None:
            log = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nel-deploy-"))) / "server.log"
        else:
            log = Path(log_path)
            log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            out.write(f"--- nel: starting {shlex.join(argv)} ---\n".encode())
            out.flush()
            try:
                process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True,
                )  # fmt: skip
            except OSError as exc:
                raise DeploymentError(f"cannot start the model server {shlex.join(argv)}: {exc}") from None
        try:
            _wait_healthy(process, port, spec, argv, log)
            yield f"http://127.0.0.1:{port}{spec.base_path}"
        finally:
            stop(process, spec.stop_grace)


def _wait_healthy(
    process: subprocess.Popen, port: int, spec: DeploymentSpec, argv: list[str], log: Path
) -> None:
    url = f"http://127.0.0.1:{port}{spec.health_path}"
    started = time.monotonic()
    deadline = started + spec.startup_timeout
    delay = 0.05
    while True:
        code = process.poll()
        if code is not None:
            raise DeploymentError(
                f"the model server {shlex.join(argv)} exited with code {code} before {url} answered; "
                f"its log ({log}) ends with:\n{log_tail(log)}"
            )
        if _healthy(url):
            return
        if time.monotonic() > deadline:
            raise DeploymentError(
                f"the model server {shlex.join(argv)} was not healthy ({url} did not answer 200) within "
                f"startup_timeout={spec.startup_timeout:g}s; its log ({log}) ends with:\n{log_tail(log)}"
            )
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 1.0)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def log_tail(path: Path, max_lines: int = 40, max_chars: int = 6000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    lines = [line for line in text.splitlines() if "it/s]" not in line]  # drop progress bars
    return "\n".join(lines[-max_lines:])[-max_chars:] or "(empty)"


def stop(process: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after ``grace`` seconds."""
    pgid = process.pid  # start_new_session: the server leads its own group
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    # workers the server forked (vLLM's engine, tensor-parallel ranks) may outlive it
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal_group(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
