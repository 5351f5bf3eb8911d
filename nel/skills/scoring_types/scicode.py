"""``scicode``: every asked sub-step's tests against SciCode's ``test_data.h5``, targets and verdicts in nel."""

from __future__ import annotations

import os

from nel.errors import ConfigError
from nel.execution.sandbox import LocalSandbox
from nel.scoring.scicode import SciCodeGrader, scicode_metrics, test_data_missing
from nel.skills.scoring_types.base import Package, Row, ScoringOptions, ScoringType
from nel.types import VerifyResult


class SciCodeRowScorer:
    def __init__(self, options: ScoringOptions) -> None:
        self.options = options
        executor = options.executor
        if executor is not None and not isinstance(executor, LocalSandbox):
            raise ConfigError(f"skills://{options.benchmark} needs the local sandbox (its tests talk to the program)")
        self.sandbox = executor or LocalSandbox(os.cpu_count() or 1)
        self.grader = SciCodeGrader(self.sandbox)

    async def score(self, response: str, row: Row, *, where: str) -> VerifyResult:
        return await self.grader.score(row, response)

    async def aclose(self) -> None:
        pass


SCICODE = ScoringType(
    name="scicode", score_names=("problem_accuracy", "subtask_accuracy", "num_subtasks"), scorer=SciCodeRowScorer,
    extra_metrics=scicode_metrics, sandbox=True, available=test_data_missing,
    packages=(Package("scicode", "nvidia-scicode (SciCode's HDF5 reader and comparisons)"),
              Package("h5py", "h5py (SciCode's test data)"), Package("scipy", "scipy (SciCode's comparisons)")),
)  # fmt: skip
