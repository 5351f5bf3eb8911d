"""``livecodebench``: LiveCodeBench's grading of stdin/stdout and call-based programs, verdicts in nel."""

from __future__ import annotations

from nel.scoring.livecodebench import LiveCodeBenchRowScorer
from nel.skills.scoring_types.base import ScoringType

LIVECODEBENCH = ScoringType(
    name="livecodebench", score_names=("accuracy",), scorer=LiveCodeBenchRowScorer, sandbox=True
)
