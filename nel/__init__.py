"""nel: evaluate language models on benchmarks at cluster scale, keeping every request."""

from nel.client import ModelClient
from nel.environments.base import EvalEnvironment
from nel.errors import (
    ConfigError,
    DataError,
    IncompleteRunError,
    ModelCallError,
    NelError,
    RunConflictError,
    ScoringError,
    StoreError,
    UnknownBenchmarkError,
)
from nel.loop import EvalResult, run_evaluation
from nel.reduce import ReduceResult, reduce_run
from nel.sharding import Shard
from nel.solvers import ChatSolver, Solver
from nel.spec import ModelSpec, RunSpec
from nel.types import Completion, SeedResult, SolveResult, Task, VerifyResult
from nel.version import __version__

__all__ = [
    "ChatSolver",
    "Completion",
    "ConfigError",
    "DataError",
    "EvalEnvironment",
    "EvalResult",
    "IncompleteRunError",
    "ModelCallError",
    "ModelClient",
    "ModelSpec",
    "NelError",
    "ReduceResult",
    "RunConflictError",
    "RunSpec",
    "ScoringError",
    "SeedResult",
    "Shard",
    "SolveResult",
    "Solver",
    "StoreError",
    "Task",
    "UnknownBenchmarkError",
    "VerifyResult",
    "__version__",
    "reduce_run",
    "run_evaluation",
]
