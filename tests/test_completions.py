"""Text completions (``/v1/completions``) against the real test server, and the solver's two ways
of sending a prompt that ends with an answer prefix."""

from __future__ import annotations

import asyncio

import pytest

from nel.client import ModelClient
from nel.errors import ConfigError, ModelCallError
from nel.reasoning import ReasoningTags
from nel.solvers import ChatSolver, make_solver
from nel.testing.model_server import ModelServer, Rule
from nel.types import SeedResult, Task

PROMPT = "Question: what is 2+2? Answer:"


def complete(url: str, prompt: str = PROMPT, **kwargs: object):
    async def go():
        async with ModelClient(url, "m", "", backoff_base=0.01, **kwargs) as client:  # type: ignore[arg-type]
            return await client.complete(prompt)

    return asyncio.run(go())


def test_completion_text_usage_and_body() -> None:
    with ModelServer(rules=[Rule(match="2+2", content="four, of course")]) as srv:
        done = complete(srv.base_url, sampling={"max_tokens": 7, "temperature": 0.0})
        (request,) = srv.requests
    assert done.content == "four, of course"
    assert (done.prompt_tokens, done.completion_tokens, done.finish_reason) == (5, 3, "stop")  # words, as the server counts
    assert done.attempts == 1 and done.latency_s >= done.attempt_latencies_s[0] > 0
    assert request.path == "/v1/completions"
    assert request.body == {"model": "m", "prompt": PROMPT, "max_tokens": 7, "temperature": 0.0}


def test_completion_is_cut_at_max_tokens() -> None:
    with ModelServer(default=Rule(content="one two three four")) as srv:
        done = complete(srv.base_url, sampling={"max_tokens": 2})
    assert (done.content, done.finish_reason, done.completion_tokens) == ("one two", "length", 2)


def test_completion_retries_server_errors_and_rate_limits() -> None:
    rules = [Rule(status=500, times=1), Rule(status=429, retry_after="0", times=1)]
    with ModelServer(rules=rules, default=Rule(content="ok")) as srv:
        done = complete(srv.base_url)
        assert srv.request_count == 3
    assert done.content == "ok" and done.attempts == 3 and len(done.attempt_latencies_s) == 3


@pytest.mark.parametrize(
    ("rule", "kind"),
    [
        (Rule(status=400, message="This model's maximum context length is 4096 tokens"), "context_length"),
        (Rule(status=404), "client_error"),
        (Rule(content=None), "bad_response"),  # "text": null
    ],
)
def test_completion_failures_have_their_kind(rule: Rule, kind: str) -> None:
    with ModelServer(default=rule) as srv, pytest.raises(ModelCallError) as info:
        complete(srv.base_url, max_retries=1)
    assert info.value.kind == kind
    assert "/v1/completions" in str(info.value)
    assert info.value.messages == ({"role": "user", "content": PROMPT},)


def _solve(url: str, mode: str, messages: tuple[dict, ...]):
    async def go():
        async with ModelClient(url, "m", "") as client:
            return await ChatSolver(client, answer_prefix=mode).solve(
                Task(0, 0, SeedResult(expected_answer=None, messages=messages))
            )

    return asyncio.run(go())


def test_answer_prefix_text_and_chat_modes() -> None:
    conversation = ({"role": "user", "content": "Find the number."}, {"role": "assistant", "content": "It is"})
    with ModelServer(default=Rule(content="42")) as srv:
        text = _solve(srv.base_url, "text", conversation)
        chat = _solve(srv.base_url, "chat", conversation)
        plain = _solve(srv.base_url, "text", conversation[:1])
        sent = srv.requests
    assert text.response == chat.response == plain.response == "42"
    assert sent[0].path == "/v1/completions" and sent[0].body["prompt"] == "Find the number. It is"
    assert text.messages == ({"role": "user", "content": "Find the number. It is"},)
    assert sent[1].path == "/v1/chat/completions"
    assert sent[1].body["messages"] == list(conversation)
    assert sent[1].body["continue_final_message"] is True and sent[1].body["add_generation_prompt"] is False
    assert sent[2].path == "/v1/chat/completions" and "continue_final_message" not in sent[2].body


@pytest.mark.parametrize(("kind", "why"), [("scicode", "SciCode's prompts"), ("bfcl", "BFCL's conversations")])
def test_solvers_whose_conversations_end_with_the_user_refuse_an_answer_prefix(kind: str, why: str) -> None:
    client = ModelClient("http://127.0.0.1:9/v1", "m")
    with pytest.raises(ConfigError, match=f"{why} end with no answer prefix: --answer-prefix does not apply"):
        make_solver(kind, client, answer_prefix="chat")
    with pytest.raises(ValueError, match="answer_prefix must be one of"):
        make_solver("chat", client, answer_prefix="json")


@pytest.mark.parametrize("kind", ["chat", "scicode", "bfcl"])
def test_every_solver_names_non_default_reasoning_tags_in_its_identity(kind: str) -> None:
    client = ModelClient("http://127.0.0.1:9/v1", "m")
    default = make_solver(kind, client).describe()  # type: ignore[attr-defined]
    other = make_solver(kind, client, reasoning_tags=ReasoningTags("<r>", "</r>")).describe()  # type: ignore[attr-defined]
    assert "reasoning_tags" not in default and other["reasoning_tags"] == ["<r>", "</r>"]
    assert default["type"] == kind and other == {**default, "reasoning_tags": ["<r>", "</r>"]}
