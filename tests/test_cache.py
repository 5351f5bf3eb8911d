"""The response cache and per-sample seeds, through `nel eval run` on real HTTP and real files."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pandas as pd
import pytest

from nel.cache import ResponseCache
from nel.cli import main
from nel.client import ModelClient, sample_seed
from nel.errors import ModelCallError
from nel.testing.model_server import ModelServer, Rule
from tests.test_cli import gsm8k_answerer, run_args

SECRET = "sk-cache-test-key-never-stored-0123456789"
SAME = ["problem_idx", "repeat", "response", "extracted_answer", "reward", "finish_reason", "completion_tokens"]


def rows(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / "trajectories.parquet").sort_values(["problem_idx", "repeat"]).reset_index(drop=True)


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("v1/*/*.json"))


def test_sample_seed_is_the_documented_formula() -> None:
    def documented(s: int, p: int, r: int) -> int:  # docs/cli.md, written out again
        base = int.from_bytes(hashlib.sha256(f"nel-seed:{s}:{p}".encode()).digest()[:8], "big")
        return (base + r) % 2**31

    seeds = [[sample_seed(7, p, r) for r in range(64)] for p in range(50)]
    assert all(len(set(row)) == 64 for row in seeds)  # repeats of a problem never collide
    assert seeds[3][5] == documented(7, 3, 5) and sample_seed(8, 3, 5) != seeds[3][5]
    assert all(0 <= s < 2**31 for row in seeds for s in row)


def test_seeded_run_then_cached_rerun_sends_nothing(gsm8k_data_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    cache = tmp_path / "cache"
    flags = ("--max-problems", "6", "--repeats", "3", "--temperature", "0.7", "--seed", "7",
             "--cache-dir", str(cache), "--api-key", SECRET)  # fmt: skip
    with ModelServer(answer_fn=gsm8k_answerer(gsm8k_data_dir)) as srv:
        assert main(run_args(srv, gsm8k_data_dir, tmp_path / "a", *flags)) == 0
        sent = sorted(r.body["seed"] for r in srv.requests)
        assert sent == sorted(sample_seed(7, p, r) for p in range(6) for r in range(3))
        assert len(entries(cache)) == 18
        assert srv.request_count == 18

        assert main(run_args(srv, gsm8k_data_dir, tmp_path / "b", *flags)) == 0
        assert srv.request_count == 18  # the second run sent nothing
        first, second = rows(tmp_path / "a"), rows(tmp_path / "b")
        pd.testing.assert_frame_equal(first[SAME], second[SAME])
        assert (first["cached_calls"] == 0).all() and (second["cached_calls"] == 1).all()
        assert (second["attempts"] == 0).all()
        runtime = orjson.loads((tmp_path / "b" / "runtime.json").read_bytes())
        assert runtime["cached_calls"] == 18 and runtime["retries"] == 0

        # Damaged entries are misses, fetched again and replaced, with one warning for all of them.
        for path in entries(cache)[:3]:
            path.write_bytes(path.read_bytes()[:40])
        capsys.readouterr()
        assert main(run_args(srv, gsm8k_data_dir, tmp_path / "c", *flags)) == 0
        assert srv.request_count == 21
        assert capsys.readouterr().err.count("is unusable") == 1
        pd.testing.assert_frame_equal(first[SAME], rows(tmp_path / "c")[SAME])
    for path in cache.rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes()
    assert all(orjson.loads(p.read_bytes())["format"] == 1 for p in entries(cache))


def test_failed_calls_are_not_cached_and_an_unwritable_cache_only_warns(tmp_path: Path) -> None:
    warnings: list[str] = []
    cache = ResponseCache(tmp_path / "cache", warn=warnings.append)
    messages = [{"role": "user", "content": "capital of France?"}]

    async def calls(client: ModelClient) -> list[bool]:
        for _ in range(2):  # a 400 each time: the failure was not cached
            with pytest.raises(ModelCallError):
                await client.chat([{"role": "user", "content": "capital of Spain?"}], sample=(0, 0))
        got = [(await client.chat(messages, sample=(0, 0))).cached for _ in range(2)]
        got.append((await client.chat(messages, sample=(0, 1))).cached)  # another repeat: its own entry
        await client.aclose()
        return got

    with ModelServer(rules=[Rule(match="Spain", status=400), Rule(match="France", content="Paris")]) as srv:
        client = ModelClient(srv.base_url, "m", "", max_retries=0, cache=cache)
        assert asyncio.run(calls(client)) == [False, True, False]
        assert srv.request_count == 4 and cache.stores == 2

        # Every fan-out directory taken by a file: no write can succeed (as on a full disk).
        full = ResponseCache(tmp_path / "full", warn=warnings.append)
        for i in range(256):
            (tmp_path / "full" / "v1" / f"{i:02x}").write_text("")
        client = ModelClient(srv.base_url, "m", "", cache=full)
        assert asyncio.run(calls(client)) == [False, False, False]
        assert srv.request_count == 9
    assert not full.writable and sum("cannot write" in w for w in warnings) == 1


def test_two_processes_writing_one_cache_at_once_leave_only_whole_entries(gsm8k_data_dir: Path,
                                                                         tmp_path: Path) -> None:  # fmt: skip
    """The hardest sharing case: two runs sending the same requests at the same time, so both
    write every entry; each entry must be whole, and a third run is answered entirely from them."""
    cache = tmp_path / "cache"
    flags = ("--max-problems", "40", "--repeats", "2", "--concurrency", "8", "--cache-dir", str(cache))
    env = {**os.environ, "NEL_SHARD_IDX": "0", "NEL_TOTAL_SHARDS": "1"}
    with ModelServer(answer_fn=gsm8k_answerer(gsm8k_data_dir), latency=0.05) as srv:
        procs = [
            subprocess.Popen([sys.executable, "-m", "nel", *run_args(srv, gsm8k_data_dir, tmp_path / name, *flags)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
            for name in ("a", "b")
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            assert "unusable" not in err
        stored = entries(cache)
        assert len(stored) == 80 and not list(cache.rglob("*.tmp"))
        for path in stored:
            entry = orjson.loads(path.read_bytes())
            assert entry["key"] == path.stem and orjson.loads(entry["reply"])["choices"]
        sent = srv.request_count
        assert main(run_args(srv, gsm8k_data_dir, tmp_path / "c", *flags)) == 0
        assert srv.request_count == sent
    a, b = rows(tmp_path / "a"), rows(tmp_path / "b")
    assert max(a.started_at.min(), b.started_at.min()) < min(a.finished_at.max(), b.finished_at.max())  # at once
    pd.testing.assert_frame_equal(a[SAME], rows(tmp_path / "c")[SAME])


def test_a_cache_dir_that_is_a_file_is_one_line_before_any_work(gsm8k_data_dir: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    taken = tmp_path / "cache"
    taken.write_text("")
    with ModelServer() as srv:
        assert main(run_args(srv, gsm8k_data_dir, tmp_path / "run", "--cache-dir", str(taken))) == 2
        assert srv.request_count == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--cache-dir {taken} is a file" in err
    assert not (tmp_path / "run" / "run.json").exists()


def test_a_call_without_its_sample_is_never_cached(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache")

    async def twice(client: ModelClient) -> list[bool]:
        got = [(await client.chat([{"role": "user", "content": "hi"}])).cached for _ in range(2)]
        await client.aclose()
        return got

    with ModelServer() as srv:
        assert asyncio.run(twice(ModelClient(srv.base_url, "m", "", cache=cache))) == [False, False]
        assert srv.request_count == 2 and not entries(tmp_path / "cache")
