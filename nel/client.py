"""ModelClient: the one place nel talks to an OpenAI-compatible endpoint.

aiohttp, not httpx, sits behind it: at concurrency 64 on loopback aiohttp sustains
~15x the requests/s of httpx here (see benchmarks/README.md), and the eval loop is
bound by this path. The choice stays inside this module.

Every call either returns a `Completion` that records tokens, latency and attempts, or
raises `ModelCallError` whose `kind` names what went wrong. Nothing fails softly: there
is no empty response after the last retry, and a reply with neither content nor tool calls is a bad_response.

Secrets stop here: credentials in the URL become an Authorization header and leave the
URL, and every message built from a server's reply has the key itself scrubbed out (a
server may echo it: "Incorrect API key provided: sk-...").
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import hashlib
import os
import random
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import aiohttp
import orjson

from nel.cache import CacheKey, ResponseCache
from nel.concurrency import AdaptiveLimit
from nel.errors import EndpointUnreachableError, ModelCallError
from nel.types import Completion, Message

RETRYABLE_KINDS = frozenset({"timeout", "rate_limit", "server_error", "connection", "bad_response"})
_UNREACHABLE = "unreachable"  # a connection error that reached no server; recorded as "connection"
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
_Parser = Callable[[bytes, float, list[float]], Completion]
"""A 200 body, the request's start and its attempt latencies -> the Completion (raises if malformed)."""
DOWN_AFTER_ATTEMPTS = 3
"""Connect failures in a row, before any request ever reached the server, that end a run early."""
REDACTED = "[redacted]"
_MIN_SECRET_CHARS = 4  # shorter values would scrub ordinary words out of every message


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret value replaced, longest first (a key may contain a shorter one)."""
    for secret in sorted({s for s in secrets if s and len(s) >= _MIN_SECRET_CHARS}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without ``user:password@``, and the user and password it carried (percent-decoded)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    bare = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    user = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password else None
    return bare, user, password


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
    ``user:password@`` in ``base_url`` is sent as HTTP Basic auth (instead of the key) and
    kept out of ``base_url``. Until a first reply arrives, `DOWN_AFTER_ATTEMPTS` connect
    failures in a row raise `EndpointUnreachableError`: a wrong URL or a server that is not
    up, said in seconds rather than after every row's retries.
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
        cache: ResponseCache | None = None,
    ) -> None:
        bare_url, user, password = split_credentials(base_url)
        self.base_url = bare_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.sampling = dict(sampling or {})
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.limiter = limiter  # --concurrency auto: admits each attempt, learns from its outcome
        self.cache = cache  # --cache-dir: see cache_key / from_cache / to_cache
        self._url = f"{self.base_url}/chat/completions"
        self._headers = {"Content-Type": "application/json"}
        # None: look in NEL_API_KEY / OPENAI_API_KEY; "" means "send no key".
        key = resolve_api_key(None) if api_key is None else api_key
        if user is not None or password is not None:
            basic = aiohttp.BasicAuth(user or "", password or "")
            self._headers["Authorization"] = basic.encode()
        elif key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._secrets = tuple(s for s in (key, password) if s)
        self._reached = False  # has any request had an HTTP reply (of any status)?
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

    async def chat(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]] | None = None,
        *,
        sample: tuple[int, int] | None = None,
        **overrides: Any,
    ) -> Completion:
        """Send one chat request, retrying transient failures; raise ModelCallError at the end.

        ``tools`` (OpenAI function-calling format) are sent when given; the reply's tool calls
        land in ``Completion.tool_calls``. ``sample`` (problem_idx, repeat) is part of the
        response cache's key, so that repeats sent without a seed are still distinct samples; it
        is never sent. A call without it is never cached.
        """
        body = {"model": self.model, "messages": list(messages), **self.sampling, **overrides}
        if tools:
            body["tools"] = list(tools)
        cache_key = self.cache_key("chat/completions", body, sample)
        if cache_key is not None and (hit := await self.from_cache(cache_key, _parse_completion)) is not None:
            return hit
        return await self._send(self._url, body, _parse_completion, tuple(body["messages"]), cache_key)

    def sample_overrides(self, sample: tuple[int, int]) -> dict[str, Any]:
        """Body parameters of one sample (problem_idx, repeat): its own ``seed`` when the run has
        one, so the repeats of a problem are distinct samples, each reproducible (`sample_seed`)."""
        seed = self.sampling.get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool):
            return {"seed": sample_seed(seed, *sample)}
        return {}

    # The response cache, for every route (chat, completions, ...): a method builds its body, asks
    # `from_cache` before its first attempt and hands `to_cache` the 200 body that parsed.
    def cache_key(self, route: str, body: dict[str, Any], sample: tuple[int, int] | None) -> CacheKey | None:
        """None (not cached) without a cache, or without a sample: repeats of one prompt sent
        without their (problem_idx, repeat) would all be answered with the first one's reply."""
        return None if self.cache is None or sample is None else self.cache.key(route, body, sample)

    async def from_cache(self, key: CacheKey, parse: Callable[[bytes, float, list[float]], Completion]) -> Completion | None:
        """The stored reply as a completion (``cached``, no attempts), or None on a miss.

        An entry that no longer parses is a miss (the cache warns about it once)."""
        assert self.cache is not None
        started = time.perf_counter()
        raw = await self.cache.aget(key)
        if raw is None:
            return None
        try:
            completion = parse(raw, started, [])
        except (orjson.JSONDecodeError, ValueError, KeyError, IndexError, TypeError) as exc:
            self.cache.unusable(key, f"its reply does not parse ({exc})")
            return None
        return dataclasses.replace(completion, cached=True, attempts=0, latency_s=time.perf_counter() - started)

    async def to_cache(self, key: CacheKey | None, raw: bytes) -> None:
        """Store a reply that parsed; the key is scrubbed out of it in case the server echoed it."""
        if key is not None and self.cache is not None:
            await self.cache.aput(key, redact(raw.decode("utf-8", errors="replace"), self._secrets).encode())

    async def complete(self, prompt: str, *, sample: tuple[int, int] | None = None, **overrides: Any) -> Completion:
        """Send one text completion (``POST /completions``): ``prompt`` in, ``choices[0].text`` out.

        For prompts that end inside the model's reply (an answer prefix) and for base models,
        which have no chat template. Retries, error kinds, accounting and the cache are ``chat``'s;
        a failure's ``messages`` is the prompt as one user message, as the trajectory records it.
        """
        body = {"model": self.model, "prompt": prompt, **self.sampling, **overrides}
        cache_key = self.cache_key("completions", body, sample)
        if cache_key is not None and (hit := await self.from_cache(cache_key, _parse_text_completion)) is not None:
            return hit
        sent = ({"role": "user", "content": prompt},)
        return await self._send(f"{self.base_url}/completions", body, _parse_text_completion, sent, cache_key)

    async def _send(
        self, url: str, body: dict[str, Any], parse: _Parser, sent: tuple[Message, ...], cache_key: CacheKey | None
    ) -> Completion:
        """POST ``body`` to ``url`` until a reply parses (cached under ``cache_key``) or the retries are spent."""
        payload = orjson.dumps(body)
        session = self._get_session()
        started = time.perf_counter()
        attempt_latencies: list[float] = []
        refused = 0  # connect failures in a row of this request
        while True:
            if self.limiter is None:
                t0 = time.perf_counter()
                outcome = await self._attempt(session, payload, url)
                attempt_latencies.append(time.perf_counter() - t0)
            else:
                async with self.limiter.slot():  # released before any backoff sleep
                    t0 = time.perf_counter()
                    outcome = await self._attempt(session, payload, url)
                    attempt_latencies.append(time.perf_counter() - t0)
                    if isinstance(outcome, bytes):
                        self.limiter.observe("ok", attempt_latencies[-1])
                    else:
                        self.limiter.observe(outcome[0], attempt_latencies[-1], outcome[3])
            if isinstance(outcome, bytes):
                try:
                    completion = parse(outcome, started, attempt_latencies)
                except (orjson.JSONDecodeError, ValueError, KeyError, IndexError, TypeError) as exc:
                    outcome = ("bad_response", f"malformed reply ({exc}): {_snippet(outcome, self._secrets)}", 200, None)
                else:
                    await self.to_cache(cache_key, outcome)
                    return completion
            kind, message, status, retry_after = outcome
            attempts = len(attempt_latencies)
            refused = refused + 1 if kind == _UNREACHABLE else 0
            kind = "connection" if kind == _UNREACHABLE else kind
            down = not self._reached and refused >= min(DOWN_AFTER_ATTEMPTS, self.max_retries + 1)
            if down or kind not in RETRYABLE_KINDS or attempts > self.max_retries:
                error = EndpointUnreachableError if down else ModelCallError
                raise error(
                    kind,
                    self._describe(message, attempts, down, url),
                    attempts=attempts,
                    latency_s=time.perf_counter() - started,
                    attempt_latencies_s=tuple(attempt_latencies),
                    status=status,
                    messages=sent,
                )
            await asyncio.sleep(self._backoff(attempts, retry_after))

    def _describe(self, message: str, attempts: int, down: bool, url: str | None = None) -> str:
        """The error line: what happened, the URL, the attempts; never a secret the server echoed."""
        url = url or self._url
        if down:
            text = (f"cannot reach the model server at {url}: {message} ({attempts} attempts in a row, "
                    "and no request has reached it yet); check that the server is up and the URL is right")  # fmt: skip
        else:
            text = f"{message} (POST {url}, {attempts} attempt{'s' if attempts > 1 else ''})"
        return redact(text, self._secrets)

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, _MAX_RETRY_AFTER_S)
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempts - 1))
        return random.uniform(ceiling / 2, ceiling)

    async def _attempt(
        self, session: aiohttp.ClientSession, payload: bytes, url: str | None = None
    ) -> bytes | tuple[str, str, int | None, float | None]:
        """One HTTP attempt: the 200 body, or (error_kind, message, status, retry_after)."""
        try:
            async with session.post(url or self._url, data=payload) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = _parse_retry_after(resp.headers.get("Retry-After"))
        except asyncio.TimeoutError:
            return ("timeout", f"no reply within {self.timeout:g}s", None, None)
        except aiohttp.ClientPayloadError as exc:
            return ("connection", f"connection broke while reading the reply: {exc}", None, None)
        except aiohttp.ClientConnectorError as exc:  # refused, unknown host, TLS: no server reached
            return (_UNREACHABLE, f"connection failed: {exc.os_error or exc}", None, None)
        except aiohttp.ClientConnectionError as exc:
            return ("connection", f"connection failed: {exc or type(exc).__name__}", None, None)
        self._reached = True
        if status != 200:
            return (*_classify_status(status, _snippet(raw, self._secrets)), status, retry_after)
        return raw


def _classify_status(status: int, text: str) -> tuple[str, str]:
    """The error kind of a non-200 reply, and its message (``text``: the body, secrets scrubbed)."""
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
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    # Reasoning but no content: out of tokens while thinking; nel.reasoning names it, no retry.
    if content is None and not message.get("tool_calls") and not reasoning:
        # Not an empty answer to score as wrong: the model said nothing (and sent no reasoning that
        # would explain it), so the row is a failure that names it, and a rerun may retry it.
        raise ValueError(f"reply has no content (message.content is null, finish_reason {choice.get('finish_reason')!r})")
    if content is not None and not isinstance(content, str):
        raise TypeError(f"message.content is {type(content).__name__}, not a string")
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list) or not all(isinstance(c, dict) for c in tool_calls):
        raise TypeError("message.tool_calls is not a list of objects")
    return _accounted(
        data, choice, started, attempt_latencies,
        content=content or "", reasoning_content=reasoning, tool_calls=tuple(tool_calls),
    )  # fmt: skip


def _parse_text_completion(raw: bytes, started: float, attempt_latencies: list[float]) -> Completion:
    """A ``/completions`` reply: ``choices[0].text``; a null or missing text is a bad_response."""
    data = orjson.loads(raw)
    choice = data["choices"][0]
    text = choice["text"]
    if not isinstance(text, str):
        raise TypeError(f"choices[0].text is {type(text).__name__}, not a string")
    return _accounted(data, choice, started, attempt_latencies, content=text)


def _accounted(
    data: dict[str, Any], choice: dict[str, Any], started: float, attempt_latencies: list[float], **reply: Any
) -> Completion:
    """The Completion of a parsed reply: its content (``reply``) plus what every route accounts
    for the same way (finish reason, usage, latency, attempts, top logprobs)."""
    usage = data.get("usage") or {}
    details = usage.get("completion_tokens_details") or {}
    logprobs = choice.get("logprobs")
    return Completion(
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        reasoning_tokens=details.get("reasoning_tokens"),
        latency_s=time.perf_counter() - started,
        attempt_latencies_s=tuple(attempt_latencies),
        attempts=len(attempt_latencies),
        top_logprobs=_top_logprobs(logprobs) if logprobs else (),
        **reply,
    )


def _top_logprobs(logprobs: dict[str, Any]) -> tuple[dict[str, float], ...]:
    """``choices[0].logprobs.content[i].top_logprobs`` (the chat format; vLLM and SGLang send it
    too) as one {token: logprob} per generated token. A shape nel cannot read is a bad_response."""
    if not isinstance(logprobs, dict):
        raise TypeError("choices[0].logprobs is not an object")
    content = logprobs.get("content")
    if content is None:
        return ()
    if not isinstance(content, list) or not all(isinstance(p, dict) for p in content):
        raise TypeError("choices[0].logprobs.content is not a list of objects")
    tokens: list[dict[str, float]] = []
    for position in content:
        top = position.get("top_logprobs") or []
        alternatives = {str(t["token"]): float(t["logprob"]) for t in top}
        if not alternatives and "token" in position:  # top_logprobs not asked for: the chosen token only
            alternatives = {str(position["token"]): float(position["logprob"])}
        tokens.append(alternatives)
    return tuple(tokens)


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


def _snippet(raw: bytes, secrets: Iterable[str], limit: int = 300) -> str:
    """The start of a reply body for a message; scrubbed before it is cut, so no key prefix survives."""
    text = redact(raw.decode("utf-8", errors="replace").strip().replace("\n", " "), secrets)
    return text if len(text) <= limit else text[:limit] + "..."


SEED_MODULUS = 2**31
"""Derived seeds stay in [0, 2**31): every server's seed type (vLLM, SGLang, OpenAI) holds them."""


def sample_seed(run_seed: int, problem_idx: int, repeat: int) -> int:
    """The request seed of sample (problem_idx, repeat) of a run with ``--seed run_seed``.

    A per-problem base from a hash, plus the repeat: the repeats of one problem always get
    distinct seeds (consecutive ones), and two runs with different ``--seed`` share no seeds
    beyond chance, which ``run_seed + repeat`` would not give (--seed 1 and --seed 2 would
    share every sample but one). docs/cli.md states the formula.
    """
    digest = hashlib.sha256(f"nel-seed:{run_seed}:{problem_idx}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") + repeat) % SEED_MODULUS
