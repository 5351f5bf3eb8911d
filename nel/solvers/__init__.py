"""Solvers turn a seeded task into a response by calling the model.

The solver, not the loop, owns the model call, so multi-turn or tool-using solvers fit
the same loop; every call goes through `ModelClient` and is returned in
``SolveResult.calls`` so the trajectory records all of them. ``SOLVERS`` names every solver an
environment may ask for; :class:`~nel.solvers.base.ModelSolver` is what they share.
"""

from __future__ import annotations

import importlib

from nel.client import ModelClient
from nel.errors import ConfigError
from nel.solvers.base import ANSWER_PREFIX_MODES, ModelSolver, Solver
from nel.solvers.chat import ChatSolver

__all__ = ["ANSWER_PREFIX_MODES", "SOLVERS", "ChatSolver", "ModelSolver", "Solver", "make_solver"]


# What an environment may ask for (``EvalEnvironment.solver``): a name -> "module:Class", loaded on use.
SOLVERS = {
    "chat": "nel.solvers.chat:ChatSolver",
    "scicode": "nel.skills.scicode_solver:SciCodeSolver",
    "bfcl": "nel.skills.bfcl_solver:BfclSolver",
}


def make_solver(kind: str, client: ModelClient, **options: object) -> Solver:
    """The solver an environment names (``chat`` for one completion per task), built with ``options``."""
    if kind not in SOLVERS:
        raise ConfigError(f"unknown solver {kind!r}; known: {', '.join(SOLVERS)}")
    module, _, name = SOLVERS[kind].partition(":")
    solver: Solver = getattr(importlib.import_module(module), name)(client, **options)
    return solver
