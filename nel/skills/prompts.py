"""NeMo-Skills prompt configs by name, and filling them from a dataset row.

The template strings are kept identical to the NeMo-Skills configs of the same name
(Apache-2.0): a prompt worded differently would score differently, and nel's numbers
must be comparable with ``ns eval``. Only the configs nel's catalog uses are here.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

from nel.errors import ConfigError, DataError


@dataclass(frozen=True)
class PromptConfig:
    """A user template with ``{field}`` placeholders and an optional system message."""

    user: str
    system: str | None = None


PROMPT_CONFIGS: dict[str, PromptConfig] = {
    "generic/math": PromptConfig(
        user="Solve the following math problem. Make sure to put the answer (and only answer) "
        "inside \\boxed{{}}.\n\n{examples}{problem}"
    ),
    "generic/default": PromptConfig(user="{problem}"),
}


def get_prompt_config(name: str) -> PromptConfig:
    try:
        return PROMPT_CONFIGS[name]
    except KeyError:
        raise ConfigError(
            f"unknown prompt config {name!r}; known: {', '.join(sorted(PROMPT_CONFIGS))}"
        ) from None


def template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def render(template: str, row: dict[str, Any], *, where: str) -> str:
    """Fill ``template`` from ``row``; a missing field names the field and the row."""
    values = {"examples": "", **row}
    missing = sorted(template_fields(template) - set(values))
    if missing:
        raise DataError(
            f"prompt template needs field(s) {', '.join(missing)} that {where} lacks "
            f"(it has: {', '.join(sorted(row))})"
        )
    try:
        return template.format(**values)
    except (IndexError, ValueError, KeyError) as exc:
        raise ConfigError(f"prompt template cannot be filled for {where}: {exc}") from exc
