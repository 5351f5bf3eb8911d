"""The OpenAI-compatible HTTP side of ``nel serve``.

``build_app`` is the aiohttp application: ``POST /v1/chat/completions``, ``GET /v1/models``,
``GET /health``. Handlers validate the body, apply the chat template, and await the
engine's result; the event loop never runs model code. ``serve_main`` is ``nel serve`` /
``python -m nel.serving``: it loads the model, binds 127.0.0.1, prints
``READY http://HOST:PORT/v1`` and serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
import uuid
from typing import Any

from aiohttp import web

from nel.errors import NelError
from nel.serving.engine import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_TOKENS,
    BatchEngine,
    SamplingParams,
)
from nel.serving.model import (
    load_model,
    prepare_torch_env,
)

log = logging.getLogger("nel.serving")

DEFAULT_PORT = 8000
READY_PREFIX = "READY "

class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def _error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    kind: str = "invalid_request_error",
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_messages(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        raise BadRequest("'messages' is required", "messages")
    if not isinstance(raw, list) or not raw:
        raise BadRequest("'messages' must be a non-empty array of {role, content} objects", "messages")
    messages = []
    for i, item in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"'{where}' must be an object with 'role' and 'content'", where)
        role = item.get("role")
        if not isinstance(role, str) or not role:
            raise BadRequest(f"'{where}.role' must be a non-empty string", f"{where}.role")
        content = item.get("content")
        if content is None:
            content = ""
        elif isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if not (
                    isinstance(part, dict)
                    and part.get("type") == "text"
                    and isinstance(part.get("text"), str)
                ):
                    raise BadRequest(
                        f'\'{where}.content[{j}]\' must be a text part ({{"type": "text", "text": ...}}); '
                        "this server handles text only",
                        f"{where}.content",
                    )
                parts.append(part["text"])
            content = "".join(parts)
        elif not isinstance(content, str):
            raise BadRequest(
                f"'{where}.content' must be a string or an array of text parts", f"{where}.content"
            )
        messages.append({"role": role, "content": content})
    return messages


def parse_sampling(
    body: dict[str, Any], default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> tuple[SamplingParams, int]:
    """Validate the sampling fields of a chat body; return the params and ``n``."""

    def get(name: str) -> Any:
        return body.get(name)

    if get("stream"):
        raise BadRequest("stream is not supported by this server; send stream=false", "stream")
    max_tokens = get("max_tokens")
    name = "max_tokens"
    if max_tokens is None and get("max_completion_tokens") is not None:
        max_tokens, name = get("max_completion_tokens"), "max_completion_tokens"
    if max_tokens is None:
        max_tokens = default_max_tokens
    elif not _is_int(max_tokens) or max_tokens < 1:
        raise BadRequest(f"'{name}' must be a positive integer, got {max_tokens!r}", name)
    temperature = get("temperature")
    if temperature is None:
        temperature = 0.0
    elif not _is_number(temperature) or temperature < 0:
        raise BadRequest(f"'temperature' must be a number >= 0, got {temperature!r}", "temperature")
    top_p = get("top_p")
    if top_p is None:
        top_p = 1.0
    elif not _is_number(top_p) or not 0 < top_p <= 1:
        raise BadRequest(f"'top_p' must be a number in (0, 1], got {top_p!r}", "top_p")
    seed = get("seed")
    if seed is not None and not _is_int(seed):
        raise BadRequest(f"'seed' must be an integer, got {seed!r}", "seed")
    stop = get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,) if stop else ()
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = tuple(s for s in stop if s)
    else:
        raise BadRequest("'stop' must be a string or an array of strings", "stop")
    n = get("n")
    if n is None:
        n = 1
    elif not _is_int(n) or not 1 <= n <= 16:
        raise BadRequest(f"'n' must be an integer from 1 to 16, got {n!r}", "n")
    model = get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("'model' must be a string", "model")
    params = SamplingParams(
        max_tokens=int(max_tokens),
        temperature=float(temperature),
        top_p=float(top_p),
        seed=None if seed is None else int(seed) & ((1 << 63) - 1),
        stop=stops,
    )
    return params, int(n)


def build_app(
    engine: BatchEngine, model_id: str, *, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> web.Application:
    """The aiohttp application serving ``engine`` under ``model_id``."""
    created = int(time.time())
    started = time.monotonic()

    async def chat_completions(request: web.Request) -> web.Response:
        try:
            body = await request.json(loads=json.loads)
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
            return _error(400, f"request body is not valid JSON: {exc}")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        try:
            messages = _parse_messages(body.get("messages"))
            params, n = parse_sampling(body, default_max_tokens)
        except BadRequest as exc:
            return _error(400, exc.message, param=exc.param, code=exc.code)
        try:
            prompt_ids = engine.encode_chat(messages)
        except Exception as exc:  # noqa: BLE001 - template errors are the caller's messages
            return _error(400, f"cannot apply the chat template to 'messages': {exc}", param="messages")
        limit = engine.context_length
        if len(prompt_ids) >= limit:
            return _error(
                400,
                f"This model's maximum context length is {limit} tokens. However, your messages "
                f"resulted in {len(prompt_ids)} tokens. Please reduce the length of the messages.",
                param="messages",
                code="context_length_exceeded",
            )
        jobs = []
        for i in range(n):
            p = (
                params
                if params.seed is None or i == 0
                else SamplingParams(
                    params.max_tokens, params.temperature, params.top_p, params.seed + i, params.stop
                )
            )
            jobs.append(engine.generate(prompt_ids, p))
        try:
            # A client that disconnects cancels this handler (handler_cancellation in _serve),
            # and the cancel reaches each generate(), which drops its sequence from the engine.
            results = await asyncio.gather(*jobs)
        except RuntimeError as exc:
            return _error(503 if engine.stopping else 500, str(exc), kind="server_error")
        completion_tokens = sum(r.completion_tokens for r in results)
        payload = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_id,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": r.text},
                    "logprobs": None,
                    "finish_reason": r.finish_reason,
                }
                for i, r in enumerate(results)
            ],
            "usage": {
                "prompt_tokens": len(prompt_ids),
                "completion_tokens": completion_tokens,
                "total_tokens": len(prompt_ids) + completion_tokens,
            },
        }
        return web.json_response(payload)

    async def models(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": model_id,
                        "object": "model",
                        "created": created,
                        "owned_by": "nel",
                        "max_model_len": engine.context_length,
                    }
                ],
            }
        )

    async def health(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "model": model_id,
                "uptime_s": round(time.monotonic() - started, 1),
                "max_batch_size": engine.max_batch_size,
                **engine.load,
                "served": dict(engine.stats),
            }
        )

    @web.middleware
    async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _error(exc.status, f"{exc.reason}: {request.method} {request.path}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return _error(500, f"internal error: {type(exc).__name__}: {exc}", kind="server_error")

    app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[json_errors])
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    return app


# --------------------------------------------------------------------------- nel serve


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nel serve",
        description="Serve a local model (local://smollm2, local:///path/to/hf-dir, local:///path/to/model.gguf) "
        "over an OpenAI-compatible HTTP API on this machine.",
    )
    parser.add_argument(
        "model", help="local://smollm2, local:///path/to/hf-model-dir or local:///path/to/model.gguf"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free port)"
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        help=f"sequences decoded together (default {DEFAULT_MAX_BATCH_SIZE})",
    )
    parser.add_argument(
        "--default-max-tokens",
        type=int,
        default=DEFAULT_MAX_TOKENS,
        help=f"max_tokens when a request gives none (default {DEFAULT_MAX_TOKENS})",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--log-level", default="INFO", help="logging level on stderr (default INFO)")
    parser.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    return parser


def serve_main(argv: list[str] | None = None) -> int:
    """``nel serve MODEL [--port N] [--host H]``: load, print ``READY <url>``, serve until a signal."""
    args = _parser().parse_args(argv)
    if "://" not in args.model:  # `nel serve smollm2`, as docs/cli.md lists the builtin names
        args.model = f"local://{args.model}"
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if args.max_batch_size < 1:
        print("nel serve: --max-batch-size must be at least 1", file=sys.stderr)
        return 2
    parent = os.getppid()
    prepare_torch_env()

    def terminate_during_load(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate_during_load)
    try:
        started = time.perf_counter()
        loaded = load_model(args.model)
        engine = BatchEngine(loaded, max_batch_size=args.max_batch_size, threads=args.threads)
        engine.start()
        warm = time.perf_counter()
        engine.generate_sync(
            engine.encode_chat([{"role": "user", "content": "Hi"}]), SamplingParams(max_tokens=2), timeout=300
        )
        log.info(
            "model %s loaded in %.1fs (%s), warm-up %.2fs, %d torch threads, max batch %d",
            loaded.model_id,
            loaded.load_seconds,
            ", ".join(f"{k}={v:.2f}" for k, v in loaded.timings.items()),
            time.perf_counter() - warm,
            engine._torch.get_num_threads(),
            engine.max_batch_size,
        )
        log.info("startup took %.1fs", time.perf_counter() - started)
    except NelError as exc:
        print(f"nel serve: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    try:
        asyncio.run(_serve(engine, loaded.model_id, args, parent if args.exit_with_parent else None))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"nel serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.stop()
        log.info("stopped")
    _exit_now(0)
    return 0  # not reached


def _exit_now(code: int) -> None:
    """End the process without the interpreter's teardown.

    Freeing torch's and transformers' module state took 2-6 s after the server had stopped
    (2 busy cores), which is what a Ctrl-C waits for. Nothing is left to flush but the streams.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


async def _serve(engine: BatchEngine, model_id: str, args: argparse.Namespace, parent: int | None) -> None:
    app = build_app(engine, model_id, default_max_tokens=args.default_max_tokens)
    # handler_cancellation: aiohttp otherwise lets a handler run on after its client left, and
    # the engine would keep decoding for nobody (a Ctrl-C'd eval left 120 requests behind).
    # shutdown_timeout: the engine has already answered every request by then (see below).
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, handler_cancellation=True, shutdown_timeout=2.0
    )
    await runner.setup()
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError:
        sock.close()
        await runner.cleanup()
        raise
    sock.listen(512)
    site = web.SockSite(runner, sock)
    await site.start()
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"{READY_PREFIX}http://{host}:{port}/v1", flush=True)
    log.info("serving %s on http://%s:%d/v1", model_id, host, port)

    async def watch_parent() -> None:
        while os.getppid() == parent:
            await asyncio.sleep(1.0)
        log.warning("parent process %s is gone; shutting down", parent)
        stop.set()

    watcher = asyncio.create_task(watch_parent()) if parent is not None else None
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        load = engine.load
        log.info("shutting down (%d running, %d waiting)", load["running"], load["waiting"])
        # Answer the backlog with 503 first, so that cleanup has no handler left to wait for.
        await asyncio.to_thread(engine.stop)
        await runner.cleanup()
