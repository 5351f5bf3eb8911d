"""Benchmarks as environments: seed a problem, verify a response."""

from nel.environments.base import EvalEnvironment

__all__ = ["EvalEnvironment"]
