"""EvalEnvironment: the contract between a benchmark and the eval loop."""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

from nel.types import SeedResult, VerifyResult


class EvalEnvironment(abc.ABC):
    """A benchmark: a dataset of problems, a prompt for each, and a scorer.

    ``name`` keys the metrics; ``metrics_type`` (NeMo-Skills' METRICS_TYPE) and
    ``score_names`` tell the reducer how to aggregate, and are written into every Parquet
    part so the reducer never has to load the dataset again.
    """

    name: str = "custom"
    solver: str = "chat"
    """The solver its tasks need (``nel.solvers.SOLVERS``): ``chat``, ``scicode`` (multi-step) or ``bfcl`` (tool calls, multi-turn play)."""
    metrics_type: str = "math"
    score_names: tuple[str, ...] = ("correct",)

    @abc.abstractmethod
    def dataset_size(self) -> int:
        """Number of problems; the loop asks once before slicing into shards."""

    @abc.abstractmethod
    async def seed(self, idx: int) -> SeedResult:
        """The prompt and expected answer of problem ``idx`` (0-based)."""

    @abc.abstractmethod
    async def verify(self, response: str, expected: Any, **metadata: Any) -> VerifyResult:
        """Score one response; ``metadata`` is the SeedResult's metadata."""

    async def aclose(self) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Release pools or servers the environment started; called once at the end."""

    def data_files(self) -> tuple[Path, ...]:
        """The files the problems were loaded from: their digest is part of the run's identity,
        so a resume notices when one changed. Called after `dataset_size`."""
        return ()

    def describe(self) -> dict[str, str]:
        return {
            "nel.benchmark": self.name,
            "nel.metrics_type": self.metrics_type,
            "nel.score_names": ",".join(self.score_names),
        }
