"""A programmable OpenAI-compatible chat server for tests and benchmarks.

Why a real HTTP server instead of mocking the client: the behaviours nel must survive
(429 with ``Retry-After``, 5xx bursts, truncated bodies, hung sockets, dropped
connections, ``finish_reason == "length"``) live in the transport and the wire format, so
they are only exercised honestly over a socket.  The server therefore speaks plain HTTP
on 127.0.0.1 through ``aiohttp.web``'s low-level server (no router, no middlewares, no
access log) so that it is never the bottleneck of a benchmark.

Two ways to run it:

* In-process, for the test suite::

      with ModelServer(rules=[Rule(match="capital", content="Paris")]) as srv:
          call_the_client(srv.base_url)          # "http://127.0.0.1:PORT/v1"
          assert srv.request_count == 1

  The aiohttp app runs on its own event loop in a daemon thread, so synchronous tests
  and tests that run their own event loop can both talk to it.

* As a separate process, for benchmarks (so the server does not share the client's
  event loop or GIL) and for subprocess tests::

      python -m nel.testing.model_server --port 0 --latency 0.05 [--rules r.json] [--no-record]

  It prints exactly one line ``READY http://127.0.0.1:PORT/v1`` and serves until SIGTERM or
  SIGINT, then exits 0.  :func:`start_server_process` wraps this.

``/v1/completions`` (text completions) is answered by the same rules, matched on the
``prompt``, with the reply as ``choices[0].text``.

Replies are decided per request: the first :class:`Rule` whose ``match`` occurs in the
request's message text (and whose ``times`` budget is not spent) wins; otherwise
``answer_fn(body)`` is asked; otherwise the default rule answers.
"""

from __future__ import annotations

import argparse
import asyncio
import http
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from aiohttp import web

__all__ = [
    "DEFAULT_CONTENT",
    "FAULTS",
    "ModelServer",
    "RecordedRequest",
    "Rule",
    "main",
    "start_server_process",
    "stop_server_process",
]

DEFAULT_CONTENT = "The answer is \\boxed{42}."
"""Reply text of the built-in default rule (a GSM8K-style boxed answer)."""

FAULTS = frozenset({"malformed", "missing_choices", "hang", "drop", "echo_key"})
"""Accepted values of :attr:`Rule.fault`."""

# (type, code) of the OpenAI-style error body, by status, when the rule does not say.
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("not_found_error", None),
    408: ("timeout_error", None),
    422: ("invalid_request_error", None),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}

_JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Rule:
    """How to answer one kind of request.

    Every field has a default so a rule states only what a test cares about; e.g.
    ``Rule(status=429, retry_after="1", times=2)`` is "rate-limit the first two requests".

    Attributes:
        match: substring looked for in the request's message text (the ``content`` of all
            messages joined by newlines; text parts of list contents included).  ``None``
            matches every request.
        content: assistant reply text; ``None`` sends ``"content": null`` (as reasoning
            models do when they run out of tokens while thinking).
        reasoning_content: sent as ``message.reasoning_content`` when set (vLLM / DeepSeek
            style reasoning output).
        finish_reason: ``choices[0].finish_reason`` unless ``max_tokens`` truncation turns
            it into ``"length"``.
        status: 200 answers normally; 400-599 answers with an OpenAI-style error body
            ``{"error": {"message", "type", "code"}}``.
        message: error message for non-200 statuses, e.g. ``"This model's maximum context
            length is 4096 tokens"``.  Defaults to a generic "simulated <status>" text.
        error_type, error_code: override ``error.type`` / ``error.code``.  By default they
            follow the status (429 -> ``rate_limit_error`` / ``rate_limit_exceeded``, 5xx
            -> ``server_error`` ...); a 400 whose message mentions "context length" gets
            code ``context_length_exceeded`` like OpenAI sends.
        retry_after: value of the ``Retry-After`` header (any status).
        delay: seconds to wait before replying, on top of the server's ``latency``.
        fault: a broken reply instead of a normal one (takes the place of ``status``):
            ``"malformed"`` 200 whose body is not valid JSON; ``"missing_choices"`` 200
            with valid JSON but no ``choices``; ``"hang"`` never replies (the handler ends
            when the client disconnects or the server stops); ``"drop"`` closes the TCP
            connection without a response; ``"echo_key"`` answers 401 with the request's
            bearer token in the error message, as some providers do
            (``Incorrect API key provided: sk-...``), to test that nel scrubs it.
        times: apply to the first ``times`` matching requests only, then skip the rule -
            how "fails twice then succeeds" retry tests are written.  ``None`` = always.
        usage: the ``usage`` object to send verbatim instead of the word-count default.
        tool_calls: sent as ``message.tool_calls``: each ``{"name": ..., "arguments": ...}``
            (arguments a dict, JSON-encoded on the wire as OpenAI does, or a string sent as
            it is), given ids ``call_0``, ``call_1``, ...; with ``content=None`` this is the
            reply of a model that only calls tools.
        top_logprobs: per reply token, its top alternatives ``{token: logprob}`` (the first key
            is the token sent); sent as ``choices[0].logprobs.content`` in OpenAI's shape when the
            request asks for ``"logprobs": true``, as OpenAI does; otherwise ``logprobs`` is null.
    """

    match: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    finish_reason: str = "stop"
    status: int = 200
    message: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    retry_after: str | None = None
    delay: float = 0.0
    fault: str | None = None
    times: int | None = None
    usage: dict[str, Any] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    top_logprobs: list[dict[str, float]] | None = None

    def __post_init__(self) -> None:
        # Fail at construction, where the test author is, not inside the server thread.
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"Rule.fault must be one of {sorted(FAULTS)}, got {self.fault!r}")
        if self.fault is not None and self.status != 200:
            raise ValueError("Rule: set either fault= or a non-200 status=, not both")
        if not (self.status == 200 or 400 <= self.status <= 599):
            raise ValueError(f"Rule.status must be 200 or 400-599, got {self.status}")
        if self.times is not None and self.times < 0:
            raise ValueError(f"Rule.times must be >= 0 or None, got {self.times}")
        if self.delay < 0:
            raise ValueError(f"Rule.delay must be >= 0, got {self.delay}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rule:
        """Build a rule from a JSON object (the ``--rules`` file format)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown Rule field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it.

    ``body`` is the parsed JSON (``None`` if the body was not JSON); ``headers`` has
    lower-cased names, because HTTP header names are case-insensitive and a plain dict is
    not (``rec.headers["authorization"]``).
    """

    path: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def _text_of(content: Any) -> str:
    """The text of one message ``content``: a string, ``None``, or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _error_body(message: str, type_: str | None, code: str | None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "code": code}}).encode()


_KIND_OK, _KIND_ERROR, _KIND_MALFORMED, _KIND_MISSING, _KIND_HANG, _KIND_DROP, _KIND_ECHO_KEY = range(7)
_FAULT_KIND = {
    "malformed": _KIND_MALFORMED,
    "missing_choices": _KIND_MISSING,
    "hang": _KIND_HANG,
    "drop": _KIND_DROP,
    "echo_key": _KIND_ECHO_KEY,
}


class _Prepared:
    """Everything about a rule's reply that does not depend on the request, computed once.

    Only the id, timestamp, echoed model and prompt-token count are filled in per request,
    so the hot path is a json.loads of the request plus one f-string.
    """

    __slots__ = (
        "choices_json",
        "completion_tokens",
        "content_words",
        "delay",
        "error_body",
        "headers",
        "kind",
        "logprobs_choices_json",
        "reasoning_tokens",
        "rule",
        "usage_json",
    )

    def __init__(self, rule: Rule, latency: float) -> None:
        self.rule = rule
        self.delay = latency + rule.delay
        self.headers = dict(_JSON_HEADERS)
        if rule.retry_after is not None:
            self.headers["Retry-After"] = rule.retry_after
        self.kind = (
            _FAULT_KIND[rule.fault]
            if rule.fault is not None
            else (_KIND_OK if rule.status == 200 else _KIND_ERROR)
        )
        self.error_body = b""
        if self.kind == _KIND_ERROR:
            status = rule.status
            try:
                phrase = http.HTTPStatus(status).phrase
            except ValueError:
                phrase = "Error"
            message = rule.message or f"simulated {status} {phrase}"
            type_, code = _ERROR_KINDS.get(
                status, ("server_error", None) if status >= 500 else ("invalid_request_error", None)
            )
            if status == 400 and "context length" in message.lower():
                code = "context_length_exceeded"
            self.error_body = _error_body(
                message,
                rule.error_type if rule.error_type is not None else type_,
                rule.error_code if rule.error_code is not None else code,
            )
        self.content_words = rule.content.split() if rule.content is not None else []
        self.completion_tokens = len(self.content_words)
        self.reasoning_tokens = (
            len(rule.reasoning_content.split()) if rule.reasoning_content is not None else None
        )
        self.choices_json = self.make_choices(rule.content, rule.finish_reason)
        self.logprobs_choices_json = (
            self.make_choices(rule.content, rule.finish_reason, logprobs=True) if rule.top_logprobs else None
        )
        self.usage_json = json.dumps(rule.usage) if rule.usage is not None else None

    def make_choices(
        self, content: str | None, finish_reason: str, *, logprobs: bool = False, tokens: int | None = None
    ) -> str:
        """The ``choices`` JSON; with ``logprobs``, the rule's top logprobs of the first ``tokens``."""
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if self.rule.reasoning_content is not None:
            message["reasoning_content"] = self.rule.reasoning_content
        if self.rule.tool_calls is not None:
            message["tool_calls"] = [_tool_call(i, call) for i, call in enumerate(self.rule.tool_calls)]
        sent = None
        if logprobs and self.rule.top_logprobs:
            sent = {"content": [_logprob_position(top) for top in self.rule.top_logprobs[:tokens]]}
        return json.dumps([{"index": 0, "message": message, "logprobs": sent, "finish_reason": finish_reason}])

    def usage(self, prompt_tokens: int, completion_tokens: int) -> str:
        if self.usage_json is not None:
            return self.usage_json
        details = (
            ""
            if self.reasoning_tokens is None
            else f',"completion_tokens_details":{{"reasoning_tokens":{self.reasoning_tokens}}}'
        )
        return (
            f'{{"prompt_tokens":{prompt_tokens},"completion_tokens":{completion_tokens},'
            f'"total_tokens":{prompt_tokens + completion_tokens}{details}}}'
        )


def _logprob_position(top: dict[str, float]) -> dict[str, Any]:
    """One token of OpenAI's ``logprobs.content``: the first alternative is the token sent."""
    alternatives = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top.items()]
    return {**alternatives[0], "top_logprobs": alternatives} if alternatives else {"top_logprobs": []}


def _tool_call(index: int, call: dict[str, Any]) -> dict[str, Any]:
    arguments = call.get("arguments", {})
    encoded = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": f"call_{index}", "type": "function", "function": {"name": call["name"], "arguments": encoded}}


class ModelServer:
    """An OpenAI-compatible ``/v1/chat/completions`` server whose replies a test programs.

    Args:
        rules: tried in order; the first whose ``match`` occurs in the request text and
            whose ``times`` budget is left answers.  ``times`` budgets belong to this
            server, so one ``Rule`` object can be reused across servers.
        default: answers when no rule matched and ``answer_fn`` returned ``None``; defaults
            to ``Rule(content=DEFAULT_CONTENT)``.
        latency: seconds added to every chat reply (errors and faults included), to model
            a real endpoint's service time in benchmarks.
        echo_answers: ``{substring: reply}`` shorthand for ``Rule(match=..., content=...)``
            rules, appended after ``rules``.
        answer_fn: called with the parsed request body when no rule matched; return a
            ``Rule`` (its ``match``/``times`` are ignored) or ``None`` to fall through to
            the default.  Runs on the server's event loop, so keep it fast.  If it raises,
            the request gets a 500 and the exception is kept in :attr:`errors`.
        record: keep every chat request in :attr:`requests`.  Turn off for benchmarks
            (100k recorded bodies cost memory and time); :attr:`request_count` still counts.
        port: 0 (default) lets the OS choose a free port; see :attr:`port`.
        max_concurrency: a rate limit: a chat request that arrives while this many are being
            answered gets 429 with ``Retry-After: 1`` at once (settable while running).
        peak_concurrency: a server that queues instead of refusing: with ``n`` requests in
            flight above it, ``latency`` is stretched by ``(n / peak) ** 2``, so requests/s
            peak at this concurrency and fall beyond it.
        model_name: the id listed by ``GET /v1/models`` and echoed when a request has no
            ``model``.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        rules: Iterable[Rule] = (),
        default: Rule | None = None,
        latency: float = 0.0,
        echo_answers: dict[str, str] | None = None,
        *,
        answer_fn: Callable[[dict[str, Any]], Rule | None] | None = None,
        record: bool = True,
        port: int = 0,
        model_name: str = "mock-model",
        max_concurrency: int | None = None,
        peak_concurrency: int | None = None,
    ) -> None:
        if latency < 0:
            raise ValueError(f"latency must be >= 0, got {latency}")
        all_rules = list(rules)
        for substring, reply in (echo_answers or {}).items():
            all_rules.append(Rule(match=substring, content=reply))
        self.rules: tuple[Rule, ...] = tuple(all_rules)
        self.default: Rule = default if default is not None else Rule(content=DEFAULT_CONTENT)
        self.latency = float(latency)
        self.answer_fn = answer_fn
        self.record = record
        self.model_name = model_name
        self.max_concurrency = max_concurrency
        self.peak_concurrency = peak_concurrency
        self.in_flight = 0
        self.rejected = 0  # 429s sent because of max_concurrency
        self._requested_port = port

        self._prepared = [_Prepared(r, self.latency) for r in self.rules]
        self._default_prepared = _Prepared(self.default, self.latency)
        self._remaining: list[int | None] = [r.times for r in self.rules]
        # Joining the message text is only needed when some rule matches on it.
        self._needs_text = any(r.match is not None for r in self.rules)
        self._models_body = json.dumps(
            {
                "object": "list",
                "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "nel-testing"}],
            }
        ).encode()

        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._errors: list[BaseException] = []
        self._count = 0
        self._next_id = 0

        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_future: asyncio.Future[None] | None = None
        self._closing: asyncio.Future[None] | None = None
        self._sleeping: set[asyncio.Task[Any]] = set()
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- public state

    @property
    def port(self) -> int:
        """The bound TCP port (after start)."""
        if self._port is None:
            raise RuntimeError("ModelServer is not running; use `with ModelServer(...)` or start()")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` - what an OpenAI client takes as ``base_url``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot copy of the chat requests received so far (empty if ``record=False``)."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        """Chat-completion requests received so far, recorded or not, valid or not."""
        return self._count

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by ``answer_fn`` (each also produced a 500 reply)."""
        with self._lock:
            return list(self._errors)

    def clear_requests(self) -> None:
        """Forget recorded requests and reset the count (rule ``times`` budgets are kept)."""
        with self._lock:
            self._requests.clear()
            self._count = 0

    # ------------------------------------------------------------ thread lifecycle

    def start(self, timeout: float = 10.0) -> ModelServer:
        """Serve from a daemon thread with its own event loop; returns once bound."""
        if self._thread is not None:
            raise RuntimeError("ModelServer already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(ready.set))
            except BaseException as exc:  # noqa: BLE001 - re-raised by start()
                failure.append(exc)
            finally:
                ready.set()
                loop.close()

        self._thread = threading.Thread(target=run, name="nel-model-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"ModelServer did not start within {timeout}s")
        if failure:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"ModelServer failed to start: {failure[0]!r}") from failure[0]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and join the thread.

        Hung (``fault="hang"``) requests have their connections closed first, so this
        returns promptly however many clients are still waiting.  Idempotent.
        """
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._request_stop)
            except RuntimeError:  # loop closed between the check and the call
                pass
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"ModelServer thread did not stop within {timeout}s")
        self._thread = None
        self._loop = None  # the port stays readable, for error messages after stop()

    def __enter__(self) -> ModelServer:  # noqa: PYI034 - typing.Self needs 3.11
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------- serving (loop side)

    def _request_stop(self) -> None:
        """Loop thread only: wake hung handlers and let :meth:`_serve` shut down."""
        if self._closing is not None and not self._closing.done():
            self._closing.set_result(None)
        for task in list(self._sleeping):
            task.cancel()  # aiohttp treats it like a client disconnect: connection closed
        if self._stop_future is not None and not self._stop_future.done():
            self._stop_future.set_result(None)

    async def _serve(self, on_ready: Callable[[], None]) -> None:
        """Bind, call ``on_ready``, serve until :meth:`_request_stop`, then clean up.

        Shared by thread mode and process mode so both behave the same.
        """
        loop = asyncio.get_running_loop()
        self._stop_future = loop.create_future()
        self._closing = loop.create_future()
        # handler_cancellation: when a client gives up on a hung/delayed request, its
        # handler is cancelled instead of lingering until shutdown.
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        # shutdown_timeout bounds how long in-flight (delayed) requests may delay stop().
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
            self._port = sock.getsockname()[1]
            site = web.SockSite(runner, sock, backlog=1024)
            await site.start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        try:
            on_ready()
            await self._stop_future
        finally:
            if not self._closing.done():
                self._closing.set_result(None)
            await asyncio.sleep(0)  # let hung handlers close their connections
            await runner.cleanup()
            sock.close()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Dispatch by path; no router, because this is the hot path of every benchmark."""
        path = request.path
        if path == "/v1/chat/completions" or path == "/chat/completions":
            if request.method != "POST":
                return self._error(405, "use POST for chat completions")
            return await self._chat(request)
        if path in _COMPLETION_PATHS:  # text completions: answered by the same rules as chat
            if request.method != "POST":
                return self._error(405, "use POST for completions")
            return await self._chat(request)
        if request.method != "GET":
            return self._error(405 if path in _GET_PATHS else 404, f"no route {request.method} {path}")
        if path == "/health":
            return web.Response(body=b'{"status":"ok"}', headers=_JSON_HEADERS)
        if path == "/v1/models" or path == "/models":
            return web.Response(body=self._models_body, headers=_JSON_HEADERS)
        if path == "/_stats":
            return web.json_response({"requests": self._count})
        if path == "/_requests":
            recs = [{"path": r.path, "body": r.body, "headers": r.headers} for r in self.requests]
            return web.json_response({"requests": recs})
        return self._error(404, f"no route GET {path}")

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        type_, code = _ERROR_KINDS.get(status, ("invalid_request_error", None))
        return web.Response(status=status, body=_error_body(message, type_, code), headers=_JSON_HEADERS)

    async def _chat(self, request: web.BaseRequest) -> web.StreamResponse:
        if self.max_concurrency is not None and self.in_flight >= self.max_concurrency:
            self._count += 1
            self.rejected += 1
            return web.Response(
                status=429,
                body=_error_body("simulated concurrency limit", "rate_limit_error", "rate_limit_exceeded"),
                headers={**_JSON_HEADERS, "Retry-After": "1"},
            )
        self.in_flight += 1  # only the loop thread writes it
        try:
            return await self._chat_admitted(request)
        finally:
            self.in_flight -= 1

    async def _chat_admitted(self, request: web.BaseRequest) -> web.StreamResponse:
        raw = await request.read()
        self._count += 1  # only the loop thread writes it
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        if self.record:
            rec = RecordedRequest(request.path, body, {k.lower(): v for k, v in request.headers.items()})
            with self._lock:
                self._requests.append(rec)
        if not isinstance(body, dict):
            return self._error(400, "request body is not a JSON object")
        text_mode = request.path in _COMPLETION_PATHS
        if text_mode and not isinstance(body.get("prompt"), str):
            return self._error(400, "request needs a string 'prompt'")
        messages = [{"content": body["prompt"]}] if text_mode else body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._error(400, "request needs a non-empty 'messages' list")
        if body.get("stream"):
            return self._error(400, "stream=true is not supported by the nel test server")

        texts = [_text_of(m.get("content")) if isinstance(m, dict) else "" for m in messages]
        prepared = self._pick(body, texts)

        delay = prepared.delay
        if self.peak_concurrency is not None and self.in_flight > self.peak_concurrency:
            delay *= (self.in_flight / self.peak_concurrency) ** 2
        if delay > 0:
            # Tracked so stop() can cut the wait short instead of waiting out long delays.
            task = asyncio.current_task()
            assert task is not None
            self._sleeping.add(task)
            try:
                await asyncio.sleep(delay)
            finally:
                self._sleeping.discard(task)
        kind = prepared.kind
        if kind == _KIND_OK:
            return self._reply_text(prepared, body, texts) if text_mode else self._reply_ok(prepared, body, texts)
        if kind == _KIND_ERROR:
            return web.Response(
                status=prepared.rule.status, body=prepared.error_body, headers=prepared.headers
            )
        if kind == _KIND_ECHO_KEY:
            key = request.headers.get("Authorization", "").removeprefix("Bearer ")
            body_401 = _error_body(f"Incorrect API key provided: {key}.", "invalid_request_error", "invalid_api_key")
            return web.Response(status=401, body=body_401, headers=prepared.headers)
        if kind == _KIND_MALFORMED:
            return web.Response(
                body=b'{"id":"chatcmpl-malformed","object":"chat.completion","choices":[{"index":0,'
                b'"message":{"role":"assistant","content":"The ans',
                headers=prepared.headers,
            )
        if kind == _KIND_MISSING:
            return web.Response(
                body=json.dumps(
                    {
                        "id": f"chatcmpl-{self._new_id()}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", self.model_name),
                    }
                ).encode(),
                headers=prepared.headers,
            )
        if kind == _KIND_DROP:
            transport = request.transport
            if transport is not None:
                transport.close()
            # connection_lost now cancels this handler (handler_cancellation=True).
            await self._forever()
        # _KIND_HANG: wait for the client to give up (cancels us) or for shutdown.
        assert self._closing is not None
        await asyncio.shield(self._closing)
        transport = request.transport
        if transport is not None:
            transport.close()
        await self._forever()
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    async def _forever() -> None:
        await asyncio.get_running_loop().create_future()

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _pick(self, body: dict[str, Any], texts: list[str]) -> _Prepared:
        """First live matching rule, else ``answer_fn``, else the default."""
        if self.rules:
            text = "\n".join(texts) if self._needs_text else ""
            remaining = self._remaining
            for i, prepared in enumerate(self._prepared):
                match = prepared.rule.match
                if match is not None and match not in text:
                    continue
                left = remaining[i]
                if left is not None:
                    if left <= 0:
                        continue
                    remaining[i] = left - 1
                return prepared
        if self.answer_fn is not None:
            try:
                rule = self.answer_fn(body)
            except Exception as exc:  # noqa: BLE001 - reported as a 500 and kept in .errors
                with self._lock:
                    self._errors.append(exc)
                return _Prepared(
                    Rule(status=500, message=f"answer_fn raised {type(exc).__name__}: {exc}"),
                    self.latency,
                )
            if rule is not None:
                return _Prepared(rule, self.latency)
        return self._default_prepared

    def _reply_ok(self, prepared: _Prepared, body: dict[str, Any], texts: list[str]) -> web.Response:
        wants_logprobs = body.get("logprobs") is True
        choices = prepared.logprobs_choices_json if wants_logprobs else None
        choices = choices or prepared.choices_json
        completion_tokens = prepared.completion_tokens
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if isinstance(limit, int) and not isinstance(limit, bool) and completion_tokens > limit >= 0:
            words = prepared.content_words[:limit]
            completion_tokens = len(words)
            choices = prepared.make_choices(" ".join(words), "length", logprobs=wants_logprobs, tokens=limit)
        prompt_tokens = 0 if prepared.usage_json is not None else sum(len(t.split()) for t in texts)
        usage = prepared.usage(prompt_tokens, completion_tokens)
        return self._envelope(prepared, body, "chat.completion", choices, usage)

    def _reply_text(self, prepared: _Prepared, body: dict[str, Any], texts: list[str]) -> web.Response:
        """A ``text_completion`` reply: the rule's content as ``choices[0].text``, cut at ``max_tokens``."""
        words, finish_reason = prepared.content_words, prepared.rule.finish_reason
        limit = body.get("max_tokens")
        if isinstance(limit, int) and not isinstance(limit, bool) and len(words) > limit >= 0:
            words, finish_reason = words[:limit], "length"
        text = prepared.rule.content if words is prepared.content_words else " ".join(words)
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        prompt_tokens = 0 if prepared.usage_json is not None else sum(len(t.split()) for t in texts)
        usage = prepared.usage(prompt_tokens, len(words))
        return self._envelope(prepared, body, "text_completion", f"[{json.dumps(choice)}]", usage)

    def _envelope(
        self, prepared: _Prepared, body: dict[str, Any], kind: str, choices: str, usage: str
    ) -> web.Response:
        """The reply object around ``choices`` (JSON text), the same for every route."""
        self._next_id += 1
        prefix = "chatcmpl" if kind == "chat.completion" else "cmpl"
        payload = (
            f'{{"id":"{prefix}-{self._next_id}","object":"{kind}","created":{int(time.time())},'
            f'"model":{json.dumps(body.get("model", self.model_name))},"choices":{choices},"usage":{usage}}}'
        )
        return web.Response(body=payload.encode(), headers=prepared.headers)


_GET_PATHS = frozenset({"/health", "/v1/models", "/models", "/_stats", "/_requests"})
_COMPLETION_PATHS = frozenset({"/v1/completions", "/completions"})


# ------------------------------------------------------------------- process mode


def _load_rules_file(path: str) -> tuple[list[Rule], Rule | None]:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise TypeError(f"{path}: expected a JSON object with 'rules' and/or 'default'")
    rules = [Rule.from_dict(r) for r in data.get("rules", [])]
    default = Rule.from_dict(data["default"]) if data.get("default") is not None else None
    return rules, default


def main(argv: Sequence[str] | None = None) -> int:
    """Process mode: bind, print ``READY <base_url>``, serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m nel.testing.model_server",
        description="Programmable OpenAI-compatible chat server for tests and benchmarks.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = free)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each reply")
    parser.add_argument("--rules", help='JSON file: {"rules": [{...}], "default": {...}}')
    parser.add_argument("--no-record", action="store_true", help="do not keep request bodies")
    parser.add_argument("--model-name", default="mock-model")
    parser.add_argument("--max-concurrency", type=int, help="429 above this many requests in flight")
    parser.add_argument("--peak-concurrency", type=int, help="latency grows as (n/peak)^2 above it")
    args = parser.parse_args(argv)

    rules: list[Rule] = []
    default: Rule | None = None
    if args.rules:
        try:
            rules, default = _load_rules_file(args.rules)
        except (OSError, ValueError, TypeError) as exc:
            print(f"model_server: bad --rules file {args.rules}: {exc}", file=sys.stderr)
            return 2
    srv = ModelServer(
        rules,
        default,
        latency=args.latency,
        record=not args.no_record,
        port=args.port,
        model_name=args.model_name,
        max_concurrency=args.max_concurrency,
        peak_concurrency=args.peak_concurrency,
    )

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, srv._request_stop)
        await srv._serve(lambda: print(f"READY {srv.base_url}", flush=True))

    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:  # optional speed-up; never a dependency
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    loop = loop_factory() if loop_factory is not None else asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return 0


def start_server_process(
    args: Sequence[str] = (), timeout: float = 20.0
) -> tuple[subprocess.Popen[bytes], str]:
    """Launch ``python -m nel.testing.model_server *args``; return ``(proc, base_url)``.

    Started and checked like every server nel starts (nel.server_process), with its stdout a
    pipe the caller may read and the ``READY`` line as the readiness check. If the process
    exits or stays silent for ``timeout`` seconds, it is killed and a ``RuntimeError``
    carrying its stderr is raised.  The caller owns ``proc``: end it with
    :func:`stop_server_process` (SIGTERM, then wait).
    """
    from pathlib import Path

    from nel.server_process import Readiness, ServerProcess

    fd, stderr_path = tempfile.mkstemp(prefix="nel-model-server-", suffix=".stderr")
    os.close(fd)
    log = Path(stderr_path)
    # own_group=False: in the caller's group, so a Ctrl-C of the test run stops it too
    server = ServerProcess.start(
        [sys.executable, "-m", "nel.testing.model_server", *args], log=log, stdout=subprocess.PIPE,
        own_group=False, name="the model server process", error=RuntimeError,
    )  # fmt: skip
    proc = server.process
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()

    def first_line() -> str | None:
        try:
            text = lines.get_nowait().decode(errors="replace").strip()
        except queue.Empty:
            return None
        if not text:  # EOF: the process is exiting; wait_ready reports its exit code and stderr
            return None
        if not text.startswith("READY "):
            raise RuntimeError(
                f"the model server process printed {text!r} instead of 'READY <url>'; "
                f"its stderr ends with:\n{server.log_tail()}"
            )
        return text.split(" ", 1)[1]

    ready = Readiness(first_line, "it printed 'READY <url>'", "no 'READY <url>' line")
    base_url = server.wait_ready(ready, timeout, timeout_name="timeout", grace=0)
    log.unlink(missing_ok=True)  # kept only when startup failed, for the message that names it
    return proc, base_url


def stop_server_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM the process from :func:`start_server_process`, wait, return its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
