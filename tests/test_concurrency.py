"""Retries in the progress line, local:// concurrency defaults, and ``--concurrency auto``.

Real HTTP to ``nel.testing.model_server``: one server fails the first attempts with 500/429,
another answers 429 above a concurrency cap, which the adaptive limit must find and respect.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from nel import ChatSolver, ModelClient, run_evaluation
from nel.concurrency import AdaptiveLimit, parse_concurrency
from nel.errors import ConfigError
from nel.progress import PlainReporter
from nel.spec import ModelSpec, RunSpec
from nel.testing.model_server import ModelServer, Rule
from tests.toy import ToyEnv


def test_retries_and_failures_show_in_the_progress_line(tmp_path: Path) -> None:
    rules = [Rule(status=500, times=3), Rule(status=429, retry_after="0", times=2)]
    out = io.StringIO()
    with ModelServer(rules=rules) as srv:
        client = ModelClient(srv.base_url, "toy-model", backoff_base=0.01, max_retries=2)
        env = ToyEnv()
        result = asyncio.run(
            run_evaluation(env, ChatSolver(client), output_dir=tmp_path, concurrency=1,
                           progress=PlainReporter(out, interval_s=60))
        )  # fmt: skip
    end = out.getvalue().strip().splitlines()[-1]
    # row 1: 500, 500, 500 -> failed after 2 retries; row 2: 429, 429, 200 -> 2 retries
    assert result.failed == 1
    assert end.startswith(
        "[nel] toy shard 0 of 1 end: 19/20 done (0 from before), 1 failed (server_error 1), 4 retries,"
    ), end
    assert end.endswith("eta 0s"), end


def test_a_local_model_defaults_to_the_server_batch_size() -> None:
    from nel.serving.engine import DEFAULT_MAX_BATCH_SIZE

    local = RunSpec(bench="toy://x", model=ModelSpec(url="local://smollm2", model_id="smollm2"), output_dir="o")
    remote = RunSpec(bench="toy://x", model=ModelSpec(url="http://h/v1", model_id="m"), output_dir="o")
    assert local.concurrency == DEFAULT_MAX_BATCH_SIZE
    assert remote.concurrency == 64
    explicit = RunSpec(bench="toy://x", model=local.model, output_dir="o", concurrency="32")
    assert explicit.concurrency == 32


def test_concurrency_values_parse_or_name_the_problem() -> None:
    assert parse_concurrency(8).max_in_flight == 8 and not parse_concurrency(8).adaptive
    assert parse_concurrency("auto") == parse_concurrency("auto:256")
    assert parse_concurrency("auto:40").max_in_flight == 40 and parse_concurrency("auto:40").adaptive
    for bad in (0, "fast", "auto:0", "auto:x"):
        with pytest.raises(ConfigError, match="concurrency must be"):
            parse_concurrency(bad)


def test_adaptive_limit_climbs_to_the_server_cap_and_backs_off_on_429() -> None:
    cap = 8
    limiter = AdaptiveLimit(64)

    async def scenario(srv: ModelServer) -> None:
        client = ModelClient(srv.base_url, "m", backoff_base=0.01, max_retries=50, concurrency=64,
                             limiter=limiter)  # fmt: skip
        async with client:
            await asyncio.gather(*(client.chat([{"role": "user", "content": "q"}]) for _ in range(800)))

    with ModelServer(latency=0.02, max_concurrency=cap) as srv:
        asyncio.run(scenario(srv))
        rejected = srv.rejected
    limits = [limit for _, limit in limiter.history]
    assert max(limits) >= cap, limits  # it reached the server's limit
    assert rejected > 0  # ... went past it, was told so
    # ... and backed off (on a loaded machine the last climb may end the history, so look for any cut
    # from a level at or above the cap, or any cut at all once a 429 came back)
    cuts = [(a, b) for a, b in zip(limits, limits[1:]) if b < a]
    assert cuts, limits
    assert limiter.limit <= 2 * cap, limits  # it does not run away above the cap
    assert limiter.in_flight == 0


def test_adaptive_limit_never_freezes_under_a_long_retry_after() -> None:
    limiter = AdaptiveLimit(16)
    for _ in range(50):
        limiter.observe("rate_limit", 0.01, retry_after=300.0)
        limiter._last_decrease = 0.0  # every rejection in its own round trip: the worst case
    assert limiter.limit >= 1

    async def one_slot() -> None:
        async with limiter.slot():
            pass

    asyncio.run(asyncio.wait_for(one_slot(), timeout=10))
