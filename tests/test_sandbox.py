"""The local sandbox against hostile code, and the NeMo-Skills sandbox client.

Every test runs real subprocesses. The isolation that the machine allows is detected once by
``sandbox_capabilities()``: "namespaces" (root + a working ``unshare``, as on the dev machines
and CI) or "plain". Tests that need namespaces skip with the detected reason otherwise; the
plain-mode tests force ``isolate=False`` and assert what that mode honestly does and does not
prevent.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp import web

from nel.errors import ScoringError
from nel.execution.sandbox import (
    DEFAULT_MAX_OUTPUT_BYTES,
    ExecutionResult,
    LocalSandbox,
    SandboxClient,
    run_code,
    sandbox_capabilities,
)
from nel.scoring.code import score_humaneval

CAPS = sandbox_capabilities()
NAMESPACES = CAPS.mode == "namespaces"
needs_namespaces = pytest.mark.skipif(not NAMESPACES, reason=f"no namespaces here: {CAPS.reason}")
needs_uid_drop = pytest.mark.skipif(
    not CAPS.drop_uid, reason="not root: runs keep our uid, RLIMIT_NPROC is ours"
)


def run(code: str, **kwargs: Any) -> ExecutionResult:
    return asyncio.run(run_code(code, **kwargs))


def processes_of_uid(uid: int, zombies: bool = False) -> list[int]:
    """Processes running as ``uid`` (zombies only if asked)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if not zombies and fields.get("State", "").strip().startswith("Z"):
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            found.append(int(entry))
    return found


def wait_until_gone(uid: int, within: float = 5.0, zombies: bool = False) -> list[int]:
    deadline = time.monotonic() + within
    while True:
        left = processes_of_uid(uid, zombies)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


# --------------------------------------------------------------------------- basics


def test_ok_stdout_stdin_and_fresh_cwd() -> None:
    result = run(
        "import os, sys\nprint(input()[::-1])\nprint(os.getcwd())\nopen('f.txt','w').write('x')",
        stdin="abc\n",
    )
    assert result.status == "ok", result.stderr
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "cba"
    workdir = lines[1]
    assert Path(workdir).name.startswith("nel-sandbox-")
    assert not Path(workdir).exists(), "the temp dir must be deleted after the run"
    assert result.duration_s < 5
    assert not result.truncated


def test_nonzero_exit_is_error_with_traceback() -> None:
    result = run("def f():\n    raise ValueError('boom')\nf()")
    assert result.status == "error"
    assert result.returncode == 1
    assert "ValueError: boom" in result.stderr


def test_syntax_error_is_error() -> None:
    result = run("def f(:\n  pass")
    assert result.status == "error"
    assert "SyntaxError" in result.stderr


def test_exit_code_passes_through() -> None:
    assert run("import sys; sys.exit(3)").returncode == 3


def test_death_by_signal_is_killed() -> None:
    result = run("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert result.status == "killed"
    assert result.returncode == -11


def test_bash_language() -> None:
    result = run("echo hello from $0; exit 4", language="bash")
    assert result.status == "error"
    assert result.returncode == 4
    assert result.stdout.startswith("hello from main.sh")


def test_unsupported_language() -> None:
    with pytest.raises(ValueError, match="unsupported language"):
        run("int main(){}", language="cobol")


def test_extra_files_are_next_to_the_program() -> None:
    result = run("print(open('data.txt').read().upper())", files={"data.txt": "payload"})
    assert result.stdout.strip() == "PAYLOAD"
    with pytest.raises(ValueError):
        run("pass", files={"../evil": "x"})


def test_isolation_is_recorded() -> None:
    result = run("pass")
    assert result.network_isolated is NAMESPACES
    assert result.isolation["mode"] == CAPS.mode
    assert result.isolation["rlimits"]["RLIMIT_AS"] == 1024 * 1024 * 1024
    if CAPS.drop_uid:
        assert isinstance(result.isolation["uid"], int) and result.isolation["uid"] > 0


# --------------------------------------------------------------------------- (a) secrets in the environment


SECRET_HUNT = r"""
import json, os
found = [k for k, v in os.environ.items() if 'sk-test-secret' in v]
print('ENV', json.dumps(sorted(os.environ)))
print('FOUND_ENV', found)
hits = []
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            if b'sk-test-secret' in open(f'/proc/{pid}/environ', 'rb').read():
                hits.append(pid)
        except OSError:
            pass
print('FOUND_PROC', hits)
print('PPID_ENVIRON_READABLE', os.access(f'/proc/{os.getppid()}/environ', os.R_OK))
"""


@pytest.mark.parametrize("isolate", [True, False], ids=["default", "plain"])
def test_parent_secret_not_visible(monkeypatch: pytest.MonkeyPatch, isolate: bool) -> None:
    monkeypatch.setenv("NEL_API_KEY", "sk-test-secret")
    # os.environ changes do not show in our own /proc/<pid>/environ, so also keep a process
    # alive whose environment block really holds the secret, as a launched nel would.
    holder = subprocess.Popen(["sleep", "30"], env={**os.environ})
    try:
        deadline = time.monotonic() + 5  # the environ block is empty until exec is done
        while b"sk-test-secret" not in Path(f"/proc/{holder.pid}/environ").read_bytes():
            assert time.monotonic() < deadline, "test precondition: holder has the secret"
            time.sleep(0.02)
        result = run(SECRET_HUNT, isolate=isolate)
    finally:
        holder.kill()
        holder.wait()
    assert result.status == "ok", result.stderr
    assert "sk-test-secret" not in result.stdout + result.stderr
    assert "FOUND_ENV []" in result.stdout
    assert "FOUND_PROC []" in result.stdout
    env_line = next(line for line in result.stdout.splitlines() if line.startswith("ENV"))
    assert set(json.loads(env_line[4:])) <= {"PATH", "LANG", "HOME", "TMPDIR", "LC_CTYPE"}


@needs_namespaces
def test_parent_processes_invisible_in_pid_namespace() -> None:
    result = run("import os; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))")
    pids = json.loads(result.stdout)
    assert pids == [1, 2], pids  # the launcher (pid 1) and the program itself, nothing else


@needs_namespaces
def test_project_dir_and_home_are_hidden() -> None:
    cwd = os.getcwd()
    assert os.listdir(cwd), "test precondition: the parent's cwd is not empty"
    # Under an empty tmpfs the cwd is either empty or, when it lived below a hidden dir such
    # as /tmp (a CI checkout), gone altogether: both mean the sandbox cannot see it.
    result = run(
        f"import os; print(os.listdir({cwd!r}) if os.path.isdir({cwd!r}) else []);"
        " print(os.path.isdir('/root') and os.listdir('/root'))"
    )
    assert result.status == "ok", result.stderr
    assert result.stdout.splitlines()[0] == "[]"
    hidden = result.isolation["hidden_paths"]
    assert any(cwd == h or cwd.startswith(h.rstrip("/") + "/") for h in hidden), (cwd, hidden)


@needs_namespaces
def test_host_tmp_and_unix_sockets_are_out_of_sight() -> None:
    marker = Path(f"/tmp/nel-visible-{uuid.uuid4().hex}")
    sock_path = f"/tmp/nel-sock-{uuid.uuid4().hex}"
    server = socket.socket(socket.AF_UNIX)
    server.bind(sock_path)
    os.chmod(sock_path, 0o777)
    server.listen()
    marker.write_text("host file")
    code = f"""
import os, socket
print('MARKER', os.path.exists({str(marker)!r}))
print('TMP', sorted(os.listdir('/tmp')))
s = socket.socket(socket.AF_UNIX)
try:
    s.connect({sock_path!r})
    print('UNIX CONNECTED')
except OSError as exc:
    print('UNIX FAILED', exc.errno)
"""
    try:
        result = run(code)
        assert result.status == "ok", result.stderr
        assert "MARKER False" in result.stdout
        assert "UNIX FAILED" in result.stdout
        # /tmp shows only the run's own directory
        tmp_line = next(line for line in result.stdout.splitlines() if line.startswith("TMP"))
        listed = json.loads(tmp_line[4:].replace("'", '"'))
        assert len(listed) == 1 and listed[0].startswith("nel-sandbox-")
        assert "/tmp" in result.isolation["hidden_paths"]
    finally:
        server.close()
        os.unlink(sock_path)
        marker.unlink()


# --------------------------------------------------------------------------- (b) writes outside the temp dir


@needs_namespaces
def test_writes_outside_tempdir_are_blocked() -> None:
    target = Path(f"/tmp/nel-escape-{uuid.uuid4().hex}")
    code = f"""
import errno
for path in [{str(target)!r}, '/etc/nel-escape', '/var/tmp/nel-escape', '/dev/shm/x']:
    try:
        open(path, 'w').write('pwned')
        print('WROTE', path)
    except OSError as exc:
        print('BLOCKED', path, errno.errorcode[exc.errno])
open('inside.txt', 'w').write('fine')
print('INSIDE_OK')
"""
    try:
        result = run(code)
        assert result.status == "ok", result.stderr
        assert f"BLOCKED {target} EROFS" in result.stdout
        assert "BLOCKED /etc/nel-escape" in result.stdout
        assert "BLOCKED /var/tmp/nel-escape" in result.stdout
        # /dev/shm is a private tmpfs of this run: writable, but gone with it
        assert "WROTE /dev/shm/x" in result.stdout
        assert "INSIDE_OK" in result.stdout
        assert not target.exists()
        assert not Path("/dev/shm/x").exists()
        assert result.isolation["readonly_root"] is True
    finally:
        target.unlink(missing_ok=True)


@needs_namespaces
def test_host_mounts_stay_writable_after_namespace_runs(tmp_path: Path) -> None:
    run("pass")
    probe = tmp_path / "still-writable"
    probe.write_text("ok")
    assert probe.read_text() == "ok"
    root = next(
        line.split()
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4] == "/"
    )
    assert root[5].split(",")[0] == "rw"


@needs_namespaces
def test_disk_use_is_capped() -> None:
    code = """
import errno
try:
    open('big.bin', 'wb').write(b'x' * (100 * 1024 * 1024))
except OSError as exc:
    print('FILE', errno.errorcode[exc.errno])
total = 0
try:
    for i in range(10):
        with open(f'part{i}.bin', 'wb') as fh:
            fh.write(b'x' * (40 * 1024 * 1024))
        total += 40
except OSError as exc:
    print('DISK', errno.errorcode[exc.errno], total)
"""
    result = run(code, max_file_mb=64, workdir_mb=128, memory_mb=1024)
    assert "FILE EFBIG" in result.stdout, result.stdout + result.stderr
    assert "DISK ENOSPC" in result.stdout, result.stdout + result.stderr


@needs_uid_drop
def test_plain_mode_write_escape_documented() -> None:
    """Without a mount namespace, the run can write wherever its (unprivileged) uid may:
    world-writable /tmp yes, root-owned directories no. This is the documented limit."""
    target = Path(f"/tmp/nel-escape-{uuid.uuid4().hex}")
    code = f"""
import os
open({str(target)!r}, 'w').write('x')
try:
    open('/etc/nel-escape', 'w')
    print('ETC_WRITTEN')
except PermissionError:
    print('ETC_DENIED')
print(os.getcwd())
"""
    try:
        result = run(code, isolate=False)
        assert result.status == "ok", result.stderr
        assert result.network_isolated is False
        assert "ETC_DENIED" in result.stdout
        assert target.exists()
        assert target.stat().st_uid == result.isolation["uid"] != 0
        assert Path(result.stdout.splitlines()[-1]).name.startswith("nel-sandbox-")
    finally:
        target.unlink(missing_ok=True)


# --------------------------------------------------------------------------- (c) network


class _Listener:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


CONNECT = """
import socket
try:
    socket.create_connection(('127.0.0.1', {port}), timeout=3).close()
    print('CONNECTED')
except OSError as exc:
    print('FAILED', type(exc).__name__, exc)
"""


@needs_namespaces
def test_network_blocked() -> None:
    listener = _Listener()
    try:
        result = run(CONNECT.format(port=listener.port))
        time.sleep(0.3)
        assert result.network_isolated is True
        assert "FAILED" in result.stdout, result.stdout + result.stderr
        assert listener.accepted == 0
    finally:
        listener.close()


def test_plain_mode_network_reachable_and_reported() -> None:
    """Documented: without namespaces the network is not isolated, and the result says so."""
    listener = _Listener()
    try:
        result = run(CONNECT.format(port=listener.port), isolate=False)
        assert result.network_isolated is False
        assert "CONNECTED" in result.stdout, result.stdout + result.stderr
    finally:
        listener.close()


# --------------------------------------------------------------------------- (d) fork bombs


BOUNDED_BOMB = """
import os, time
ok = failed = 0
for _ in range(200):
    try:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        ok += 1
    except OSError:
        failed += 1
print(ok, failed, flush=True)
"""


@needs_uid_drop
@pytest.mark.parametrize("isolate", [True, False], ids=["default", "plain"])
def test_bounded_fork_bomb_is_capped_and_cleaned_up(isolate: bool) -> None:
    result = run(BOUNDED_BOMB, max_processes=16, timeout=10, isolate=isolate)
    assert result.status == "ok", result.stderr
    forked, failed = map(int, result.stdout.split())
    assert forked < 16 and failed > 150
    assert wait_until_gone(result.isolation["uid"]) == []


@needs_uid_drop
@pytest.mark.parametrize("isolate", [True, False], ids=["default", "plain"])
def test_fork_bomb_contained(isolate: bool) -> None:
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    start = time.monotonic()
    result = run(bomb, timeout=3, max_processes=32, isolate=isolate)
    elapsed = time.monotonic() - start
    assert result.status in {"killed", "error", "timeout"}
    assert elapsed < 3 + 5
    assert wait_until_gone(result.isolation["uid"]) == []
    assert wait_until_gone(result.isolation["uid"], within=10, zombies=True) == [], (
        "even the zombies get reaped"
    )
    # this process and the machine are fine: another run works right away
    assert run("print(6 * 7)").stdout.strip() == "42"


@needs_uid_drop
@pytest.mark.parametrize("isolate", [True, False], ids=["default", "plain"])
def test_setsid_escapee_is_killed(isolate: bool) -> None:
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(120)\nprint('parent done')"
    result = run(code, timeout=5, isolate=isolate)
    assert result.status == "ok"
    assert result.duration_s < 4, "a daemonized child must not hold the run open"
    assert wait_until_gone(result.isolation["uid"]) == []


# --------------------------------------------------------------------------- (e) memory, (f) time, (g) output


def test_huge_allocation_is_memory() -> None:
    result = run("x = bytearray(10 * 1024 ** 3)\nprint('allocated')")
    assert result.status == "memory", (result.status, result.stderr)
    assert "MemoryError" in result.stderr
    assert "allocated" not in result.stdout


def test_gradual_allocation_is_memory() -> None:
    result = run("chunks = []\nwhile True:\n    chunks.append(bytearray(20 * 1024 * 1024))", memory_mb=256)
    assert result.status == "memory", (result.status, result.stderr[-500:])


def test_infinite_loop_times_out() -> None:
    start = time.monotonic()
    result = run("while True:\n    pass", timeout=2)
    elapsed = time.monotonic() - start
    assert result.status == "timeout"
    assert result.returncode is None
    assert 2 <= result.duration_s < 3
    assert elapsed < 3


def test_sleeping_program_times_out() -> None:
    result = run("import time\nprint('started', flush=True)\ntime.sleep(30)", timeout=1)
    assert result.status == "timeout"
    assert result.stdout == "started\n"
    assert result.duration_s < 2


def test_cpu_limit_below_wall_limit() -> None:
    result = run("while True:\n    pass", timeout=10, cpu_time_s=1)
    assert result.status == "timeout"
    assert result.returncode == -24  # SIGXCPU
    assert result.duration_s < 5


def test_output_flood_is_truncated() -> None:
    code = "import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range(100 * 1024):\n    sys.stdout.write(line)\nprint('END')"
    start = time.monotonic()
    result = run(code, timeout=30)
    assert result.status == "ok"
    assert result.stdout_truncated is True and result.truncated is True
    assert result.stderr_truncated is False
    assert len(result.stdout.encode()) == DEFAULT_MAX_OUTPUT_BYTES
    assert "END" not in result.stdout
    assert time.monotonic() - start < 20


def test_stderr_flood_is_truncated_separately() -> None:
    code = "import sys\nfor _ in range(20000):\n    sys.stderr.write('e' * 100 + '\\n')\nprint('done')"
    result = run(code, max_output_bytes=1000)
    assert result.stderr_truncated is True
    assert result.stdout_truncated is False
    assert len(result.stderr) == 1000
    assert result.stdout == "done\n"


def test_endless_output_times_out_with_bounded_capture() -> None:
    result = run("while True:\n    print('y' * 1000)", timeout=1.5)
    assert result.status == "timeout"
    assert result.stdout_truncated
    assert len(result.stdout) <= DEFAULT_MAX_OUTPUT_BYTES


# --------------------------------------------------------------------------- concurrency


def test_local_sandbox_bounds_concurrency() -> None:
    async def main() -> tuple[float, list[ExecutionResult]]:
        sandbox = LocalSandbox(max_concurrency=2)
        start = time.monotonic()
        results = await asyncio.gather(*[sandbox.run("import time; time.sleep(0.6)") for _ in range(4)])
        return time.monotonic() - start, list(results)

    elapsed, results = asyncio.run(main())
    assert all(r.status == "ok" for r in results)
    assert elapsed >= 1.2, "two waves of two"
    assert elapsed < 5


def test_parallel_runs_are_independent() -> None:
    async def main() -> list[ExecutionResult]:
        codes = [
            f"import os\nopen('mine.txt','w').write('{i}')\nprint(open('mine.txt').read(), len(os.listdir('.')))"
            for i in range(6)
        ]
        return list(await asyncio.gather(*[run_code(c) for c in codes]))

    results = asyncio.run(main())
    assert [r.stdout.split() for r in results] == [[str(i), "2"] for i in range(6)]


@needs_uid_drop
def test_cancelled_run_leaves_nothing_behind() -> None:
    # A token in the processes' command lines tells this run's processes from other sandboxes
    # that may run on the machine at the same time.
    token = f"{60 + secrets.randbelow(10**6) / 10**7:.7f}"
    code = f"import os\nos.fork()\nos.execvp('sleep', ['sleep', '{token}'])"

    async def main() -> None:
        task = asyncio.create_task(run_code(code, timeout=60))
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    before = {p.name for p in Path(tempfile.gettempdir()).glob("nel-sandbox-*")}
    asyncio.run(main())

    def left() -> list[str]:
        return [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline(pid) == ["sleep", token]]

    deadline = time.monotonic() + 10  # the kill is sent before cancel returns; reaping may lag
    while left() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left() == []
    assert {p.name for p in Path(tempfile.gettempdir()).glob("nel-sandbox-*")} <= before


def _cmdline(pid: str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _uid_of(pid: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------- NeMo-Skills sandbox API


class StandInSandboxServer:
    """A tiny NeMo-Skills-compatible ``/execute`` server that runs code with ``run_code``."""

    STATUS: ClassVar[dict[str, str]] = {"ok": "completed", "timeout": "timeout"}

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_next_with: int | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _execute(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if self.fail_next_with is not None:
            status, self.fail_next_with = self.fail_next_with, None
            return web.Response(status=status, text="internal error")
        language = body.get("language", "ipython")
        if language not in ("python3", "python", "shell"):
            return web.json_response({"error": f"unsupported {language}"}, status=400)
        result = await run_code(
            body["generated_code"],
            language="bash" if language == "shell" else "python",
            stdin=body.get("std_input", ""),
            timeout=float(body["timeout"]),
        )
        reply = {
            "process_status": self.STATUS.get(result.status, "error"),
            "stdout": result.stdout,
            "stderr": result.stderr,
        }
        limit = int(body.get("max_output_characters", 1000))
        for key in ("stdout", "stderr"):
            if len(reply[key]) > limit:
                reply[key] = reply[key][:limit] + "<output cut>"
        return web.json_response(reply)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/execute", self._execute)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def with_server(test: Any) -> Any:
    async def body(server: StandInSandboxServer, client: SandboxClient) -> Any:
        return await test(server, client)

    async def main() -> Any:
        server = StandInSandboxServer()
        url = await server.start()
        try:
            async with SandboxClient(url + "/", max_output_characters=200) as client:
                return await body(server, client)
        finally:
            await server.stop()

    return asyncio.run(main())


def test_client_request_and_ok_reply() -> None:
    async def test(server: StandInSandboxServer, client: SandboxClient) -> None:
        result = await client.run("print(input() * 2)", stdin="ab\n", timeout=5)
        assert result.status == "ok"
        assert result.stdout == "abab\n"
        assert result.returncode is None
        assert result.isolation["mode"] == "remote"
        sent = server.requests[-1]
        assert set(sent) == {
            "generated_code",
            "std_input",
            "timeout",
            "language",
            "max_output_characters",
            "traceback_verbosity",
        }
        assert sent["language"] == "python3"
        assert sent["std_input"] == "ab\n"
        assert sent["timeout"] == 5

    with_server(test)


def test_client_maps_error_timeout_and_truncation() -> None:
    async def test(server: StandInSandboxServer, client: SandboxClient) -> None:
        error = await client.run("raise KeyError('k')")
        assert error.status == "error"
        assert "KeyError" in error.stderr
        memory = await client.run("x = bytearray(10 * 1024 ** 3)")
        assert memory.status == "memory"
        timeout = await client.run("while True: pass", timeout=1)
        assert timeout.status == "timeout"
        flood = await client.run("print('z' * 5000)")
        assert flood.status == "ok"
        assert flood.stdout_truncated and flood.stdout == "z" * 200
        shell = await client.run("echo hi", language="shell")
        assert shell.stdout == "hi\n"

    with_server(test)


def test_client_server_failure_raises() -> None:
    async def test(server: StandInSandboxServer, client: SandboxClient) -> None:
        server.fail_next_with = 500
        with pytest.raises(ScoringError, match="HTTP 500"):
            await client.run("print(1)")

    with_server(test)


def test_client_unreachable_raises() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    async def main() -> None:
        async with SandboxClient(f"http://127.0.0.1:{port}") as client:
            await client.run("print(1)")

    with pytest.raises(ScoringError, match="unreachable"):
        asyncio.run(main())


def test_humaneval_through_remote_sandbox() -> None:
    """The remote API sends no exit code: scoring must rely on its end-of-tests marker."""
    problem = {
        "task_id": "toy/0",
        "prompt": 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n',
        "entry_point": "add",
        "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
    }

    async def test(server: StandInSandboxServer, client: SandboxClient) -> None:
        good = await score_humaneval(problem, "    return a + b\n", executor=client)
        assert good.reward == 1.0, good.details
        wrong = await score_humaneval(problem, "    return a - b\n", executor=client)
        assert wrong.reward == 0.0
        assert wrong.details["status"] == "error"
        assert "Traceback" in wrong.details["stderr_tail"]
        cheat = await score_humaneval(problem, "```python\nimport sys\nsys.exit(0)\n```", executor=client)
        assert cheat.reward == 0.0

    with_server(test)


# --------------------------------------------------------------------------- (h) privileges


PRIVILEGES = """
import os, subprocess, sys
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
print("NNP", status["NoNewPrivs"].strip())
print("NOSUID", bool(os.statvfs("/").f_flag & os.ST_NOSUID))
print("EUID_VIA_SETUID", subprocess.run([sys.argv[1] if len(sys.argv) > 1 else {suid!r}, "-u"],
      capture_output=True, text=True).stdout.strip())
"""


@needs_namespaces
@needs_uid_drop
def test_setuid_binaries_give_no_root_back() -> None:
    """A setuid-root copy of ``id`` would report euid 0 without nosuid and no_new_privs."""
    # Under /usr: the sandbox hides every top-level directory but the system ones.
    holder = Path(tempfile.mkdtemp(prefix="nel-suid-", dir="/usr/local"))
    try:
        os.chmod(holder, 0o755)
        suid = holder / "id"
        suid.write_bytes(Path("/usr/bin/id").read_bytes())
        os.chmod(suid, 0o4755)
        assert os.stat(suid).st_mode & 0o4000
        result = run(PRIVILEGES.format(suid=str(suid)))
    finally:
        for child in holder.iterdir():
            child.unlink()
        holder.rmdir()
    assert result.status == "ok", result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["NNP"] == "1"
    assert lines["NOSUID"] == "True"
    assert lines["EUID_VIA_SETUID"] == str(result.isolation["uid"])
    assert result.isolation["nosuid_root"] is True and result.isolation["no_new_privs"] is True


def test_no_new_privs_in_plain_mode_too() -> None:
    result = run("print(open('/proc/self/status').read().split('NoNewPrivs:')[1].split()[0])", isolate=False)
    assert result.stdout.strip() == "1"


def test_top_level_dirs_other_than_the_systems_are_hidden() -> None:
    """Another venv or checkout on the machine (/work, /opt, /srv, ...) may ship a benchmark's
    answers; the sandbox sees only the system directories of /."""
    holder = Path(tempfile.mkdtemp(prefix="nel-answers-", dir="/srv" if os.path.isdir("/srv") else "/mnt"))
    try:
        (holder / "answers.txt").write_text("42")
        os.chmod(holder, 0o755)
        os.chmod(holder / "answers.txt", 0o644)
        result = run(f"import os\nprint(os.path.exists({str(holder / 'answers.txt')!r}))")
    finally:
        (holder / "answers.txt").unlink()
        holder.rmdir()
    assert result.status == "ok", result.stderr
    assert result.stdout.strip() == "False"
