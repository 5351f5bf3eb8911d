"""Tests for nel.testing.model_server, driven with plain urllib / aiohttp (not nel's client).

Every fault the server can inject is exercised over a real socket, because the tests of
nel's client will trust these faults to look on the wire the way this file says they do.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nel.testing.model_server import (
    DEFAULT_CONTENT,
    ModelServer,
    Rule,
    start_server_process,
    stop_server_process,
)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def post(
    base_url: str, body: Any, headers: dict[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """POST to /chat/completions; return (status, headers, raw body) for any status."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        base_url + "/chat/completions",
        data=data,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def get_json(url: str) -> tuple[int, Any]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, json.loads(resp.read())


def chat(base_url: str, text: str, **extra: Any) -> dict[str, Any]:
    status, _, raw = post(base_url, {"model": "m", "messages": user(text), **extra})
    assert status == 200, raw
    return json.loads(raw)


def test_success_reply_has_openai_shape() -> None:
    with ModelServer() as srv:
        assert srv.base_url == f"http://127.0.0.1:{srv.port}/v1"
        status, headers, raw = post(
            srv.base_url,
            {
                "model": "my-model",
                "messages": [*user("two words"), {"role": "user", "content": "three more words"}],
            },
        )
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    reply = json.loads(raw)
    assert reply["id"].startswith("chatcmpl-")
    assert reply["object"] == "chat.completion"
    assert isinstance(reply["created"], int) and abs(reply["created"] - time.time()) < 60
    assert reply["model"] == "my-model"
    choice = reply["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": DEFAULT_CONTENT}
    assert choice["finish_reason"] == "stop"
    assert reply["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


def test_rules_match_in_order_and_times_budget_runs_out() -> None:
    rules = [
        Rule(match="alpha", content="first", times=2),
        Rule(match="alpha", content="second"),
        Rule(match="beta", content="B"),
    ]
    with ModelServer(rules=rules, echo_answers={"gamma": "G"}) as srv:
        answers = [chat(srv.base_url, "x alpha y")["choices"][0]["message"]["content"] for _ in range(3)]
        assert answers == ["first", "first", "second"]
        assert chat(srv.base_url, "beta")["choices"][0]["message"]["content"] == "B"
        assert chat(srv.base_url, "gamma ray")["choices"][0]["message"]["content"] == "G"
        assert chat(srv.base_url, "nothing")["choices"][0]["message"]["content"] == DEFAULT_CONTENT
        assert srv.request_count == 6


def test_match_sees_all_messages_and_text_parts() -> None:
    with ModelServer(rules=[Rule(match="needle", content="found")]) as srv:
        messages = [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "a needle here"}]},
        ]
        status, _, raw = post(srv.base_url, {"model": "m", "messages": messages})
    assert status == 200
    assert json.loads(raw)["choices"][0]["message"]["content"] == "found"


def test_requests_are_recorded_with_body_and_lowercased_headers() -> None:
    with ModelServer() as srv:
        post(
            srv.base_url,
            {"model": "m", "messages": user("hi"), "temperature": 0.3},
            {"Authorization": "Bearer k"},
        )
        recs = srv.requests
    assert len(recs) == 1
    assert recs[0].path == "/v1/chat/completions"
    assert recs[0].body["temperature"] == 0.3
    assert recs[0].headers["authorization"] == "Bearer k"


def test_record_false_counts_but_keeps_nothing() -> None:
    with ModelServer(record=False) as srv:
        for _ in range(3):
            chat(srv.base_url, "hi")
        assert srv.request_count == 3
        assert srv.requests == []


def test_500_returns_openai_error_body() -> None:
    with ModelServer(default=Rule(status=500, message="boom")) as srv:
        status, _, raw = post(srv.base_url, {"model": "m", "messages": user("hi")})
    assert status == 500
    assert json.loads(raw) == {"error": {"message": "boom", "type": "server_error", "code": None}}


def test_429_sends_retry_after_then_recovers() -> None:
    with ModelServer(rules=[Rule(status=429, retry_after="3", times=1)]) as srv:
        status, headers, raw = post(srv.base_url, {"model": "m", "messages": user("hi")})
        assert status == 429
        assert headers["Retry-After"] == "3"
        assert json.loads(raw)["error"]["code"] == "rate_limit_exceeded"
        assert chat(srv.base_url, "hi")["choices"][0]["message"]["content"] == DEFAULT_CONTENT


def test_context_length_error() -> None:
    msg = "This model's maximum context length is 4096 tokens"
    with ModelServer(default=Rule(status=400, message=msg)) as srv:
        status, _, raw = post(srv.base_url, {"model": "m", "messages": user("long")})
    assert status == 400
    err = json.loads(raw)["error"]
    assert err["message"] == msg
    assert err["type"] == "invalid_request_error"
    assert err["code"] == "context_length_exceeded"


def test_malformed_body_is_not_json() -> None:
    with ModelServer(default=Rule(fault="malformed")) as srv:
        status, _, raw = post(srv.base_url, {"model": "m", "messages": user("hi")})
    assert status == 200
    assert raw  # something arrived ...
    with pytest.raises(json.JSONDecodeError):  # ... but it does not parse
        json.loads(raw)


def test_missing_choices_is_valid_json_without_choices() -> None:
    with ModelServer(default=Rule(fault="missing_choices")) as srv:
        status, _, raw = post(srv.base_url, {"model": "m", "messages": user("hi")})
    assert status == 200
    reply = json.loads(raw)
    assert "choices" not in reply
    assert reply["object"] == "chat.completion"


def test_hang_trips_client_timeout_and_does_not_block_stop() -> None:
    srv = ModelServer(rules=[Rule(match="hang", fault="hang")]).start()

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            body = {"model": "m", "messages": user("hang")}
            t0 = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                async with session.post(
                    srv.base_url + "/chat/completions", json=body, timeout=aiohttp.ClientTimeout(total=0.3)
                ) as resp:
                    await resp.read()
            assert time.monotonic() - t0 < 2.0
            # A second hung request is still open while the server stops: stop must not wait for it.
            pending = asyncio.create_task(
                session.post(
                    srv.base_url + "/chat/completions", json=body, timeout=aiohttp.ClientTimeout(total=30)
                )
            )
            await asyncio.sleep(0.2)
            assert srv.request_count == 2
            t1 = time.monotonic()
            await asyncio.to_thread(srv.stop)
            assert time.monotonic() - t1 < 2.0
            with pytest.raises(aiohttp.ClientError):
                await pending

    try:
        asyncio.run(run())
    finally:
        srv.stop()


def test_drop_closes_connection_without_response() -> None:
    async def run(base_url: str) -> None:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                async with session.post(
                    base_url + "/chat/completions",
                    json={"model": "m", "messages": user("drop me")},
                    timeout=aiohttp.ClientTimeout(total=5),
                ) as resp:
                    await resp.read()
            # The server is still healthy for the next request.
            async with session.post(
                base_url + "/chat/completions", json={"model": "m", "messages": user("fine")}
            ) as resp:
                assert resp.status == 200

    with ModelServer(rules=[Rule(match="drop", fault="drop")]) as srv:
        asyncio.run(run(srv.base_url))
        assert srv.request_count == 2


def test_max_tokens_truncates_and_sets_length() -> None:
    with ModelServer(default=Rule(content="one two three four five")) as srv:
        cut = chat(srv.base_url, "hi", max_tokens=2)
        whole = chat(srv.base_url, "hi", max_tokens=10)
    assert cut["choices"][0]["message"]["content"] == "one two"
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 2
    assert whole["choices"][0]["message"]["content"] == "one two three four five"
    assert whole["choices"][0]["finish_reason"] == "stop"


def test_reasoning_content_and_usage_override() -> None:
    rules = [
        Rule(match="think", content="42", reasoning_content="let me see", finish_reason="stop"),
        Rule(
            match="custom", content="x", usage={"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}
        ),
    ]
    with ModelServer(rules=rules) as srv:
        thought = chat(srv.base_url, "think hard")
        custom = chat(srv.base_url, "custom")
    assert thought["choices"][0]["message"]["reasoning_content"] == "let me see"
    assert thought["usage"]["completion_tokens_details"] == {"reasoning_tokens": 3}
    assert custom["usage"] == {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}
    assert "reasoning_content" not in custom["choices"][0]["message"]


def test_answer_fn_runs_after_rules_and_before_default() -> None:
    def answer(body: dict[str, Any]) -> Rule | None:
        text = body["messages"][-1]["content"]
        if text.startswith("What is 2+3"):
            return Rule(content="\\boxed{5}")
        if text.startswith("What is 2+2"):
            return Rule(content="\\boxed{5}")  # deliberately wrong
        if text == "explode":
            raise KeyError("oops")
        return None

    with ModelServer(rules=[Rule(match="ruled", content="R")], answer_fn=answer) as srv:
        assert chat(srv.base_url, "What is 2+3?")["choices"][0]["message"]["content"] == "\\boxed{5}"
        assert chat(srv.base_url, "What is 2+2?")["choices"][0]["message"]["content"] == "\\boxed{5}"
        assert chat(srv.base_url, "ruled What is 2+3?")["choices"][0]["message"]["content"] == "R"
        assert chat(srv.base_url, "other")["choices"][0]["message"]["content"] == DEFAULT_CONTENT
        status, _, raw = post(srv.base_url, {"model": "m", "messages": user("explode")})
        assert status == 500
        assert "KeyError" in json.loads(raw)["error"]["message"]
        assert [type(e) for e in srv.errors] == [KeyError]


def test_bad_requests_get_400() -> None:
    with ModelServer() as srv:
        not_json = post(srv.base_url, b"{nope")
        no_messages = post(srv.base_url, {"model": "m"})
        assert srv.request_count == 2
    assert not_json[0] == 400 and "error" in json.loads(not_json[2])
    assert no_messages[0] == 400 and "messages" in json.loads(no_messages[2])["error"]["message"]


def test_models_health_and_stats_endpoints() -> None:
    with ModelServer(model_name="tiny") as srv:
        chat(srv.base_url, "hi")
        root = srv.base_url.removesuffix("/v1")
        assert get_json(srv.base_url + "/models")[1]["data"][0]["id"] == "tiny"
        assert get_json(root + "/health") == (200, {"status": "ok"})
        assert get_json(root + "/_stats") == (200, {"requests": 1})


def test_latency_and_delay_add_up() -> None:
    with ModelServer(rules=[Rule(match="slow", delay=0.2)], latency=0.1) as srv:
        t0 = time.monotonic()
        chat(srv.base_url, "fast")
        t1 = time.monotonic()
        chat(srv.base_url, "slow")
        t2 = time.monotonic()
    assert 0.1 <= t1 - t0 < 1.0
    assert 0.3 <= t2 - t1 < 1.5


def test_invalid_rules_are_rejected_up_front() -> None:
    with pytest.raises(ValueError, match="fault"):
        Rule(fault="explode")
    with pytest.raises(ValueError, match="status"):
        Rule(status=302)
    with pytest.raises(ValueError, match="unknown Rule field"):
        Rule.from_dict({"contents": "typo"})


def test_process_mode_ready_line_stats_and_sigterm(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(
        json.dumps(
            {"rules": [{"match": "fail", "status": 503, "times": 1}], "default": {"content": "from file"}}
        )
    )
    proc, base_url = start_server_process(["--port", "0", "--latency", "0.01", "--rules", str(rules_file)])
    try:
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        assert post(base_url, {"model": "m", "messages": user("fail")})[0] == 503
        assert chat(base_url, "fail")["choices"][0]["message"]["content"] == "from file"
        root = base_url.removesuffix("/v1")
        assert get_json(root + "/_stats") == (200, {"requests": 2})
        recorded = get_json(root + "/_requests")[1]["requests"]
        assert [r["body"]["messages"][0]["content"] for r in recorded] == ["fail", "fail"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(10)
        rest = proc.stdout.read() if proc.stdout else b""
        stop_server_process(proc)
    assert code == 0
    assert rest == b""  # the READY line was the only output


def test_process_mode_startup_failure_reports_stderr(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"rules": [{"colour": "red"}]}')
    with pytest.raises(RuntimeError, match="colour"):
        start_server_process(["--rules", str(bad)], timeout=20)


def test_stop_does_not_wait_out_long_delays() -> None:
    srv = ModelServer(default=Rule(delay=30)).start()

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            pending = asyncio.create_task(
                session.post(srv.base_url + "/chat/completions", json={"model": "m", "messages": user("x")})
            )
            await asyncio.sleep(0.2)
            t0 = time.monotonic()
            await asyncio.to_thread(srv.stop)
            assert time.monotonic() - t0 < 0.5
            with pytest.raises(aiohttp.ClientConnectionError):
                await pending

    try:
        asyncio.run(run())
    finally:
        srv.stop()
