"""The registry of scoring types: METRICS_TYPE -> :class:`~.base.ScoringType`.

This is the one table keyed by METRICS_TYPE. Adding a scoring type is a new module in this
package that defines its ``ScoringType``, plus its line in ``_TYPES`` below; the catalog,
both skills backends and the reducer read everything else from the object.
"""

from __future__ import annotations

from nel.errors import ConfigError, suggest
from nel.metrics import MetricsHook
from nel.skills.scoring_types.aalcr import AALCR
from nel.skills.scoring_types.alpaca_eval import ALPACA_EVAL
from nel.skills.scoring_types.arena import ARENA
from nel.skills.scoring_types.base import (
    Package,
    RowScorer,
    ScoringOptions,
    ScoringType,
)
from nel.skills.scoring_types.bfcl import BFCL
from nel.skills.scoring_types.evalplus import EVALPLUS
from nel.skills.scoring_types.exact_match import EXACT_MATCH
from nel.skills.scoring_types.hle import HLE
from nel.skills.scoring_types.instruction_following import INSTRUCTION_FOLLOWING
from nel.skills.scoring_types.livecodebench import LIVECODEBENCH
from nel.skills.scoring_types.math import MATH
from nel.skills.scoring_types.multichoice import MULTICHOICE
from nel.skills.scoring_types.ruler import RULER
from nel.skills.scoring_types.scicode import SCICODE
from nel.skills.scoring_types.simpleqa import SIMPLEQA

__all__ = [
    "SCORING_TYPES",
    "Package",
    "RowScorer",
    "ScoringOptions",
    "ScoringType",
    "extra_metrics",
    "find_scoring_type",
    "scoring_type",
]

_TYPES: tuple[ScoringType, ...] = (MATH, MULTICHOICE, EXACT_MATCH, SIMPLEQA, HLE, EVALPLUS, INSTRUCTION_FOLLOWING, LIVECODEBENCH)
_TYPES += (RULER, AALCR, SCICODE, ARENA, BFCL, ALPACA_EVAL)

SCORING_TYPES: dict[str, ScoringType] = {t.name: t for t in _TYPES}


def find_scoring_type(metrics_type: str | None) -> ScoringType | None:
    """The scoring type of ``metrics_type``, or None when nel has none (a custom environment's)."""
    return SCORING_TYPES.get(metrics_type or "")


def scoring_type(metrics_type: str) -> ScoringType:
    found = find_scoring_type(metrics_type)
    if found is None:
        raise ConfigError(
            f"nel has no scoring type for METRICS_TYPE {metrics_type!r}{suggest(metrics_type, SCORING_TYPES)}"
        )
    return found


def extra_metrics(metrics_type: str | None) -> MetricsHook | None:
    """What ``metrics_type`` adds to the generic metrics (None: nothing, or a type nel does not know)."""
    found = find_scoring_type(metrics_type)
    return found.extra_metrics if found is not None else None
