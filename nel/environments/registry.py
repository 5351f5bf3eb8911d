"""Benchmark URIs → environments. One registry, one place to add a scheme."""

from __future__ import annotations

from typing import Any

from nel.environments.base import EvalEnvironment
from nel.errors import UnknownBenchmarkError

SCHEMES = ("skills",)


def parse_uri(uri: str) -> tuple[str, str]:
    scheme, sep, name = uri.partition("://")
    if not sep or not name:
        raise UnknownBenchmarkError(f"benchmark {uri!r} is not a URI like skills://gsm8k")
    if scheme not in SCHEMES:
        raise UnknownBenchmarkError(
            f"benchmark {uri!r} has unknown scheme {scheme!r}; known: {', '.join(s + '://' for s in SCHEMES)}"
        )
    return scheme, name


def resolve(uri: str, **options: Any) -> EvalEnvironment:
    """Build the environment for ``uri``; ``options`` go to its constructor."""
    scheme, name = parse_uri(uri)
    if scheme == "skills":
        from nel.environments.skills import SkillsEnvironment

        return SkillsEnvironment(name, **options)
    raise AssertionError(scheme)  # parse_uri rejected it already
