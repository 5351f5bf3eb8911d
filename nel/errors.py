"""Every exception nel raises on purpose, and the exit code each one ends a command with.

    NelError
    ├── ConfigError                a flag, config file or spec value is wrong            exit 2
    │   ├── UnknownBenchmarkError
    │   ├── RunConflictError       the output dir holds a run with a different config
    │   ├── NotARunError           a path given as a run dir holds no run.json
    │   └── MissingDependencyError a package a feature needs is not installed
    ├── DataError                  a dataset file or row is missing or malformed        exit 3
    ├── StoreError                 a Parquet part or run file cannot be read            exit 3
    ├── EnvironmentFault           disk full, read-only or unwritable output            exit 4
    ├── IncompleteRunError         the reducer found missing or failed rows             exit 1
    ├── ModelCallError             a model request failed after its retries (error_kind)
    │   └── EndpointUnreachableError  the first attempts could not connect at all        exit 1
    ├── ScoringError               a scorer could not score a response
    │   ├── ScoringTimeoutError    a scoring call ran past its timeout
    │   └── ScoringTaskError       a scoring call raised, or its worker died
    ├── LaunchError                a job backend (sbatch/squeue/sacct) failed           exit 1
    │   └── SlurmError
    └── ServerError                a model server nel started did not come up or died   exit 1
        ├── DeploymentError        a ``model.deployment`` server
        ├── LocalServerError       the ``local://`` model server subprocess
        └── LocalModelError        a local model could not be found, converted or loaded

Messages name the file, row, shard or URL at fault, so one line is enough to act on.
:class:`ExitCode` is the one table of what a command's exit status means (docs/cli.md prints it).
"""

from __future__ import annotations

import difflib
import enum
import errno
from collections.abc import Iterable


class ExitCode(enum.IntEnum):
    """What every nel command's exit status means; no code has two meanings.

    Only ``INCOMPLETE`` says "rerun the same command": a sweep or cron job may retry it.
    The others name conditions a rerun alone cannot fix.
    """

    OK = 0
    INCOMPLETE = 1  # rows failed or are missing, or a shard/job failed: rerun to retry them
    USAGE = 2  # bad flag, config or spec value; a different run in the same output dir
    DATA = 3  # dataset or store file missing or malformed
    ENVIRONMENT = 4  # the machine: disk full, read-only or unwritable output location
    IN_PROGRESS = 5  # jobs of the run are still queued or running: ask again later
    INTERRUPTED = 130  # Ctrl-C (SIGTERM gives 143: 128 + the signal number)


class NelError(Exception):
    """Base class: catch this to handle every error nel raises on purpose."""

    exit_code: ExitCode = ExitCode.INCOMPLETE


class ConfigError(NelError):
    exit_code = ExitCode.USAGE


class UnknownBenchmarkError(ConfigError):
    pass


class RunConflictError(ConfigError):
    pass


class NotARunError(ConfigError):
    """A path given as a run directory holds no run.json: a wrong argument, not bad data."""


class MissingDependencyError(ConfigError):
    """A package a feature needs (torch, transformers, an extra) is not installed."""


class DataError(NelError):
    exit_code = ExitCode.DATA


class StoreError(NelError):
    exit_code = ExitCode.DATA


class EnvironmentFault(NelError):
    """The machine refuses: disk full, read-only file system, no permission to write."""

    exit_code = ExitCode.ENVIRONMENT

    @classmethod
    def from_os_error(cls, exc: OSError) -> EnvironmentFault:
        """The one mapping of an OSError that reached a command's boundary: one line naming the path.

        Every OSError the code did not name itself is the machine's (a full disk, a read-only mount,
        a permission, too many open files): a rerun alone does not fix it, so never exit 1.
        """
        path = exc.filename if exc.filename is not None else "(no path)"
        what = exc.strerror or type(exc).__name__
        hint = _OS_ERROR_HINTS.get(exc.errno or 0, "")
        return cls(f"{path}: {what}{hint}")


# What to do about an OSError, in the user's terms.
_OS_ERROR_HINTS = {
    errno.ENOSPC: "; free space on that file system, then rerun the same command to resume",
    errno.EDQUOT: "; the disk quota is used up: free some, then rerun the same command to resume",
    errno.EROFS: "; the file system is read-only: choose a writable --output-dir / --data-dir",
    errno.EACCES: "; no permission: choose another --output-dir / --data-dir, or fix its permissions",
    errno.EPERM: "; not permitted: choose another --output-dir / --data-dir",
}


class IncompleteRunError(NelError):
    exit_code = ExitCode.INCOMPLETE


class ScoringError(NelError):
    pass


class ScoringTimeoutError(ScoringError):
    """A scoring call ran past its timeout.

    ``hard`` is True when the worker had to be killed (it ignored the in-process timer).
    """

    def __init__(self, message: str, *, timeout: float | None = None, hard: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.hard = hard


class ScoringTaskError(ScoringError):
    """A scoring call raised, or its worker process died while running it.

    ``exc_type`` names the original exception class ("WorkerDied" for a dead worker) and
    ``remote_traceback`` holds the worker's formatted traceback.
    """

    def __init__(self, message: str, *, exc_type: str = "", remote_traceback: str = "") -> None:
        super().__init__(message)
        self.exc_type = exc_type
        self.remote_traceback = remote_traceback


class LaunchError(NelError):
    """A job backend failed; the message carries the command and its stderr."""


class SlurmError(LaunchError):
    """sbatch/squeue/sacct failed or is missing; the message carries the command and its stderr."""


class ServerError(NelError):
    """A model server nel started did not become healthy, or died."""


class DeploymentError(ServerError):
    """A deployed model server exited before it was healthy or never became healthy."""


class LocalServerError(ServerError):
    """The local model server subprocess died, or did not become ready in time."""


class LocalModelError(ServerError):
    """A local model could not be found, converted or loaded."""


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit status a command ends with after ``exc``."""
    if isinstance(exc, NelError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    return ExitCode.INCOMPLETE


def suggest(name: str, known: Iterable[str]) -> str:
    """For a message about an unknown ``name``: ``"; did you mean 'gpqa'?"`` or the known names."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"


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


class EndpointUnreachableError(ModelCallError):
    """The model URL never accepted a connection (refused, unknown host) in its first attempts.

    The eval loop stops the shard on it instead of recording every row as a connection failure
    after minutes of retries; exit 1, since a rerun succeeds once the server is up.
    """
