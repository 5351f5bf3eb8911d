"""An embedded, OpenAI-compatible server for small local models (``local://smollm2``).

Importing this package needs only aiohttp; torch and transformers are imported when a model
is loaded, and a missing one raises ``MissingDependencyError`` naming the install commands.

    from nel.serving import start_local_server, is_local_url

    with start_local_server("local://smollm2") as server:
        ...  # POST f"{server.base_url}/chat/completions" with model=server.model_id
"""

from nel.errors import LocalServerError
from nel.serving.engine import BatchEngine, GenerationResult, SamplingParams
from nel.serving.launcher import LocalServer, start_local_server
from nel.serving.model import (
    BUILTIN_MODELS,
    LOCAL_EXTRA_PACKAGES,
    LocalModelError,
    MissingDependencyError,
    cache_root,
    check_dependencies,
    is_local_url,
    load_model,
    model_id_for,
    resolve_model,
)
from nel.serving.server import build_app, serve_main

__all__ = [
    "BUILTIN_MODELS",
    "LOCAL_EXTRA_PACKAGES",
    "BatchEngine",
    "GenerationResult",
    "LocalModelError",
    "LocalServer",
    "LocalServerError",
    "MissingDependencyError",
    "SamplingParams",
    "build_app",
    "cache_root",
    "check_dependencies",
    "is_local_url",
    "load_model",
    "model_id_for",
    "resolve_model",
    "serve_main",
    "start_local_server",
]
