"""Which problems a shard owns: a contiguous, near-equal block of problem indices.

Contiguous blocks keep every repeat of a problem in one shard (so majority@k never needs
two shards) and make a shard's slice obvious from its index alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from nel.errors import ConfigError


@dataclass(frozen=True)
class Shard:
    idx: int = 0
    total: int = 1

    def __post_init__(self) -> None:
        if self.total < 1 or not 0 <= self.idx < self.total:
            raise ConfigError(f"shard index {self.idx} is not in [0, {self.total})")

    def problem_range(self, num_problems: int) -> range:
        """Problems [start, stop) of this shard; the first ``num_problems % total`` get one extra."""
        base, extra = divmod(num_problems, self.total)
        start = self.idx * base + min(self.idx, extra)
        return range(start, start + base + (1 if self.idx < extra else 0))


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard:
    """NEL_SHARD_IDX/NEL_TOTAL_SHARDS, else SLURM's array variables, else one shard."""
    env = os.environ if env is None else env
    for idx_var, total_var in (
        ("NEL_SHARD_IDX", "NEL_TOTAL_SHARDS"),
        ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"),
    ):
        idx_raw, total_raw = env.get(idx_var), env.get(total_var)
        if idx_raw is None and total_raw is None:
            continue
        if idx_raw is None or total_raw is None:
            missing = idx_var if idx_raw is None else total_var
            raise ConfigError(f"{missing} is not set but its partner is; set both or neither")
        try:
            idx, total = int(idx_raw), int(total_raw)
        except ValueError:
            raise ConfigError(f"{idx_var}={idx_raw!r} / {total_var}={total_raw!r} must be integers") from None
        if idx_var == "SLURM_ARRAY_TASK_ID":
            idx -= int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        return Shard(idx, total)
    return Shard()
