"""BatchEngine: a local model behind continuous batching, on one worker thread.

It keeps a running batch of up to ``max_batch_size`` sequences sharing one left-padded KV
cache. Between decode steps it admits waiting requests: they are prefilled together,
left-padded, and their KV cache is merged into the running one, so a finished sequence's
slot is refilled at once (continuous batching). Finished rows leave the batch and the
all-padding columns on the left are trimmed. Each row samples with its own parameters and
its own seeded ``torch.Generator``, so requests with different temperatures and seeds share
a batch. torch is imported lazily.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from nel.serving.model import LoadedModel

log = logging.getLogger("nel.serving")

DEFAULT_MAX_TOKENS = 512
DEFAULT_MAX_BATCH_SIZE = 16


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
        self.stats = {
            "requests": 0,
            "completion_tokens": 0,
            "prompt_tokens": 0,
            "steps": 0,
            "prefills": 0,
            "max_batch": 0,
            "cancelled": 0,  # requests dropped because their client went away
        }

    # ------------------------------------------------------------------ public

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="nel-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Fail every waiting request at once, then let the running batch end after its step."""
        with self._cond:
            self._stopping = True
            pending, self._pending = list(self._pending), deque()
            self._cond.notify_all()
        error = RuntimeError("the server is shutting down")
        for job in pending:
            job.on_done(error)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def load(self) -> dict[str, int]:
        return {"running": len(self._rows), "waiting": len(self._pending)}

    def submit(self, job: _Job) -> None:
        with self._cond:
            if self._stopping:
                raise RuntimeError("the server is shutting down")
            self._pending.append(job)
            self._cond.notify_all()

    def cancel(self, job: _Job) -> None:
        """Drop ``job``: out of the queue now, out of the running batch before the next step.

        Nobody waits for its result any more, so decoding it would only delay everyone else.
        """
        with self._cond:
            if job.cancelled:
                return
            job.cancelled = True
            self.stats["cancelled"] += 1
            with contextlib.suppress(ValueError):
                self._pending.remove(job)
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
        except asyncio.CancelledError:  # the handler was cancelled: its client is gone
            self.cancel(job)
            raise

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
