"""Run untrusted, model-generated code in an isolated subprocess.

Two executors return the same :class:`ExecutionResult`:

* :func:`run_code` / :class:`LocalSandbox` run the code on this machine.
* :class:`SandboxClient` posts it to a NeMo-Skills sandbox server (``POST /execute``).

How a local run is isolated
---------------------------
Every run gets its own fresh temp directory as cwd and ``HOME`` and a minimal environment
(``PATH``, ``LANG``, ``HOME``, ``TMPDIR`` only: nothing of the parent's environment, so its API
keys are not there to read). Resource limits (``RLIMIT_AS``, ``RLIMIT_CPU``, ``RLIMIT_FSIZE``,
``RLIMIT_NPROC``, ``RLIMIT_NOFILE``, ``RLIMIT_CORE``) are set in the forked child right before
``exec``. What else is in effect depends on the machine, is detected once
(:func:`sandbox_capabilities`), and is recorded in every result:

``namespaces`` (root and util-linux ``unshare`` that works; the normal case here)
    The code runs under ``unshare --net --mount --pid --ipc --uts --fork --kill-child
    --mount-proc`` behind a tiny launcher (pid 1 of the new pid namespace) that, still as
    root inside the namespaces:

    - leaves the new network namespace without any interface up: no network at all, not even
      127.0.0.1 of the host;
    - mounts an empty read-only tmpfs over the ``hide_paths`` (default: ``/root``, ``/home``,
      ``/tmp``, ``/var/tmp``, ``/run``, the parent's working directory, i.e. the project
      checkout with its ``.env`` files, nel's own ``sys.prefix`` (a venv's packages ship
      benchmark data such as HumanEval's canonical solutions), ``$NEL_DATA_DIR`` and every
      top-level directory but the system ones (``SYSTEM_DIRS``: any other venv on the machine
      may ship the answers too)): other
      runs' files, the answers and the host's unix sockets (database, munge, slurm, ...) are
      out of sight;
    - mounts a size-capped tmpfs at the run's temp dir path (so the disk cannot be filled) and
      a private small tmpfs over ``/dev/shm``;
    - remounts every other mount point read-only and ``nosuid`` (bind remounts: private to the
      namespace), so a setuid-root binary runs with the program's own uid;
    - forks the user program, which drops to a per-run unprivileged uid/gid and sets
      ``no_new_privs`` (no later ``exec`` can gain privileges) before ``exec``
      (``RLIMIT_NPROC`` is ignored for uid 0, so the uid drop is what makes it bite), and
      whose ``/proc`` shows only the namespace's own processes (the parent's
      ``/proc/<pid>/environ`` is not reachable).

    When the launcher exits, or ``unshare`` is killed (timeout), the kernel kills every
    process left in the pid namespace: a fork bomb that ``setsid()``-s away from its process
    group is still gone.

``plain`` (not root, or no usable ``unshare``)
    A new session; rlimits; when root, still the uid drop. On the way out the whole process
    group is killed, and when a uid was dropped to, every process of that uid as well. No
    network isolation (``network_isolated=False``) and writes are limited only by file
    permissions.

Concurrency is the caller's: each ``run_code`` call is independent; :class:`LocalSandbox`
wraps it with an ``asyncio.Semaphore``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from nel.errors import ScoringError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_MAX_OUTPUT_BYTES",
    "DEFAULT_MEMORY_MB",
    "CodeExecutor",
    "ExecutionResult",
    "LocalSandbox",
    "SandboxCapabilities",
    "SandboxClient",
    "SandboxLimits",
    "SandboxSession",
    "run_code",
    "sandbox_capabilities",
]

DEFAULT_MEMORY_MB = 1024
DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024
DEFAULT_MAX_PROCESSES = 32
DEFAULT_MAX_FILE_MB = 64
DEFAULT_WORKDIR_MB = 256
DEFAULT_HIDE_PATHS = ("/root", "/home", "/tmp", "/var/tmp", "/run")
# What the sandboxed interpreter needs of the root directory; every other top-level directory
# (/work, /opt, /srv, /mnt, /var, ...) is hidden by default, because any venv or checkout on the
# machine may ship a benchmark's answers (HumanEval's canonical solutions are in its package).
SYSTEM_DIRS = frozenset({"usr", "lib", "lib32", "lib64", "libx32", "bin", "sbin", "etc", "dev", "proc", "sys"})

STATUSES = ("ok", "error", "timeout", "memory", "killed")

_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_UNSHARE_ARGS = (
    "--net", "--mount", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc",
)  # fmt: skip
_UID_RANGE = (200_000, 299_999)  # per-run uids; no /etc/passwd entry needed
_uids_in_use: set[int] = set()


@dataclass(frozen=True)
class ExecutionResult:
    """The outcome of one sandboxed run.

    ``status``: ``ok`` (exit 0), ``error`` (non-zero exit), ``timeout`` (wall or CPU limit),
    ``memory`` (``MemoryError`` / allocation failure under the memory limit), ``killed``
    (died of a signal we did not send for a timeout). ``returncode`` is the exit code, or
    ``-signal`` when killed by a signal, or None when unknown (remote sandbox, our kill).
    ``isolation`` lists what was in effect for this run (see the module doc).
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    network_isolated: bool = False
    isolation: dict[str, Any] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return self.stdout_truncated or self.stderr_truncated

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class CodeExecutor(Protocol):
    """Anything that can run code and report an :class:`ExecutionResult`."""

    async def run(
        self, code: str, *, language: str = "python", stdin: str = "", timeout: float = 10.0
    ) -> ExecutionResult: ...


# --------------------------------------------------------------------------- capabilities


@dataclass(frozen=True)
class SandboxCapabilities:
    mode: str  # "namespaces" or "plain"
    unshare: str | None  # path of the working unshare binary
    drop_uid: bool  # we are root, so each run gets its own unprivileged uid
    python: str  # interpreter the sandboxed (possibly unprivileged) user can execute
    reason: str  # why this mode (for logs and reports)

    @property
    def network_isolated(self) -> bool:
        return self.mode == "namespaces"


def _world_executable(path: str) -> bool:
    """True if a user with no special rights can reach and execute ``path``."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or not st.st_mode & stat.S_IXOTH:
        return False
    parent = os.path.dirname(real)
    while True:
        try:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
        if parent == "/":
            return True
        parent = os.path.dirname(parent)


def _pick_python(drop_uid: bool) -> str:
    candidates = [sys.executable]
    if drop_uid:
        # An unprivileged uid cannot run an interpreter that lives under /root (pyenv, venvs):
        # fall back to a system one.
        candidates += [
            shutil.which("python3", path=_SAFE_PATH) or "",
            f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}",
            "/usr/bin/python3",
        ]
        for candidate in candidates:
            if candidate and _world_executable(candidate):
                return candidate
    return sys.executable


@functools.cache
def sandbox_capabilities() -> SandboxCapabilities:
    """Detect once what isolation this machine allows (cached for the process)."""
    is_root = os.geteuid() == 0
    python = _pick_python(drop_uid=is_root)
    if sys.platform != "linux":
        return SandboxCapabilities("plain", None, False, sys.executable, "not Linux")
    if not is_root:
        return SandboxCapabilities("plain", None, False, python, "not root: no namespaces")
    unshare = shutil.which("unshare") or shutil.which("unshare", path="/usr/bin:/bin")
    if unshare is None:
        return SandboxCapabilities("plain", None, True, python, "no unshare binary")
    try:
        probe = subprocess.run(
            [unshare, *_UNSHARE_ARGS, "--", "/bin/sh", "-c", "exit 0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=10,
            env={"PATH": _SAFE_PATH},
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return SandboxCapabilities("plain", None, True, python, f"unshare probe failed: {exc}")
    if probe.returncode != 0:
        err = probe.stderr.decode(errors="replace").strip()[-200:]
        return SandboxCapabilities("plain", None, True, python, f"unshare refused: {err}")
    return SandboxCapabilities("namespaces", unshare, True, python, "root with working unshare")


# --------------------------------------------------------------------------- the launcher

# Runs as root (``python -I -S -c``), as pid 1 of the new namespaces in "namespaces" mode or as
# a plain child in "plain" mode. It forks the user program, applies the limits and the uid drop
# in that child right before exec, waits for it (reaping whatever else gets reparented to
# it), and writes how the program ended as JSON to the status fd.
_LAUNCHER = r"""
import ctypes, json, os, resource, sys
cfg = json.loads(sys.argv[1])
status_fd = cfg["status_fd"]
report = {"mounts_ro": 0, "mounts_ro_failed": [], "hidden": [], "errors": []}
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 32, 4096
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21

def mount(src, target, fstype, flags, data):
    enc = lambda s: None if s is None else s.encode()
    if libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)

def mount_points():
    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            raw = line.split()[4]
            for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
                raw = raw.replace(code, char)
            points.append(raw)
    return points

def statvfs_flags(path):
    f = os.statvfs(path).f_flag
    flags = 0
    for st_flag, ms_flag in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
                             (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME)):
        if f & st_flag:
            flags |= ms_flag
    return flags

workdir = cfg["workdir"]
uid, gid = cfg["uid"], cfg["gid"]
if cfg["namespaces"]:
    try:
        # 1. Keep the run's files, then hide directories (project checkout, home dirs, /tmp,
        #    /run with its unix sockets) behind empty tmpfs (made read-only in step 3).
        saved = {}
        for name in os.listdir(workdir):
            with open(os.path.join(workdir, name), "rb") as fh:
                saved[name] = fh.read()
        for path in cfg["hide"]:
            try:
                mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m,mode=755")
                report["hidden"].append(path)
            except OSError as exc:
                report["errors"].append(f"hide {path}: {exc}")
        # 2. The run's own directory (re-created if a hidden /tmp covered it) becomes a
        #    size-capped tmpfs holding its files.
        os.makedirs(workdir, mode=0o755, exist_ok=True)
        mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['workdir_mb']}m,mode=700")
        for name, data in saved.items():
            with open(os.path.join(workdir, name), "wb") as fh:
                fh.write(data)
            if uid is not None:
                os.chown(os.path.join(workdir, name), uid, gid)
        if uid is not None:
            os.chown(workdir, uid, gid)
        # 3. A private /dev/shm (multiprocessing needs one), then everything else read-only.
        keep_rw = {workdir, "/proc"}
        try:
            mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=1777")
            keep_rw.add("/dev/shm")
        except OSError as exc:
            report["errors"].append(f"/dev/shm: {exc}")
        for point in mount_points():
            if point in keep_rw or point.startswith("/proc/"):
                continue
            try:
                # nosuid everywhere: a setuid binary must not give the program euid 0 back.
                flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | statvfs_flags(point)
                mount(None, point, None, flags, None)
                report["mounts_ro"] += 1
            except OSError as exc:
                report["mounts_ro_failed"].append(point)
        report["readonly_root"] = "/" not in report["mounts_ro_failed"] and report["mounts_ro"] > 0
        report["nosuid_root"] = bool(os.statvfs("/").f_flag & os.ST_NOSUID)
    except Exception as exc:
        report["errors"].append(f"setup: {exc!r}")
        os.write(status_fd, json.dumps({"setup_failed": repr(exc), "report": report}).encode())
        os._exit(125)
else:
    if uid is not None:
        os.chown(workdir, uid, gid)
        for name in os.listdir(workdir):
            os.chown(os.path.join(workdir, name), uid, gid)

pid = os.fork()
if pid == 0:
    try:
        os.close(status_fd)
        if not cfg["namespaces"]:
            os.setsid()
        for name, value in cfg["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (value[0], value[1]))
        if uid is not None:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        # no_new_privs: no exec (setuid bit, file capabilities) can raise privileges again.
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        os.chdir(workdir)
        os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
    except BaseException as exc:
        try:
            os.write(2, f"sandbox: cannot start program: {exc!r}\n".encode())
        finally:
            os._exit(126)
main_status = None
while main_status is None:
    try:
        done, status = os.wait()
    except ChildProcessError:
        break
    if done == pid:
        main_status = status
if main_status is None:
    outcome = {"lost": True}
elif os.WIFSIGNALED(main_status):
    outcome = {"signal": os.WTERMSIG(main_status)}
else:
    outcome = {"exit": os.WEXITSTATUS(main_status)}
outcome["report"] = report
try:
    os.write(status_fd, json.dumps(outcome).encode())
finally:
    os._exit(0)
"""


# --------------------------------------------------------------------------- helpers

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # preexec_fn: the sandbox dies if nel dies
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _allocate_uid() -> int:
    while True:
        uid = random.randint(*_UID_RANGE)
        if uid not in _uids_in_use:
            _uids_in_use.add(uid)
            return uid


_KILL_UID_SRC = (
    "import os,signal,sys\n"
    "u=int(sys.argv[1]); os.setgroups([]); os.setresgid(u,u,u); os.setresuid(u,u,u)\n"
    "try: os.kill(-1, signal.SIGKILL)\nexcept ProcessLookupError: pass"
)


def _kill_uid(uid: int, python: str) -> None:
    """SIGKILL every process running as ``uid`` (the plain mode's last-resort cleanup)."""
    if os.geteuid() != 0:
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [
                python, "-I", "-S", "-c",
                _KILL_UID_SRC,
                str(uid),
            ],
            env={"PATH": _SAFE_PATH},
            timeout=10,
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip


def _hide_paths(requested: tuple[str, ...] | None, keep_visible: list[str]) -> list[str]:
    """The directories to cover with an empty tmpfs: existing ones, outermost only, never one
    holding something the run needs (the interpreter). The run's own directory may lie inside
    one: the launcher re-creates it on top."""
    paths = list(DEFAULT_HIDE_PATHS) if requested is None else list(requested)
    if requested is None:
        # Also where the answers are: nel's own environment (its packages ship benchmark data,
        # e.g. HumanEval's canonical solutions) and its data directory.
        paths += [os.getcwd(), sys.prefix, os.environ.get("NEL_DATA_DIR", "/")]
        with contextlib.suppress(OSError):
            paths += [os.path.join("/", name) for name in os.listdir("/") if name not in SYSTEM_DIRS]
    reals = []
    for path in paths:
        real = os.path.realpath(path)
        if real == "/" or not os.path.isdir(real):
            continue
        if any(k == real or k.startswith(real + "/") for k in keep_visible):
            continue
        reals.append(real)
    return [p for p in dict.fromkeys(reals) if not any(p.startswith(q + "/") for q in reals if q != p)]


async def _drain(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, bool]:
    """Read a stream to EOF, keeping at most ``cap`` bytes (the rest is read and dropped)."""
    kept = bytearray()
    truncated = False
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return bytes(kept), truncated
        room = cap - len(kept)
        if len(chunk) > room:
            truncated = True
            kept += chunk[: max(room, 0)]
        else:
            kept += chunk


async def _feed(stream: asyncio.StreamWriter | None, data: bytes) -> None:
    if stream is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
        if data:
            stream.write(data)
            await stream.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
        stream.close()


def _program(language: str, code: str, python: str) -> tuple[str, list[str]]:
    lang = language.lower()
    if lang in ("python", "python3", "py"):
        return "main.py", [python, "main.py"]
    if lang in ("bash", "shell", "sh"):
        return "main.sh", ["/bin/bash", "main.sh"]
    raise ValueError(f"sandbox: unsupported language {language!r} (python or bash)")


def _classify(
    *, timed_out: bool, exit_code: int | None, signo: int | None, stderr: str
) -> tuple[str, int | None]:
    if timed_out:
        return "timeout", None
    if signo is not None:
        if signo == signal.SIGXCPU:
            return "timeout", -signo
        return "killed", -signo
    if exit_code == 0:
        return "ok", 0
    tail = stderr[-4000:]
    if "MemoryError" in tail or "Cannot allocate memory" in tail or "std::bad_alloc" in tail:
        return "memory", exit_code
    return "error", exit_code


# --------------------------------------------------------------------------- run_code


@dataclass(frozen=True)
class SandboxLimits:
    """The limits of one sandboxed program (see :func:`run_code` for what each one means)."""

    memory_mb: int = DEFAULT_MEMORY_MB
    cpu_time_s: int | None = None
    max_processes: int = DEFAULT_MAX_PROCESSES
    max_file_mb: int = DEFAULT_MAX_FILE_MB
    workdir_mb: int = DEFAULT_WORKDIR_MB
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    hide_paths: tuple[str, ...] | None = None
    python: str | None = None
    isolate: bool = True


class SandboxSession:
    """One sandboxed program that nel talks to while it runs, line by line over its stdin and
    stdout (how :mod:`nel.execution.testcases` feeds test cases one at a time and times each
    answer on nel's own clock). :func:`run_code` is a session that is fed its stdin at once.

    Use as ``async with await SandboxSession.start(code, ...) as session``; :meth:`finish`
    ends the program (killing whatever is left) and reports it as an :class:`ExecutionResult`
    (its ``stdout`` holds only what no :meth:`read_line` consumed). Leaving the ``async with``
    without :meth:`finish` kills it.
    """

    def __init__(self, limits: SandboxLimits, wall_timeout: float) -> None:
        self.limits = limits
        self._wall_timeout = wall_timeout
        self._caps = sandbox_capabilities()
        self._use_ns = limits.isolate and self._caps.mode == "namespaces"
        self._uid = _allocate_uid() if self._caps.drop_uid else None
        self._workdir = tempfile.mkdtemp(prefix="nel-sandbox-")
        os.chmod(self._workdir, 0o700)
        self._status_r, self._status_w = os.pipe()
        self._start = time.monotonic()
        self._deadline = self._start + wall_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._status: asyncio.StreamReader | None = None
        self._status_transport: asyncio.BaseTransport | None = None
        self._stderr: asyncio.Future[tuple[bytes, bool]] | None = None
        self._rlimits: dict[str, tuple[int, int]] = {}
        self._finished = False

    @classmethod
    async def start(
        cls,
        code: str,
        *,
        language: str = "python",
        files: dict[str, str | bytes] | None = None,
        timeout: float = 10.0,
        limits: SandboxLimits | None = None,
        line_limit: int = 2**16,
    ) -> SandboxSession:
        """Start ``code``; ``timeout`` is the whole program's wall-clock budget (from now),
        ``line_limit`` the longest stdout line :meth:`read_line` accepts."""
        session = cls(limits or SandboxLimits(), timeout)
        try:
            await session._spawn(code, language, files or {}, line_limit)
        except BaseException:
            await session._cleanup()
            raise
        return session

    async def _spawn(self, code: str, language: str, files: dict[str, str | bytes], line_limit: int) -> None:
        limits, caps = self.limits, self._caps
        interpreter = limits.python or caps.python
        filename, argv = _program(language, code, interpreter)
        cpu = limits.cpu_time_s if limits.cpu_time_s is not None else int(self._wall_timeout) + 2
        mem = int(limits.memory_mb) * 1024 * 1024
        self._rlimits = {
            "RLIMIT_AS": (mem, mem),
            "RLIMIT_CPU": (cpu, cpu + 1),
            "RLIMIT_FSIZE": (limits.max_file_mb * 1024 * 1024,) * 2,
            "RLIMIT_NPROC": (limits.max_processes, limits.max_processes),
            "RLIMIT_NOFILE": (256, 256),
            "RLIMIT_CORE": (0, 0),
        }
        _write_files(self._workdir, {filename: code, **files})
        env = {"PATH": _SAFE_PATH, "LANG": "C.UTF-8", "HOME": self._workdir, "TMPDIR": self._workdir}
        hidden = _hide_paths(limits.hide_paths, [os.path.realpath(interpreter)]) if self._use_ns else []
        cfg = {
            "status_fd": self._status_w,
            "namespaces": self._use_ns,
            "workdir": self._workdir,
            "workdir_mb": int(limits.workdir_mb),
            "hide": hidden,
            "uid": self._uid,
            "gid": self._uid,
            "rlimits": self._rlimits,
            "argv": argv,
            "env": env,
        }
        launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(cfg)]
        cmd = [caps.unshare, *_UNSHARE_ARGS, "--", *launcher] if self._use_ns else launcher
        self._proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": _SAFE_PATH, "LANG": "C.UTF-8"},
            cwd="/",
            pass_fds=(self._status_w,),
            start_new_session=True,
            preexec_fn=_die_with_parent,
            limit=line_limit,
        )
        os.close(self._status_w)
        self._status_w = -1
        # The launcher writes how the program ended to the status pipe and exits; EOF on it
        # (not proc.wait(), which also waits for every holder of the output pipes) ends the run.
        status = self._status = asyncio.StreamReader()
        self._status_transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(status), os.fdopen(self._status_r, "rb", 0)
        )
        self._status_r = -1  # owned by the transport now
        self._deadline = time.monotonic() + self._wall_timeout
        assert self._proc.stderr is not None
        self._stderr = asyncio.ensure_future(_drain(self._proc.stderr, limits.max_output_bytes))

    @property
    def deadline(self) -> float:
        """When (``time.monotonic()``) the program's wall-clock budget runs out."""
        return self._deadline

    async def send_line(self, data: bytes) -> bool:
        """Write one line to the program's stdin; False if it no longer reads it."""
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(data + b"\n")
            await self._proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError, OSError):
            return False
        return True

    async def read_line(self, timeout: float) -> bytes | None:
        """The program's next stdout line (without its newline); None at EOF (or a line longer
        than ``line_limit``, which counts as the program breaking the protocol). Raises
        ``TimeoutError`` after ``timeout`` seconds, or when the wall-clock budget runs out."""
        assert self._proc is not None and self._proc.stdout is not None
        timeout = min(timeout, self.deadline - time.monotonic())
        if timeout <= 0:
            raise TimeoutError
        try:
            line = await asyncio.wait_for(self._proc.stdout.readline(), timeout)
        except (ValueError, asyncio.LimitOverrunError):
            return None
        except asyncio.TimeoutError as exc:
            raise TimeoutError from exc
        if not line.endswith(b"\n"):
            return None
        return line[:-1]

    async def feed_and_close(self, data: bytes) -> None:
        """Write all of ``data`` to stdin, then close it (what :func:`run_code` does)."""
        assert self._proc is not None
        await _feed(self._proc.stdin, data)

    async def finish(self, wait: bool = True, close_stdin: bool = True) -> ExecutionResult:
        """End the program and report it. ``wait``: let it run to its end within its budget
        (else it is killed at once, as after a test failed); ``close_stdin``: send it EOF."""
        assert self._proc is not None and self._status is not None and self._stderr is not None
        self._finished = True
        proc = self._proc
        assert proc.stdout is not None
        stdout_task = asyncio.ensure_future(_drain(proc.stdout, self.limits.max_output_bytes))
        timed_out = False
        status_bytes = b""
        try:
            if close_stdin and proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.close()
            budget = self.deadline - time.monotonic() if wait else 0.0
            try:
                status_bytes = await asyncio.wait_for(self._status.read(), max(budget, 0.0))
            except asyncio.TimeoutError:
                timed_out = wait
        finally:
            if self._status_transport is not None:
                self._status_transport.close()
            # Whatever is still running now dies: the process group, the pid namespace (its
            # pid 1 gets SIGKILL when unshare dies) and, in plain mode, everything of our uid.
            _kill_group(proc.pid)
            if self._uid is not None and not self._use_ns:
                await asyncio.to_thread(_kill_uid, self._uid, self._caps.python)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
        try:
            (out, out_cut), (err, err_cut) = await asyncio.wait_for(
                asyncio.gather(stdout_task, self._stderr), 5
            )
        except asyncio.TimeoutError:  # a process we could not kill keeps a pipe open
            stdout_task.cancel()
            out, out_cut, err, err_cut = b"", True, b"sandbox: output pipes stuck open\n", True
        try:
            outcome = json.loads(status_bytes or b"{}")
        except ValueError:
            outcome = {}
        return self._result(outcome, timed_out, out, out_cut, err, err_cut)

    def _result(
        self, outcome: dict[str, Any], timed_out: bool, out: bytes, out_cut: bool, err: bytes, err_cut: bool
    ) -> ExecutionResult:
        assert self._proc is not None
        stderr = err.decode("utf-8", errors="replace")
        if "setup_failed" in outcome:
            raise ScoringError(
                f"sandbox setup failed ({outcome['setup_failed']}); isolation report: {outcome.get('report')}"
            )
        exit_code: int | None = outcome.get("exit")
        signo: int | None = outcome.get("signal")
        returncode = self._proc.returncode
        if exit_code is None and signo is None and not timed_out and returncode is not None:
            # The launcher itself died (or no status): use what the outer process reports.
            if returncode < 0:
                signo = -returncode
            else:
                exit_code = returncode
        status, code = _classify(timed_out=timed_out, exit_code=exit_code, signo=signo, stderr=stderr)
        report = outcome.get("report", {})
        isolation = {
            "mode": "namespaces" if self._use_ns else "plain",
            "network_namespace": self._use_ns,
            "pid_namespace": self._use_ns,
            "mount_namespace": self._use_ns,
            "readonly_root": bool(report.get("readonly_root", False)),
            "nosuid_root": bool(report.get("nosuid_root", False)),
            "no_new_privs": True,
            "hidden_paths": report.get("hidden", []),
            "uid": self._uid,
            "rlimits": {k: v[0] for k, v in self._rlimits.items()},
        }
        if report.get("errors"):
            isolation["setup_errors"] = report["errors"]
        return ExecutionResult(
            status=status,
            returncode=code,
            stdout=out.decode("utf-8", errors="replace"),
            stderr=stderr,
            duration_s=time.monotonic() - self._start,
            stdout_truncated=out_cut,
            stderr_truncated=err_cut,
            network_isolated=self._use_ns,
            isolation=isolation,
        )

    async def __aenter__(self) -> SandboxSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._cleanup()

    async def _cleanup(self) -> None:
        """Nothing of the run may outlive it (also on cancellation)."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            _kill_group(proc.pid)
            if self._uid is not None and not self._use_ns:
                await asyncio.to_thread(_kill_uid, self._uid, self._caps.python)
        if self._status_transport is not None:
            self._status_transport.close()
        if self._stderr is not None and not self._stderr.done():
            self._stderr.cancel()
        for fd in (self._status_r, self._status_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._status_r = self._status_w = -1
        if self._uid is not None:
            _uids_in_use.discard(self._uid)
        shutil.rmtree(self._workdir, ignore_errors=True)


async def run_code(
    code: str,
    *,
    language: str = "python",
    stdin: str = "",
    timeout: float = 10.0,
    memory_mb: int = DEFAULT_MEMORY_MB,
    cpu_time_s: int | None = None,
    max_processes: int = DEFAULT_MAX_PROCESSES,
    max_file_mb: int = DEFAULT_MAX_FILE_MB,
    workdir_mb: int = DEFAULT_WORKDIR_MB,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    files: dict[str, str | bytes] | None = None,
    hide_paths: tuple[str, ...] | None = None,
    python: str | None = None,
    isolate: bool = True,
) -> ExecutionResult:
    """Run ``code`` in a fresh, isolated subprocess and report how it went.

    ``timeout`` is wall-clock seconds; ``cpu_time_s`` (default ``int(timeout) + 2``) caps CPU
    time (SIGXCPU, reported as ``timeout``). ``memory_mb`` is the address-space limit of each process (so with ``max_processes``
    processes the total is bounded by their product). ``files`` are written next to the
    program in its directory. ``hide_paths`` (namespaces mode) replaces the default hidden
    directories. ``isolate=False`` skips the namespaces even where available (plain mode).
    Never raises for anything the code does; raises ``ValueError`` for a bad language.
    """
    limits = SandboxLimits(
        memory_mb=memory_mb, cpu_time_s=cpu_time_s, max_processes=max_processes, max_file_mb=max_file_mb,
        workdir_mb=workdir_mb, max_output_bytes=max_output_bytes, hide_paths=hide_paths, python=python,
        isolate=isolate,
    )  # fmt: skip
    _program(language, code, "")  # a bad language fails before anything starts
    session = await SandboxSession.start(code, language=language, files=files, timeout=timeout, limits=limits)
    async with session:
        feeder = asyncio.ensure_future(session.feed_and_close(stdin.encode("utf-8")))
        try:
            return await session.finish(close_stdin=False)
        finally:
            feeder.cancel()


def _write_files(workdir: str, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"sandbox: file names must be plain names, got {name!r}")
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        Path(workdir, name).write_bytes(data)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class LocalSandbox:
    """:func:`run_code` with fixed limits and at most ``max_concurrency`` runs at once.

    :meth:`slot` is the same bound for callers that start :class:`SandboxSession` s
    themselves (the test-case runner), with :attr:`limits` as their limits.
    """

    def __init__(self, max_concurrency: int = 4, **limits: Any) -> None:
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._limits = limits
        self.limits = SandboxLimits(**limits)

    def slot(self) -> asyncio.Semaphore:
        return self._semaphore

    async def run(
        self, code: str, *, language: str = "python", stdin: str = "", timeout: float = 10.0
    ) -> ExecutionResult:
        async with self._semaphore:
            return await run_code(code, language=language, stdin=stdin, timeout=timeout, **self._limits)


# --------------------------------------------------------------------------- remote sandbox


class SandboxClient:
    """Client of NeMo-Skills' sandbox server.

    Request: ``POST {base_url}/execute`` with JSON ``{"generated_code", "std_input", "timeout",
    "language", "max_output_characters", "traceback_verbosity"}``; reply: ``{"process_status":
    "completed" | "error" | "timeout" | ..., "stdout", "stderr"}``. The server cuts long output
    to ``max_output_characters`` and appends ``"<output cut>"``. The server does not send an
    exit code, so ``returncode`` is None, and NeMo-Skills' Python runner reports
    ``completed`` even for a non-zero exit: callers that need pass/fail should check stdout
    for a marker the program prints at its end (``nel.scoring.code`` does).
    """

    _STATUS: ClassVar[dict[str, str]] = {
        "completed": "ok",
        "error": "error",
        "failed": "error",
        "timeout": "timeout",
    }
    _CUT = "<output cut>"

    def __init__(
        self,
        base_url: str,
        *,
        max_output_characters: int = DEFAULT_MAX_OUTPUT_BYTES,
        language_map: dict[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        import httpx  # only the remote sandbox needs it

        self._httpx = httpx
        self.base_url = base_url.rstrip("/")
        self.max_output_characters = max_output_characters
        self.language_map = {"python": "python3", **(language_map or {})}
        self._client = client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64)
        )
        self._owns_client = client is None
        self._semaphore = asyncio.Semaphore(max_concurrency) if max_concurrency else None

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> SandboxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def run(
        self, code: str, *, language: str = "python", stdin: str = "", timeout: float = 10.0
    ) -> ExecutionResult:
        if self._semaphore is None:
            return await self._run(code, language, stdin, timeout)
        async with self._semaphore:
            return await self._run(code, language, stdin, timeout)

    async def _run(self, code: str, language: str, stdin: str, timeout: float) -> ExecutionResult:
        payload = {
            "generated_code": code,
            "std_input": stdin,
            "timeout": timeout,
            "language": self.language_map.get(language, language),
            "max_output_characters": self.max_output_characters,
            "traceback_verbosity": "Plain",
        }
        start = time.monotonic()
        url = f"{self.base_url}/execute"
        try:
            response = await self._client.post(url, json=payload, timeout=timeout + 5.0)
        except self._httpx.TimeoutException:
            return ExecutionResult(
                "timeout", None, "", "sandbox client timed out\n", time.monotonic() - start,
                isolation={"mode": "remote", "url": self.base_url},
            )  # fmt: skip
        except self._httpx.HTTPError as exc:
            raise ScoringError(f"sandbox server {url} unreachable: {exc!r}") from exc
        duration = time.monotonic() - start
        if response.status_code != 200:
            raise ScoringError(
                f"sandbox server {url} answered HTTP {response.status_code}: {response.text[:500]}"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise ScoringError(f"sandbox server {url} sent non-JSON: {response.text[:500]!r}") from exc
        if not isinstance(body, dict) or "process_status" not in body:
            raise ScoringError(f"sandbox server {url} sent no process_status: {str(body)[:500]}")
        stdout, out_cut = self._uncut(str(body.get("stdout", "")))
        stderr, err_cut = self._uncut(str(body.get("stderr", "")))
        status = self._STATUS.get(str(body.get("process_status")), "error")
        if status == "error" and "MemoryError" in stderr[-4000:]:
            status = "memory"
        return ExecutionResult(
            status=status,
            returncode=None,
            stdout=stdout,
            stderr=stderr,
            duration_s=duration,
            stdout_truncated=out_cut,
            stderr_truncated=err_cut,
            network_isolated=False,  # unknown: it is the server's business
            isolation={"mode": "remote", "url": self.base_url},
        )

    def _uncut(self, text: str) -> tuple[str, bool]:
        if text.endswith(self._CUT):
            return text[: -len(self._CUT)], True
        return text, False
