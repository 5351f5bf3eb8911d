"""Model servers started by nel itself: a ``deployment`` on a model config.

A model config may carry, instead of a fixed URL, a command that serves the model::

    deployment:
      command: vllm serve {checkpoint} --port {port} --tensor-parallel-size {tp}
      checkpoint: /ckpts/step-4000
      tp: 8

Each shard (a SLURM array task, a shard of the basic launcher, ``nel eval run``) then starts
that command on a free port of 127.0.0.1, waits until ``GET {health_path}`` answers 200,
points its client at ``http://127.0.0.1:{port}{base_path}``, runs, and stops the server
(SIGTERM to its process group, SIGKILL after a grace period): nel.server_process's lifecycle.
If the server exits early or is not healthy within ``startup_timeout`` seconds,
:class:`DeploymentError` says so with the tail of the server's log. A ``local://`` model is a
deployment too (nel.serving.launcher.local_deployment: the command is ``nel serve``).

Placeholders in ``command``: ``{port}``, ``{model}`` (the model id), ``{checkpoint}`` (the
``checkpoint``, else the model id) and ``{tp}``. A leading ``python``/``python3`` runs under
the interpreter that runs nel, and a leading ``nel`` as ``python -m nel``, so a deployment
works the same on a compute node whose PATH lacks nel's environment.
"""

from __future__ import annotations

import contextlib
import shlex
import string
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nel.errors import ConfigError, DeploymentError, ServerError
from nel.keys import reject_unknown_keys
from nel.server_process import ServerProcess, child_env, free_port, health_check

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


@contextlib.contextmanager
def serving(
    spec: DeploymentSpec,
    *,
    model_id: str | None = None,
    log_path: Path | str | None = None,
    name: str | None = None,
    error: type[ServerError] = DeploymentError,
    base_env: Mapping[str, str] | None = None,
) -> Iterator[ServerProcess]:
    """Start ``spec.command`` on a free port, wait until healthy, yield the running server
    (its ``base_url`` set), stop it on the way out.

    The server's stdout and stderr go to ``log_path`` (appended to; a temporary file when
    None). Raises ``error`` with the log's tail when the server exits before it is healthy or
    is not healthy within ``spec.startup_timeout`` seconds.
    """
    port = free_port()
    argv = spec.argv(port, model_id)
    with contextlib.ExitStack() as stack:
        if log_path is None:
            log = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nel-deploy-"))) / "server.log"
        else:
            log = Path(log_path)
        server = ServerProcess.start(
            argv,
            log=log,
            env=child_env(base_env, spec.env),
            name=name or f"the model server {shlex.join(argv)}",
            error=error,
        )
        try:
            ready = health_check(f"http://127.0.0.1:{port}{spec.health_path}", f"http://127.0.0.1:{port}{spec.base_path}")
            server.wait_ready(ready, spec.startup_timeout, grace=spec.stop_grace)
            yield server
        finally:
            server.stop(spec.stop_grace)


@contextlib.contextmanager
def deployed(
    spec: DeploymentSpec, *, model_id: str | None = None, log_path: Path | str | None = None
) -> Iterator[str]:
    """:func:`serving`, yielding only the server's base URL."""
    with serving(spec, model_id=model_id, log_path=log_path) as server:
        assert server.base_url is not None
        yield server.base_url
