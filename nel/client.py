"""ModelClient: the one place nel talks to an OpenAI-compatible endpoint.

aiohttp, not httpx, sits behind it: at concurrency 64 on loopback aiohttp sustains
~15x the requests/s of httpx here (see benchmarks/README.md), and the eval loop is
bound by this path. The choice stays inside this module.

Every call either returns a `Completion` that records tokens, latency and attempts, or
raises `ModelCallError` whose `kind` names what went wrong. Nothing fails softly: there
is no empty response after the last retry.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson

from nel.concurrency import AdaptiveLimit
from nel.errors import ModelCallError
from nel.types import Completion, Message

RETRYABLE_KINDS = frozenset({"timeout", "rate_limit", "server_error", "connection", "bad_response"})
_CONTEXT_MARKERS = (
    "context length",
    "context_length",
    "maximum context",
    "context window",
    "too many tokens",
    "prompt is too long",
    "input is too long",
)
_MAX_RETRY_AFTER_S = 300.0


def resolve_api_key(explicit: str | None, env_var: str = "NEL_API_KEY") -> str | None:
    """The key from the flag, else ``env_var``; None when none is set.

    Only the default variable falls back to OPENAI_API_KEY: an endpoint configured with its
    own variable (a judge, a second provider) must never be sent another endpoint's key.
    """
    if explicit:
        return explicit
    names = (env_var, "OPENAI_API_KEY") if env_var == "NEL_API_KEY" else (env_var,)
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


class ModelClient:
    """An async OpenAI ``/chat/completions`` client with retries and full accounting.

    The connection pool is sized to ``concurrency`` so the eval loop's workers never queue
    behind each other inside aiohttp. ``sampling`` holds default body parameters
    (temperature, top_p, max_tokens, seed, ...); per-call keyword arguments override them.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 600.0,
        max_retries: int = 5,
        concurrency: int = 64,
        sampling: dict[str, Any] | None = None,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        limiter: AdaptiveLimit | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.sampling = dict(sampling or {})
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.limiter = limiter  # --concurrency auto: admits each attempt, learns from its outcome
        self._url = f"{self.base_url}/chat/completions"
        self._headers = {"Content-Type": "application/json"}
        # None: look in NEL_API_KEY / OPENAI_API_KEY; "" means "send no key".
        key = resolve_api_key(None) if api_key is None else api_key
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:  # never show the key
        return f"ModelClient(base_url={self.base_url!r}, model={self.model!r})"

    async def __aenter__(self) -> ModelClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None and self._session_loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = None
        self._session_loop = None

    def _get_session(self) -> aiohttp.ClientSession:
        # A session is bound to the loop that created it; asyncio.run() makes a new loop
        # each time, so a client reused across runs needs a fresh session.
        loop = asyncio.get_running_loop()
        if self._session is None or self._session_loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.concurrency)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers=self._headers,
            )
            self._session_loop = loop
        return self._session

    async def chat(self, messages: Sequence[Message], **overrides: Any) -> Completion:
        """Send one chat request, retrying transient failures; raise ModelCallError at the end."""
        body = {"model": self.model, "messages": list(messages), **self.sampling, **overrides}
        payload = orjson.dumps(body)
        session = self._get_session()
        started = time.perf_counter()
        attempt_latencies: list[float] = []
        while True:
            if self.limiter is None:
                t0 = time.perf_counter()
                outcome = await self._attempt(session, payload)
                attempt_latencies.append(time.perf_counter() - t0)
            else:
                async with self.limiter.slot():  # released before any backoff sleep
                    t0 = time.perf_counter()
                    outcome = await self._attempt(session, payload)
                    attempt_latencies.append(time.perf_counter() - t0)
                    if isinstance(outcome, bytes):
                        self.limiter.observe("ok", attempt_latencies[-1])
                    else:
                        self.limiter.observe(outcome[0], attempt_latencies[-1], outcome[3])
            if isinstance(outcome, bytes):
                try:
                    return _parse_completion(outcome, started, attempt_latencies)
                except (orjson.JSONDecodeError, ValueError, KeyError, IndexError, TypeError) as exc:
                    outcome = ("bad_response", f"malformed reply ({exc}): {_snippet(outcome)}", 200, None)
            kind, message, status, retry_after = outcome
            attempts = len(attempt_latencies)
            if kind not in RETRYABLE_KINDS or attempts > self.max_retries:
                raise ModelCallError(
                    kind,
                    f"{message} (POST {self._url}, {attempts} attempt{'s' if attempts > 1 else ''})",
                    attempts=attempts,
                    latency_s=time.perf_counter() - started,
                    attempt_latencies_s=tuple(attempt_latencies),
                    status=status,
                    messages=tuple(body["messages"]),
                )
            await asyncio.sleep(self._backoff(attempts, retry_after))

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, _MAX_RETRY_AFTER_S)
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempts - 1))
        return random.uniform(ceiling / 2, ceiling)

    async def _attempt(
        self, session: aiohttp.ClientSession, payload: bytes
    ) -> bytes | tuple[str, str, int | None, float | None]:
        """One HTTP attempt: the 200 body, or (error_kind, message, status, retry_after)."""
        try:
            async with session.post(self._url, data=payload) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = _parse_retry_after(resp.headers.get("Retry-After"))
        except asyncio.TimeoutError:
            return ("timeout", f"no reply within {self.timeout:g}s", None, None)
        except aiohttp.ClientPayloadError as exc:
            return ("connection", f"connection broke while reading the reply: {exc}", None, None)
        except aiohttp.ClientConnectionError as exc:
            return ("connection", f"connection failed: {exc or type(exc).__name__}", None, None)
        if status != 200:
            return (*_classify_status(status, raw), status, retry_after)
        return raw


def _classify_status(status: int, raw: bytes) -> tuple[str, str]:
    text = _snippet(raw)
    message = f"HTTP {status}: {text}"
    if status == 429:
        return "rate_limit", message
    if status == 408:
        return "timeout", message
    if status >= 500:
        return "server_error", message
    if status in (400, 413, 422) and any(m in text.lower() for m in _CONTEXT_MARKERS):
        return "context_length", message
    return "client_error", message


def _parse_completion(raw: bytes, started: float, attempt_latencies: list[float]) -> Completion:
    data = orjson.loads(raw)
    choice = data["choices"][0]
    message = choice["message"]
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise TypeError(f"message.content is {type(content).__name__}, not a string")
    usage = data.get("usage") or {}
    details = usage.get("completion_tokens_details") or {}
    return Completion(
        content=content or "",
        reasoning_content=message.get("reasoning_content") or message.get("reasoning"),
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        reasoning_tokens=details.get("reasoning_tokens"),
        latency_s=time.perf_counter() - started,
        attempt_latencies_s=tuple(attempt_latencies),
        attempts=len(attempt_latencies),
    )


def _parse_retry_after(value: str | None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _snippet(raw: bytes, limit: int = 300) -> str:
    text = raw.decode("utf-8", errors="replace").strip().replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
