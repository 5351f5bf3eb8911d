"""A mapping's keys checked against a data class, for every config nel reads.

Its own module so that the spec modules (nel.spec, nel.deployment, the launcher's settings)
can all use it without importing one another.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nel.errors import ConfigError


def reject_unknown_keys(cls: type, data: dict[str, Any], where: str) -> None:
    """Refuse keys ``cls`` does not have, listing every valid one (a typo should say what was meant)."""
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise ConfigError(
            f"unknown {where} key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(valid))}"
        )
