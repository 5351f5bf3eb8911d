"""An OpenAI-compatible chat server for a local model, with continuous batching on CPU.

Layout:

* ``BatchEngine`` owns the model and runs in one worker thread. It keeps a running batch
  of up to ``max_batch_size`` sequences sharing one left-padded KV cache. Between decode
  steps it admits waiting requests: they are prefilled together, left-padded, and their KV
  cache is merged into the running one, so a finished sequence's slot is refilled at once
  (continuous batching). Finished rows leave the batch and the all-padding columns on the
  left are trimmed. Each row samples with its own parameters and its own seeded
  ``torch.Generator``, so requests with different temperatures and seeds share a batch.
* ``build_app`` is the aiohttp application: ``POST /v1/chat/completions``,
  ``GET /v1/models``, ``GET /health``. Handlers validate the body, apply the chat
  template, and await the engine's result; the event loop never runs model code.
* ``serve_main`` is ``nel serve`` / ``python -m nel.serving``: it loads the model, binds
  127.0.0.1, prints ``READY http://HOST:PORT/v1`` and serves until SIGINT/SIGTERM.
* ``start_local_server`` runs ``python -m nel.serving`` as a subprocess for an eval (so the
  server's compute does not share the eval loop's GIL) and stops it on exit.

torch and transformers are imported lazily: this module imports without them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from nel.errors import NelError
from nel.serving.model import (
    LoadedModel,
    check_dependencies,
    is_local_url,
    load_model,
    model_id_for,
    prepare_torch_env,
    resolve_model,
)

log = logging.getLogger("nel.serving")

DEFAULT_PORT = 8000
DEFAULT_MAX_TOKENS = 512
DEFAULT_MAX_BATCH_SIZE = 16
READY_PREFIX = "READY "

__all__ = [
    "BatchEngine",
    "GenerationResult",
    "LocalServer",
    "LocalServerError",
    "SamplingParams",
    "build_app",
    "is_local_url",
    "serve_main",
    "start_local_server",
]


class LocalServerError(NelError):
    """The local model server subprocess died, or did not become ready in time."""


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class GenerationResult:
    text: str
    finish_reason: str  # "stop" (EOS or stop string) or "length"
    prompt_tokens: int
    completion_tokens: int  # every token generated, including an EOS token


class _Job:
    """One sequence to generate; completed from the engine thread via ``on_done``."""

    __slots__ = ("cancelled", "on_done", "params", "prompt_ids", "submitted")

    def __init__(self, prompt_ids: list[int], params: SamplingParams, on_done: Any) -> None:
        self.prompt_ids = prompt_ids
        self.params = params
        self.on_done = on_done  # called once with a GenerationResult or an Exception
        self.cancelled = False
        self.submitted = time.perf_counter()


class _Row:
    """A job's decoding state while it is in the running batch."""

    __slots__ = ("finish_reason", "generator", "job", "text", "tokens")

    def __init__(self, job: _Job, generator: Any) -> None:
        self.job = job
        self.generator = generator
        self.tokens: list[int] = []
        self.text = ""
        self.finish_reason: str | None = None


# --------------------------------------------------------------------------- engine


class BatchEngine:
    """Runs generation for many requests at once in a dedicated worker thread.

    ``submit`` is thread-safe; ``generate`` is the asyncio front end. ``max_batch_size``
    bounds the running batch; ``batch_wait_s`` is how long an idle engine waits for more
    requests of the same burst before its first prefill.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_wait_s: float = 0.005,
        threads: int | None = None,
    ) -> None:
        import torch

        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.context_length = loaded.context_length
        self._torch = torch
        torch.set_num_threads(threads or _cpu_count())
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._logits_kw = "logits_to_keep" if "logits_to_keep" in params else None
        self._eos = loaded.eos_token_ids
        self._pad = loaded.pad_token_id
        self._pending: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # running batch state (engine thread only)
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._mask: Any = None  # [B, L] int64, 1 = real token in the cache
        self._next_pos: Any = None  # [B] position of the token to feed next
        self._last: Any = None  # [B] token to feed next (sampled, not yet in the cache)
        self._mergeable: bool | None = None
        # counters, read by /health
        self.stats = {"requests": 0, "completion_tokens": 0, "prompt_tokens": 0, "steps": 0, "prefills": 0, "max_batch": 0}

    # ------------------------------------------------------------------ public

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="nel-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        error = RuntimeError("the server is shutting down")
        with self._cond:
            pending, self._pending = list(self._pending), deque()
        for job in pending:
            job.on_done(error)

    @property
    def load(self) -> dict[str, int]:
        return {"running": len(self._rows), "waiting": len(self._pending)}

    def submit(self, job: _Job) -> None:
        with self._cond:
            if self._stopping:
                raise RuntimeError("the server is shutting down")
            self._pending.append(job)
            self._cond.notify_all()

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> GenerationResult:
        """Generate one completion; cancelling the await drops the sequence from the batch."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[GenerationResult] = loop.create_future()

        def deliver(outcome: GenerationResult | BaseException) -> None:
            def settle() -> None:
                if future.done():
                    return
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(settle)

        job = _Job(prompt_ids, params, deliver)
        self.submit(job)
        try:
            return await future
        finally:
            if not future.done():
                job.cancelled = True

    def generate_sync(
        self, prompt_ids: list[int], params: SamplingParams, timeout: float | None = None
    ) -> GenerationResult:
        """Blocking variant for scripts and warm-up (the engine thread must be running)."""
        done = threading.Event()
        box: list[Any] = []

        def deliver(outcome: Any) -> None:
            box.append(outcome)
            done.set()

        self.submit(_Job(prompt_ids, params, deliver))
        if not done.wait(timeout):
            raise TimeoutError("generation did not finish in time")
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        """Apply the model's chat template (with the generation prompt) and tokenize."""
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ------------------------------------------------------------------ engine thread

    def _run(self) -> None:
        torch = self._torch
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._stopping and not self._rows and not self._pending:
                        self._cond.wait()
                    if self._stopping:
                        break
                    idle = not self._rows
                if idle and self.batch_wait_s > 0:
                    time.sleep(self.batch_wait_s)  # let the rest of a burst arrive
                try:
                    admitted = self._take_admissible()
                    if admitted:
                        self._prefill(admitted)
                    if self._rows:
                        self._step()
                except Exception as exc:
                    log.exception("generation failed")
                    self._fail_all(RuntimeError(f"generation failed: {type(exc).__name__}: {exc}"))
        self._fail_all(RuntimeError("the server is shutting down"))

    def _take_admissible(self) -> list[_Job]:
        if self._rows and not self._mergeable:
            return []  # static batching for caches we cannot merge: wait for the batch to drain
        room = self.max_batch_size - len(self._rows)
        taken: list[_Job] = []
        with self._cond:
            while self._pending and len(taken) < room:
                job = self._pending.popleft()
                if not job.cancelled:
                    taken.append(job)
        return taken

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.model.config)
        except TypeError:
            return DynamicCache()

    def _forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, cache: Any) -> Any:
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            self._cache_kw: cache,
            "use_cache": True,
        }
        if self._logits_kw:
            kwargs[self._logits_kw] = 1
        out = self.model(**kwargs)
        return out.logits[:, -1, :].float()

    def _prefill(self, jobs: list[_Job]) -> None:
        torch = self._torch
        self.stats["prefills"] += 1
        width = max(len(j.prompt_ids) for j in jobs)
        ids = torch.full((len(jobs), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for i, job in enumerate(jobs):
            n = len(job.prompt_ids)
            ids[i, width - n :] = torch.tensor(job.prompt_ids, dtype=torch.long)
            mask[i, width - n :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = self._new_cache()
        logits = self._forward(ids, mask, positions, cache)
        if self._mergeable is None:
            self._mergeable = _cache_is_mergeable(cache)
            log.info("continuous batching %s", "on" if self._mergeable else "off (cache type not mergeable)")
        rows = [_Row(job, _generator(job.params.seed)) for job in jobs]
        for job in jobs:
            self.stats["prompt_tokens"] += len(job.prompt_ids)
        next_tokens = self._sample(logits, rows)
        keep = [i for i, (row, tok) in enumerate(zip(rows, next_tokens)) if not self._advance(row, tok)]
        if len(keep) < len(rows):
            index = torch.tensor(keep, dtype=torch.long)
            cache.batch_select_indices(index)
            mask, rows = mask[index], [rows[i] for i in keep]
            next_tokens = [next_tokens[i] for i in keep]
        if not rows:
            return
        last = torch.tensor(next_tokens, dtype=torch.long)
        next_pos = mask.sum(-1)
        if not self._rows:
            self._rows, self._cache, self._mask, self._next_pos, self._last = (
                rows,
                cache,
                mask,
                next_pos,
                last,
            )
            self.stats["max_batch"] = max(self.stats["max_batch"], len(rows))
            return
        # merge the new rows into the running batch, left-padding the shorter cache
        old_len, new_len = self._mask.shape[1], mask.shape[1]
        width = max(old_len, new_len)
        for old_layer, new_layer in zip(self._cache.layers, cache.layers):
            old_layer.keys = torch.cat([_left_pad(old_layer.keys, width), _left_pad(new_layer.keys, width)])
            old_layer.values = torch.cat(
                [_left_pad(old_layer.values, width), _left_pad(new_layer.values, width)]
            )
        self._mask = torch.cat([_left_pad_2d(self._mask, width), _left_pad_2d(mask, width)])
        self._next_pos = torch.cat([self._next_pos, next_pos])
        self._last = torch.cat([self._last, last])
        self._rows.extend(rows)
        self.stats["max_batch"] = max(self.stats["max_batch"], len(self._rows))

    def _step(self) -> None:
        torch = self._torch
        self._drop_rows([i for i, row in enumerate(self._rows) if row.job.cancelled], deliver=False)
        if not self._rows:
            return
        self.stats["steps"] += 1
        batch = len(self._rows)
        mask = torch.cat([self._mask, torch.ones((batch, 1), dtype=torch.long)], dim=1)
        logits = self._forward(self._last[:, None], mask, self._next_pos[:, None], self._cache)
        self._mask = mask
        self._next_pos = self._next_pos + 1
        next_tokens = self._sample(logits, self._rows)
        finished = [i for i, (row, tok) in enumerate(zip(self._rows, next_tokens)) if self._advance(row, tok)]
        self._last = torch.tensor(next_tokens, dtype=torch.long)
        self._drop_rows(finished, deliver=False)

    def _drop_rows(self, indices: list[int], *, deliver: bool) -> None:
        """Remove rows (already finished or cancelled) from the running batch."""
        if not indices:
            return
        torch = self._torch
        gone = set(indices)
        keep = [i for i in range(len(self._rows)) if i not in gone]
        if not keep:
            self._rows, self._cache, self._mask, self._next_pos, self._last = [], None, None, None, None
            return
        index = torch.tensor(keep, dtype=torch.long)
        self._cache.batch_select_indices(index)
        self._rows = [self._rows[i] for i in keep]
        self._mask, self._next_pos, self._last = self._mask[index], self._next_pos[index], self._last[index]
        # trim cache columns that are padding in every remaining row
        if self._mergeable:
            real = self._mask.any(dim=0).nonzero()
            first = int(real[0]) if len(real) else 0
            if first > 0:
                for layer in self._cache.layers:
                    layer.keys = layer.keys[..., first:, :]
                    layer.values = layer.values[..., first:, :]
                self._mask = self._mask[:, first:]

    def _sample(self, logits: Any, rows: list[_Row]) -> list[int]:
        torch = self._torch
        chosen = logits.argmax(dim=-1).tolist()
        for i, row in enumerate(rows):
            params = row.job.params
            if params.greedy:
                continue
            scores = logits[i] / params.temperature
            probs = torch.softmax(scores, dim=-1)
            if params.top_p < 1.0:
                sorted_probs, order = torch.sort(probs, descending=True)
                cumulative = sorted_probs.cumsum(-1)
                cut = (cumulative - sorted_probs) >= params.top_p  # keep the smallest nucleus
                sorted_probs = sorted_probs.masked_fill(cut, 0.0)
                pick = torch.multinomial(sorted_probs, 1, generator=row.generator)
                chosen[i] = int(order[pick])
            else:
                chosen[i] = int(torch.multinomial(probs, 1, generator=row.generator))
        return chosen

    def _advance(self, row: _Row, token: int) -> bool:
        """Record ``token`` for ``row``; deliver and return True when the row is finished."""
        params = row.job.params
        row.tokens.append(token)
        text: str | None = None
        if token in self._eos:
            row.finish_reason = "stop"
            text = self.tokenizer.decode(row.tokens[:-1], skip_special_tokens=True)
        elif params.stop:
            decoded = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
            cut = min((i for i in (decoded.find(s) for s in params.stop) if i >= 0), default=-1)
            if cut >= 0:
                row.finish_reason = "stop"
                text = decoded[:cut]
        if row.finish_reason is None and (
            len(row.tokens) >= params.max_tokens
            or len(row.job.prompt_ids) + len(row.tokens) >= self.context_length
        ):
            row.finish_reason = "length"
        if row.finish_reason is None:
            return False
        row.text = text if text is not None else self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        self.stats["requests"] += 1
        self.stats["completion_tokens"] += len(row.tokens)
        if not row.job.cancelled:
            row.job.on_done(
                GenerationResult(
                    text=row.text,
                    finish_reason=row.finish_reason,
                    prompt_tokens=len(row.job.prompt_ids),
                    completion_tokens=len(row.tokens),
                )
            )
        return True

    def _fail_all(self, error: Exception) -> None:
        rows, self._rows = self._rows, []
        self._cache = self._mask = self._next_pos = self._last = None
        for row in rows:
            if not row.job.cancelled:
                row.job.on_done(error)


def _cache_is_mergeable(cache: Any) -> bool:
    from transformers import cache_utils

    layer_type = getattr(cache_utils, "DynamicLayer", None)
    layers = getattr(cache, "layers", None) or []
    return bool(layers) and layer_type is not None and all(type(layer) is layer_type for layer in layers)


def _left_pad(tensor: Any, width: int) -> Any:
    """Left-pad a [B, H, L, D] cache tensor with zeros to length ``width``."""
    missing = width - tensor.shape[-2]
    if missing <= 0:
        return tensor
    import torch

    pad = tensor.new_zeros((*tensor.shape[:-2], missing, tensor.shape[-1]))
    return torch.cat([pad, tensor], dim=-2)


def _left_pad_2d(mask: Any, width: int) -> Any:
    missing = width - mask.shape[1]
    if missing <= 0:
        return mask
    import torch

    return torch.cat([mask.new_zeros((mask.shape[0], missing)), mask], dim=1)


def _generator(seed: int | None) -> Any:
    import torch

    gen = torch.Generator()
    gen.manual_seed(seed if seed is not None else random.getrandbits(63))
    return gen


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------- HTTP


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
            results = await asyncio.gather(*jobs)
        except RuntimeError as exc:
            return _error(500, str(exc), kind="server_error")
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
    return 0


async def _serve(engine: BatchEngine, model_id: str, args: argparse.Namespace, parent: int | None) -> None:
    app = build_app(engine, model_id, default_max_tokens=args.default_max_tokens)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
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
        log.info("shutting down")
        await runner.cleanup()


# --------------------------------------------------------------------------- subprocess launcher


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
        return _tail(self._stderr_path, max_lines)


def _tail(path: Path, max_lines: int = 40, max_chars: int = 6000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if "it/s]" not in line]  # drop progress bars
    return "\n".join(lines[-max_lines:])[-max_chars:]


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
    On exit the server gets SIGTERM, then SIGKILL after 10 s. The server also exits by
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
            _terminate(process)


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
                f"its stderr ends with:\n{_tail(err_path)}"
            )
        if time.monotonic() > deadline:
            _terminate(process)
            raise LocalServerError(
                f"the local model server for {model_url} was not ready after {timeout:g}s; "
                f"its stderr ends with:\n{_tail(err_path)}"
            )
        time.sleep(0.05)


def _terminate(process: subprocess.Popen, grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
