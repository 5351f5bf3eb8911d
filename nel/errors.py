"""Every exception nel raises on purpose, in one place.

    NelError
    ├── ConfigError            a flag, config file or spec value is wrong
    │   ├── UnknownBenchmarkError
    │   └── RunConflictError   the output dir holds a run with a different config
    ├── DataError              a dataset file or row is missing or malformed
    ├── StoreError             a Parquet part or run file cannot be read
    ├── IncompleteRunError     the reducer found missing or failed rows
    ├── ModelCallError         a model request failed after its retries (carries error_kind)
    └── ScoringError           a scorer could not score a response

Messages name the file, row, shard or URL at fault, so one line is enough to act on.
"""

from __future__ import annotations


class NelError(Exception):
    """Base class: catch this to handle every error nel raises on purpose."""


class ConfigError(NelError):
    pass


class UnknownBenchmarkError(ConfigError):
    pass


class RunConflictError(ConfigError):
    pass


class DataError(NelError):
    pass


class StoreError(NelError):
    pass


class IncompleteRunError(NelError):
    pass


class ScoringError(NelError):
    pass


class ModelCallError(NelError):
    """A chat request that failed for good.

    ``kind`` is one of the trajectory's error kinds (timeout, rate_limit, server_error,
    connection, bad_response, context_length, client_error); ``attempts`` and the latencies
    let the row record what the failure cost.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        attempts: int = 1,
        latency_s: float = 0.0,
        attempt_latencies_s: tuple[float, ...] = (),
        status: int | None = None,
        messages: tuple[dict, ...] | None = None,
    ) -> None:
        super().__init__(message)
        self.messages = messages
        self.kind = kind
        self.attempts = attempts
        self.latency_s = latency_s
        self.attempt_latencies_s = attempt_latencies_s
        self.status = status
