"""Which slice a shard owns, and where it learns its index."""

from __future__ import annotations

import pytest

from nel.errors import ConfigError
from nel.sharding import Shard, shard_from_env


@pytest.mark.parametrize("problems", [0, 1, 7, 10, 1319])
@pytest.mark.parametrize("total", [1, 3, 8])
def test_blocks_are_contiguous_near_equal_and_cover_everything(problems: int, total: int) -> None:
    ranges = [Shard(i, total).problem_range(problems) for i in range(total)]
    assert [p for r in ranges for p in r] == list(range(problems))
    sizes = [len(r) for r in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_env_variables() -> None:
    assert shard_from_env({}) == Shard(0, 1)
    assert shard_from_env({"NEL_SHARD_IDX": "2", "NEL_TOTAL_SHARDS": "4"}) == Shard(2, 4)
    whole = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "0",
             "SLURM_ARRAY_TASK_MAX": "7"}  # fmt: skip
    assert shard_from_env(whole) == Shard(5, 8)
    partial = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "3",
               "SLURM_ARRAY_TASK_MAX": "7"}  # fmt: skip
    with pytest.raises(ConfigError, match="set NEL_TOTAL_SHARDS"):
        shard_from_env(partial)
    assert shard_from_env({**partial, "NEL_TOTAL_SHARDS": "8"}) == Shard(7, 8)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NEL_SHARD_IDX": "1"}, "NEL_TOTAL_SHARDS is not set"),
        ({"NEL_SHARD_IDX": "x", "NEL_TOTAL_SHARDS": "2"}, "not an integer"),
        ({"NEL_SHARD_IDX": "2", "NEL_TOTAL_SHARDS": "2"}, r"shard index 2 is not in \[0, 2\)"),
    ],
)
def test_bad_env_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        shard_from_env(env)
