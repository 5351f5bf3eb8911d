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
      ``/tmp``, ``/var/tmp``, ``/run`` and the parent's working directory, i.e. the project
      checkout with its ``.env`` files): other runs' files and the host's unix sockets (database,
      munge, slurm, ...) are out of sight;
    - mounts a size-capped tmpfs at the run's temp dir path (so the disk cannot be filled) and
      a private small tmpfs over ``/dev/shm``;
    - remounts every other mount point read-only (bind remounts: private to the namespace);
    - forks the user program, which drops to a per-run unprivileged uid/gid before ``exec``
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
    "run_code",
    "sandbox_capabilities",
]

DEFAULT_MEMORY_MB = 1024
DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024
DEFAULT_MAX_PROCESSES = 32
DEFAULT_MAX_FILE_MB = 64
DEFAULT_WORKDIR_MB = 256
DEFAULT_HIDE_PATHS = ("/root", "/home", "/tmp", "/var/tmp", "/run")

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
                mount(None, point, None, MS_BIND | MS_REMOUNT | MS_RDONLY | statvfs_flags(point), None)
                report["mounts_ro"] += 1
            except OSError as exc:
                report["mounts_ro_failed"].append(point)
        report["readonly_root"] = "/" not in report["mounts_ro_failed"] and report["mounts_ro"] > 0
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
        paths.append(os.getcwd())
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
    caps = sandbox_capabilities()
    use_ns = isolate and caps.mode == "namespaces"
    interpreter = python or caps.python
    filename, argv = _program(language, code, interpreter)
    cpu = cpu_time_s if cpu_time_s is not None else int(timeout) + 2
    mem = int(memory_mb) * 1024 * 1024
    rlimits = {
        "RLIMIT_AS": (mem, mem),
        "RLIMIT_CPU": (cpu, cpu + 1),
        "RLIMIT_FSIZE": (max_file_mb * 1024 * 1024,) * 2,
        "RLIMIT_NPROC": (max_processes, max_processes),
        "RLIMIT_NOFILE": (256, 256),
        "RLIMIT_CORE": (0, 0),
    }
    uid = _allocate_uid() if caps.drop_uid else None
    workdir = tempfile.mkdtemp(prefix="nel-sandbox-")
    os.chmod(workdir, 0o700)
    status_r, status_w = os.pipe()
    start = time.monotonic()
    proc: asyncio.subprocess.Process | None = None
    readers: asyncio.Future[Any] | None = None
    feeder: asyncio.Future[None] | None = None
    timed_out = False
    try:
        _write_files(workdir, {filename: code, **(files or {})})
        env = {"PATH": _SAFE_PATH, "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
        hidden = _hide_paths(hide_paths, [os.path.realpath(interpreter)]) if use_ns else []
        cfg = {
            "status_fd": status_w,
            "namespaces": use_ns,
            "workdir": workdir,
            "workdir_mb": int(workdir_mb),
            "hide": hidden,
            "uid": uid,
            "gid": uid,
            "rlimits": rlimits,
            "argv": argv,
            "env": env,
        }
        launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(cfg)]
        cmd = [caps.unshare, *_UNSHARE_ARGS, "--", *launcher] if use_ns else launcher
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": _SAFE_PATH, "LANG": "C.UTF-8"},
            cwd="/",
            pass_fds=(status_w,),
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        os.close(status_w)
        status_w = -1
        # The launcher writes how the program ended to the status pipe and exits; EOF on it
        # (not proc.wait(), which also waits for every holder of the output pipes) ends the run.
        status_reader = asyncio.StreamReader()
        status_transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(status_reader), os.fdopen(status_r, "rb", 0)
        )
        status_r = -1  # owned by the transport now
        assert proc.stdout is not None and proc.stderr is not None
        readers = asyncio.gather(_drain(proc.stdout, max_output_bytes), _drain(proc.stderr, max_output_bytes))
        feeder = asyncio.ensure_future(_feed(proc.stdin, stdin.encode("utf-8")))
        status_bytes = b""
        try:
            status_bytes = await asyncio.wait_for(status_reader.read(), timeout)
        except asyncio.TimeoutError:
            timed_out = True
        finally:
            status_transport.close()
            # Whatever is still running now dies: the process group, the pid namespace (its
            # pid 1 gets SIGKILL when unshare dies) and, in plain mode, everything of our uid.
            _kill_group(proc.pid)
            if uid is not None and not use_ns:
                await asyncio.to_thread(_kill_uid, uid, caps.python)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
        try:
            (out, out_cut), (err, err_cut) = await asyncio.wait_for(readers, 5)
        except asyncio.TimeoutError:  # a process we could not kill keeps a pipe open
            readers.cancel()
            out, out_cut, err, err_cut = b"", True, b"sandbox: output pipes stuck open\n", True
        feeder.cancel()
        duration = time.monotonic() - start
        try:
            outcome = json.loads(status_bytes or b"{}")
        except ValueError:
            outcome = {}
        stdout = out.decode("utf-8", errors="replace")
        stderr = err.decode("utf-8", errors="replace")
        if "setup_failed" in outcome:
            raise ScoringError(
                f"sandbox setup failed ({outcome['setup_failed']}); isolation report: {outcome.get('report')}"
            )
        exit_code: int | None = outcome.get("exit")
        signo: int | None = outcome.get("signal")
        if exit_code is None and signo is None and not timed_out and proc.returncode is not None:
            # The launcher itself died (or no status): use what the outer process reports.
            if proc.returncode < 0:
                signo = -proc.returncode
            else:
                exit_code = proc.returncode
        status, returncode = _classify(timed_out=timed_out, exit_code=exit_code, signo=signo, stderr=stderr)
        report = outcome.get("report", {})
        isolation = {
            "mode": "namespaces" if use_ns else "plain",
            "network_namespace": use_ns,
            "pid_namespace": use_ns,
            "mount_namespace": use_ns,
            "readonly_root": bool(report.get("readonly_root", False)),
            "hidden_paths": report.get("hidden", []),
            "uid": uid,
            "rlimits": {k: v[0] for k, v in rlimits.items()},
        }
        if report.get("errors"):
            isolation["setup_errors"] = report["errors"]
        return ExecutionResult(
            status=status,
            returncode=returncode,
            stdout=stdout,
            stderr=stderr,
            duration_s=duration,
            stdout_truncated=out_cut,
            stderr_truncated=err_cut,
            network_isolated=use_ns,
            isolation=isolation,
        )
    finally:  # also on cancellation: nothing of the run may outlive it
        if proc is not None and proc.returncode is None:
            _kill_group(proc.pid)
        for task in (readers, feeder):
            if task is not None and not task.done():
                task.cancel()
        for fd in (status_r, status_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if uid is not None:
            _uids_in_use.discard(uid)
        shutil.rmtree(workdir, ignore_errors=True)


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
    """:func:`run_code` with fixed limits and at most ``max_concurrency`` runs at once."""

    def __init__(self, max_concurrency: int = 4, **limits: Any) -> None:
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._limits = limits

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
