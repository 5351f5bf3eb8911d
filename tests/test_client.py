"""ModelClient against a real local HTTP server: retries, error kinds, accounting."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import time

import pytest

from nel.client import ModelClient
from nel.errors import ModelCallError
from nel.testing.model_server import ModelServer, Rule

MESSAGES = [{"role": "user", "content": "What is 2+2?"}]


def chat(url: str, *, api_key: str | None = None, **kwargs: object):
    async def go():
        async with ModelClient(url, "m", api_key, backoff_base=0.01, **kwargs) as client:  # type: ignore[arg-type]
            return await client.chat(MESSAGES)

    return asyncio.run(go())


def failure(url: str, **kwargs: object) -> ModelCallError:
    with pytest.raises(ModelCallError) as info:
        chat(url, **kwargs)
    return info.value


def test_success_records_tokens_reasoning_and_finish_reason() -> None:
    rule = Rule(content="It is 4.", reasoning_content="two plus two", finish_reason="stop")
    with ModelServer(default=rule) as srv:
        done = chat(srv.base_url)
    assert done.content == "It is 4."
    assert done.reasoning_content == "two plus two"
    assert done.finish_reason == "stop"
    assert (done.prompt_tokens, done.completion_tokens, done.reasoning_tokens) == (3, 3, 3)
    assert done.attempts == 1 and len(done.attempt_latencies_s) == 1
    assert done.latency_s >= done.attempt_latencies_s[0] > 0


def test_top_logprobs_are_read_when_asked_for() -> None:
    top = [{"M": -0.02, "m": -4.0, "Both": -9.0}]
    with ModelServer(default=Rule(content="M", top_logprobs=top)) as srv:
        plain = chat(srv.base_url)
        asked = chat(srv.base_url, sampling={"logprobs": True, "top_logprobs": 3})
        sent = srv.requests[-1].body
    assert plain.top_logprobs == ()  # not asked: the server sends logprobs null, as OpenAI does
    assert asked.top_logprobs == tuple(top) and asked.content == "M"
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 3)


class RawServer:
    """A loopback HTTP server that answers every POST with one fixed 200 body: replies the
    programmable model server would never send."""

    def __init__(self, body: str) -> None:
        payload = body.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    ("logprobs", "why"),
    [
        ('"yes"', "choices[0].logprobs is not an object"),
        ('{"content": "x"}', "choices[0].logprobs.content is not a list of objects"),
        ('{"content": [{"token": "a", "top_logprobs": [{"token": "a"}]}]}', "malformed reply ('logprob')"),
    ],
)
def test_logprobs_of_the_wrong_shape_are_a_bad_response(logprobs: str, why: str) -> None:
    body = ('{"choices": [{"index": 0, "message": {"role": "assistant", "content": "M"}, "finish_reason": "stop", '
            f'"logprobs": {logprobs}}}]}}')  # fmt: skip
    with RawServer(body) as url:
        error = failure(url, max_retries=0)
    assert error.kind == "bad_response" and why in str(error)


def test_length_finish_is_kept() -> None:
    with ModelServer(default=Rule(content="one two three four five")) as srv:
        done = chat(srv.base_url, sampling={"max_tokens": 2})
    assert done.finish_reason == "length"
    assert done.content == "one two"


def test_server_errors_are_retried_until_success() -> None:
    with ModelServer(rules=[Rule(status=500, times=2)], default=Rule(content="ok")) as srv:
        done = chat(srv.base_url)
        assert srv.request_count == 3
    assert done.content == "ok"
    assert done.attempts == 3 and len(done.attempt_latencies_s) == 3


def test_retry_after_is_honoured() -> None:
    with ModelServer(rules=[Rule(status=429, retry_after="0.4", times=1)], default=Rule(content="ok")) as srv:
        t0 = time.perf_counter()
        done = chat(srv.base_url)
        elapsed = time.perf_counter() - t0
    assert done.attempts == 2
    assert elapsed >= 0.4


@pytest.mark.parametrize(
    ("rule", "kind"),
    [
        (Rule(status=503), "server_error"),
        (Rule(status=429), "rate_limit"),
        (Rule(fault="malformed"), "bad_response"),
        (Rule(fault="missing_choices"), "bad_response"),
        (Rule(fault="drop"), "connection"),
    ],
)
def test_persistent_failures_end_with_their_kind_after_all_retries(rule: Rule, kind: str) -> None:
    with ModelServer(default=rule) as srv:
        err = failure(srv.base_url, max_retries=2)
        assert srv.request_count == 3
    assert err.kind == kind
    assert err.attempts == 3
    assert "attempts" in str(err) and srv.base_url in str(err)
    assert err.messages == tuple(MESSAGES)


def test_hang_times_out() -> None:
    with ModelServer(default=Rule(fault="hang")) as srv:
        err = failure(srv.base_url, max_retries=1, timeout=0.3)
    assert err.kind == "timeout"
    assert err.attempts == 2


@pytest.mark.parametrize(
    ("rule", "kind"),
    [
        (Rule(status=400, message="This model's maximum context length is 4096 tokens"), "context_length"),
        (Rule(status=401, message="bad key"), "client_error"),
        (Rule(status=404, message="no such model"), "client_error"),
    ],
)
def test_client_errors_fail_at_once(rule: Rule, kind: str) -> None:
    with ModelServer(default=rule) as srv:
        err = failure(srv.base_url, max_retries=5)
        assert srv.request_count == 1
    assert err.kind == kind
    assert err.status == rule.status


def test_connection_refused_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    err = failure(f"http://127.0.0.1:{port}/v1", max_retries=1)
    assert err.kind == "connection"


def test_api_key_is_sent_but_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-never-print-this-0123456789"
    with ModelServer(default=Rule(status=401, message="denied")) as srv:
        err = failure(srv.base_url, api_key=secret)
        sent = srv.requests[0].headers["authorization"]
    assert sent == f"Bearer {secret}"
    assert secret not in str(err) and secret not in repr(err.__dict__)
    assert secret not in repr(ModelClient("http://x/v1", "m", secret))


def test_api_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEL_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "from-openai-env")
    with ModelServer() as srv:
        chat(srv.base_url)
        assert srv.requests[0].headers["authorization"] == "Bearer from-openai-env"


def test_sampling_and_overrides_reach_the_body() -> None:
    async def go(url: str) -> None:
        async with ModelClient(url, "my-model", sampling={"temperature": 0.6, "top_p": 0.9}) as client:
            await client.chat(MESSAGES, max_tokens=7)

    with ModelServer() as srv:
        asyncio.run(go(srv.base_url))
        body = srv.requests[0].body
    assert body["model"] == "my-model"
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.6, 0.9, 7)
    assert body["messages"] == MESSAGES


def test_client_survives_reuse_across_event_loops() -> None:
    with ModelServer() as srv:
        client = ModelClient(srv.base_url, "m")
        for _ in range(2):
            assert asyncio.run(client.chat(MESSAGES)).content


def test_tools_are_sent_and_tool_calls_recorded() -> None:
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}]
    rule = Rule(content=None, tool_calls=[{"name": "add", "arguments": {"a": 2, "b": 2}}], finish_reason="tool_calls")

    async def go():
        async with ModelClient(srv.base_url, "m", backoff_base=0.01) as client:
            return await client.chat(MESSAGES, tools=tools)

    with ModelServer(default=rule) as srv:
        done = asyncio.run(go())
        assert srv.requests[0].body["tools"] == tools
    assert done.content == "" and done.finish_reason == "tool_calls"
    assert [c["function"]["name"] for c in done.tool_calls] == ["add"]
    assert done.tool_calls[0]["function"]["arguments"] == '{"a": 2, "b": 2}'


def test_reply_with_neither_content_nor_tool_calls_is_a_bad_response() -> None:
    with ModelServer(default=Rule(content=None, tool_calls=[])) as srv:
        assert failure(srv.base_url, max_retries=0).kind == "bad_response"
