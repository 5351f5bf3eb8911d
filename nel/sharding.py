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
    """NEL_SHARD_IDX/NEL_TOTAL_SHARDS, else SLURM's array variables, else one shard.

    SLURM's variables are trusted only for a whole array ``0..N-1``: in a partial
    resubmission (``--array=3,7``) SLURM_ARRAY_TASK_COUNT is 2, not the shard count, so
    there NEL_TOTAL_SHARDS must say it (the task id is still taken as the shard index).
    """
    env = os.environ if env is None else env
    idx_raw = env.get("NEL_SHARD_IDX")
    total_raw = env.get("NEL_TOTAL_SHARDS")
    if idx_raw is None and total_raw is None and "SLURM_ARRAY_TASK_ID" not in env:
        return Shard()
    if idx_raw is None:
        idx_raw = env.get("SLURM_ARRAY_TASK_ID")
    if total_raw is None and "SLURM_ARRAY_TASK_ID" in env:
        count, low, high = (env.get(f"SLURM_ARRAY_TASK_{k}") for k in ("COUNT", "MIN", "MAX"))
        if count is not None and low in (None, "0") and (high is None or _int(high) == _int(count) - 1):
            total_raw = count
        else:
            raise ConfigError(
                f"SLURM array {low}..{high} with {count} tasks is not a whole array 0..N-1; "
                "set NEL_TOTAL_SHARDS to the run's shard count"
            )
    if idx_raw is None or total_raw is None:
        missing = "NEL_SHARD_IDX" if idx_raw is None else "NEL_TOTAL_SHARDS"
        raise ConfigError(f"{missing} is not set but its partner is; set both or neither")
    return Shard(_int(idx_raw), _int(total_raw))


def _int(raw: str | None) -> int:
    try:
        return int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"shard variable {raw!r} is not an integer") from None
