"""Launcher backends, by name: where a run's shards and its reducer run.

    local   this process, one shard after another, then the reducer   (nel.backends.local)
    slurm   one SLURM array job plus a dependent reducer job (submitit)  (nel.backends.slurm)

A backend module is imported only when its name is asked for, like submitit's plug-ins, so
``nel status`` of a local run never imports submitit. Adding one (Kubernetes Jobs, Ray) is a
module with a class that implements :class:`nel.backends.base.Backend` and a line in
``BACKENDS``; docs/distributed.md says what each method has to do.

``python -m nel.launch`` picks the backend from the ``backend`` key, else from the Hydra
launcher choice through ``HYDRA_LAUNCHERS`` (Hydra's launcher only loops over ``--multirun``
jobs in this process; where the shards run is the backend's business).
"""

from __future__ import annotations

import difflib
import importlib

from nel.backends.base import Backend
from nel.errors import ConfigError

BACKENDS: dict[str, str] = {
    "local": "nel.backends.local:LocalBackend",
    "slurm": "nel.backends.slurm:SlurmBackend",
}

HYDRA_LAUNCHERS: dict[str, str] = {
    "nel_slurm": "slurm",  # conf/hydra/launcher/nel_slurm.yaml, the default
    "basic": "local",  # Hydra's own basic launcher
}
"""The backend each ``hydra/launcher`` option stands for when ``backend`` is not set."""


def get_backend(name: str) -> Backend:
    """The backend called ``name``; an unknown name is a ConfigError listing the known ones."""
    target = BACKENDS.get(name)
    if target is None:
        close = difflib.get_close_matches(name, BACKENDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown backend {name!r}{hint} (known: {', '.join(sorted(BACKENDS))})")
    module, _, cls = target.partition(":")
    backend: Backend = getattr(importlib.import_module(module), cls)()
    return backend


def backend_for_launcher(launcher: str) -> str:
    """The backend name a ``hydra/launcher`` choice stands for."""
    name = HYDRA_LAUNCHERS.get(launcher)
    if name is None:
        raise ConfigError(
            f"hydra/launcher={launcher} names no nel backend; use nel_slurm (the default: backend slurm) "
            f"or basic (backend local), or set backend=NAME ({', '.join(sorted(BACKENDS))})"
        )
    return name


__all__ = ["BACKENDS", "HYDRA_LAUNCHERS", "Backend", "backend_for_launcher", "get_backend"]
