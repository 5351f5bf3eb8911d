"""A ``local://`` model as a deployment: ``nel serve`` in a subprocess for the duration of an eval.

A subprocess, so the model's compute never shares the eval loop's GIL. It is started, checked
and stopped like every server nel starts (nel.deployment, nel.server_process), and it exits
by itself if the eval process dies (``--exit-with-parent``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from nel.deployment import DeploymentSpec, serving
from nel.errors import LocalServerError
from nel.server_process import ServerProcess
from nel.serving.model import check_dependencies, model_id_for, resolve_model

log = logging.getLogger("nel.serving")


@dataclass
class LocalServer:
    """A running ``python -m nel.serving`` subprocess started by ``start_local_server``."""

    base_url: str  # "http://127.0.0.1:PORT/v1"
    model_id: str
    model_url: str
    pid: int
    startup_seconds: float
    _server: ServerProcess = field(repr=False)

    def alive(self) -> bool:
        return self._server.alive()

    def stderr_tail(self, max_lines: int = 40) -> str:
        """The last lines the server wrote (its log), for error messages."""
        return self._server.log_tail(max_lines)


def local_deployment(
    model_url: str,
    *,
    startup_timeout: float = 600,
    max_batch_size: int | None = None,
    extra_args: tuple[str, ...] | list[str] = (),
) -> DeploymentSpec:
    """The deployment that serves ``model_url`` (``local://...``) with ``nel serve``.

    Raises ``MissingDependencyError``/``ConfigError`` before anything starts when the URL or
    the packages are wrong, rather than letting the server die of it."""
    source = resolve_model(model_url)
    check_dependencies(need_gguf=source.kind == "gguf")
    args = [model_url, "--host", "127.0.0.1"]
    if max_batch_size is not None:
        args += ["--max-batch-size", str(max_batch_size)]
    args += list(extra_args)
    quoted = shlex.join(args).replace("{", "{{").replace("}", "}}")  # literal braces in a template
    env = {} if "OMP_WAIT_POLICY" in os.environ else {"OMP_WAIT_POLICY": "PASSIVE"}  # see prepare_torch_env
    return DeploymentSpec(
        command=f"python -m nel.serving {quoted} --port {{port}} --exit-with-parent",
        health_path="/v1/models",
        base_path="/v1",
        startup_timeout=startup_timeout,
        env=env,
        stop_grace=10.0,
    )


@contextlib.contextmanager
def start_local_server(
    model_url: str,
    *,
    startup_timeout: float = 600,
    max_batch_size: int | None = None,
    extra_args: tuple[str, ...] | list[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[LocalServer]:
    """Serve ``model_url`` in a subprocess (:func:`local_deployment`); yield it once healthy.

    Raises ``MissingDependencyError``/``ConfigError`` before starting anything when the URL
    or the packages are wrong, and ``LocalServerError`` (with the tail of the server's log)
    when the subprocess dies or is not ready within ``startup_timeout`` seconds. On exit its
    process group gets SIGTERM, then SIGKILL after 10 s. ``env`` replaces this process's
    environment for the server.
    """
    spec = local_deployment(
        model_url, startup_timeout=startup_timeout, max_batch_size=max_batch_size, extra_args=extra_args
    )
    started = time.perf_counter()
    with serving(
        spec,
        model_id=model_id_for(model_url),
        name=f"the local model server for {model_url}",
        error=LocalServerError,
        base_env=env,
    ) as server:
        assert server.base_url is not None
        yield LocalServer(
            base_url=server.base_url,
            model_id=model_id_for(model_url),
            model_url=model_url,
            pid=server.pid,
            startup_seconds=time.perf_counter() - started,
            _server=server,
        )
