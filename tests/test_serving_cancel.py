"""``nel serve`` forgets requests whose client is gone, and stops promptly with a backlog.

Against a real server subprocess serving a tiny random Llama (tests/tiny_model.py): its
generations never stop early, so each one runs for thousands of decode steps, and a request
that was dropped can be told from one that finished (``served.requests`` counts finished ones).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from nel.serving import LocalServer, start_local_server
from tests.tiny_model import CONTEXT, write_tiny_model

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "transformers", "safetensors")),
    reason="needs torch, transformers and safetensors (pip install torch==2.13.0 && pip install 'nel[local]')",
)

BATCH = 2
LONG = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": CONTEXT - 100}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    folder = write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")
    with start_local_server(f"local://{folder}", max_batch_size=BATCH, startup_timeout=300) as srv:
        yield srv


def _health(server: LocalServer) -> dict[str, Any]:
    with urllib.request.urlopen(server.base_url[: -len("/v1")] + "/health", timeout=30) as resp:
        return json.loads(resp.read())


async def _until(server: LocalServer, ready: Any, what: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        health = await asyncio.to_thread(_health, server)
        if ready(health):
            return health
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout:g}s; last /health: {health}")
        await asyncio.sleep(0.05)


def test_a_disconnected_client_frees_its_slot_and_its_place_in_the_queue(server: LocalServer):
    import aiohttp

    n = 6
    before = _health(server)["served"]

    async def scenario() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:

            async def one() -> None:
                async with session.post(f"{server.base_url}/chat/completions", json=LONG) as resp:
                    await resp.read()

            clients = [asyncio.create_task(one()) for _ in range(n)]
            await _until(
                server, lambda h: h["running"] == BATCH and h["waiting"] == n - BATCH, "a full batch and a queue"
            )
            for task in clients:  # the clients give up, as a Ctrl-C'd or timed-out eval does
                task.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
        return await _until(server, lambda h: h["running"] == 0 and h["waiting"] == 0, "an empty server")

    after = asyncio.run(scenario())["served"]
    assert after["cancelled"] - before["cancelled"] == n
    assert after["requests"] == before["requests"], "a dropped request was generated to the end"


def test_sigint_with_a_backlog_answers_it_with_503_and_exits_promptly(server: LocalServer):
    """Last in this module: it stops the shared server."""
    import aiohttp

    n = 10

    async def scenario() -> tuple[list[int], float]:
        async with aiohttp.ClientSession() as session:

            async def one() -> int:
                async with session.post(f"{server.base_url}/chat/completions", json=LONG) as resp:
                    await resp.read()
                    return resp.status

            clients = [asyncio.create_task(one()) for _ in range(n)]
            await _until(server, lambda h: h["running"] == BATCH and h["waiting"] == n - BATCH, "a backlog")
            started = time.monotonic()
            os.kill(server.pid, signal.SIGINT)
            statuses = await asyncio.wait_for(asyncio.gather(*clients), timeout=60)
            while server.alive():
                await asyncio.sleep(0.05)
            return statuses, time.monotonic() - started

    statuses, seconds = asyncio.run(scenario())
    assert statuses == [503] * n
    # Before the fix aiohttp waited out its 60 s shutdown timeout for the running handlers.
    assert seconds < 20, f"the server took {seconds:.1f}s to stop"
    assert "shutting down (2 running, 8 waiting)" in server.stderr_tail()

