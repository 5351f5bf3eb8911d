"""A process pool for CPU-bound scoring, awaited from asyncio.

Scorers such as the math grader run SymPy, which can take seconds on a pathological answer
and can even hang inside C code. They must not block the event loop that drives the model
requests, and the usual timeout tricks do not work there: ``signal.alarm`` only works in a
process's main thread. ``ScoringPool`` therefore runs each call in a worker process:

* The worker arms ``setitimer(ITIMER_REAL)`` around every item, so a call stuck in Python code
  is interrupted after ``timeout`` seconds (soft timeout). The interrupting exception derives
  from ``BaseException``, so library code that catches ``Exception`` cannot swallow it.
* The parent watches every worker through a small shared-memory slot (current item and its
  start time). A worker still on the same item ``timeout + grace`` seconds after it started
  (stuck in C code, signals blocked, ...) is killed and replaced; that item fails with
  :class:`ScoringTimeoutError` and the worker's other queued items are sent again.
* A worker that dies (segfault, OOM kill) fails only the item it was running.

Throughput: cheap items (a few microseconds of work) would drown in per-item IPC, so the
parent groups pending items into chunks (one pickle and one socket write per chunk), keeps up
to two chunks in flight per worker so workers never wait for the parent, and reads results in
batches. All of this runs on the event loop's own thread through ``add_reader`` /
``add_writer`` on non-blocking sockets: no helper threads, no GIL hand-offs.

Usage::

    with ScoringPool(workers=4, preload=["nel.scoring.math"]) as pool:
        value = await pool.run(some_module_level_fn, arg1, arg2, timeout=10.0)

Rules for ``fn``: a picklable module-level function of an importable module (workers do not
import the caller's ``__main__`` script); arguments and return value picklable;
pure or at least idempotent (an item can run twice when its worker is killed while other items
were queued behind it); it must not use ``SIGALRM``/``ITIMER_REAL`` itself when called with a
``timeout`` (the worker's timer owns them), and it cannot start child processes (workers are
daemonic).

Limits: POSIX only (``setitimer``, fd passing). A pool serves one event loop at a time; it may
move to a new loop once the previous one has finished (e.g. successive ``asyncio.run`` calls).
It is not thread-safe: call ``run`` and ``close`` from the loop's thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib
import itertools
import math
import multiprocessing
import os
import pickle
import signal
import socket
import struct
import sys
import time
import traceback
import types
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from nel.errors import ScoringError, ScoringTaskError, ScoringTimeoutError

__all__ = ["ScoringPool", "ScoringTaskError", "ScoringTimeoutError"]

_HEADER = struct.Struct("!Q")
_OK, _ERROR, _TIMEOUT = 0, 1, 2
_PICKLE = pickle.HIGHEST_PROTOCOL
_DEPTH = 2  # chunks in flight per worker
_FLUSH_S = 0.02  # a worker sends partial results of a chunk after this long
_MAX_REQUEUES = 2  # an item whose worker died this often without it being at fault fails
_MAX_STARTUP_FAILURES = 3  # consecutive workers dying before they are ready -> pool broken
_STEAL_AFTER_S = 0.1  # an item this far past its timeout: move the items queued behind it
# progress slot layout (doubles): current item id, its start (time.monotonic), ready flag
_P_ITEM, _P_START, _P_READY = 0, 1, 2


# --------------------------------------------------------------------------------------------
# worker side


class _ItemTimeout(BaseException):
    """Raised by SIGALRM inside a worker; not an Exception so that libraries cannot catch it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _ItemTimeout()


def _describe(exc: BaseException) -> tuple[str, str, str]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 (a broken __str__ must not kill the worker)
        text = "<unprintable>"
    return type(exc).__name__, text, tb


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the process that started us exits (best effort)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001, S110 (an optional safety net)
        pass


def _worker_send(sock: socket.socket, chunk_id: int, done: bool, results: list) -> None:
    try:
        data = pickle.dumps((chunk_id, done, results), _PICKLE)
    except Exception:  # noqa: BLE001 (pickling can raise anything; find the culprit below)
        fixed = []
        for item_id, status, payload in results:
            try:
                pickle.dumps(payload, _PICKLE)
            except Exception as exc:  # noqa: BLE001
                status, payload = _ERROR, _describe(TypeError(f"scoring result cannot be pickled: {exc!r}"))
            fixed.append((item_id, status, payload))
        data = pickle.dumps((chunk_id, done, fixed), _PICKLE)
    sock.sendall(_HEADER.pack(len(data)) + data)


def _worker_main(sock: socket.socket, progress: Any, preload: tuple[str, ...]) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    for name in preload:
        importlib.import_module(name)
    signal.signal(signal.SIGALRM, _on_alarm)
    # Late import: the generic pool must not depend on the math scorer, but a function that
    # raises ScoringTimeoutError by itself (its own timer) is reported as a timeout.
    timeout_error = ScoringTimeoutError
    setitimer, itimer = signal.setitimer, signal.ITIMER_REAL
    monotonic = time.monotonic
    rfile = sock.makefile("rb")
    progress[_P_READY] = 1.0
    while True:
        header = rfile.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return  # parent closed the socket
        (size,) = _HEADER.unpack(header)
        data = rfile.read(size)
        if len(data) < size:
            return
        chunk_id, ids, timeouts, body = pickle.loads(data)
        try:
            calls = pickle.loads(body)
        except BaseException as exc:  # noqa: BLE001 (e.g. fn not importable in the worker)
            info = _describe(exc)
            _worker_send(sock, chunk_id, True, [(i, _ERROR, info) for i in ids])
            continue
        results: list = []
        last_flush = monotonic()
        n = len(ids)
        for k in range(n):
            item_id = ids[k]
            limit = timeouts[k]
            fn, args = calls[k]
            progress[_P_ITEM] = item_id
            progress[_P_START] = monotonic()
            try:
                if limit:
                    setitimer(itimer, limit)
                try:
                    value = fn(*args)
                finally:
                    if limit:
                        setitimer(itimer, 0)
                result = (item_id, _OK, value)
            except _ItemTimeout:
                result = (item_id, _TIMEOUT, None)
            except timeout_error:
                result = (item_id, _TIMEOUT, None)
            except BaseException as exc:  # noqa: BLE001 (every failure is the item's result)
                result = (item_id, _ERROR, _describe(exc))
            progress[_P_START] = 0.0
            results.append(result)
            if k + 1 < n and monotonic() - last_flush > _FLUSH_S:
                _worker_send(sock, chunk_id, False, results)
                results = []
                last_flush = monotonic()
        _worker_send(sock, chunk_id, True, results)


# --------------------------------------------------------------------------------------------
# parent side


class _Item:
    __slots__ = ("args", "fn", "fut", "id", "requeues", "timeout")

    def __init__(self, item_id: int, fn: Callable, args: tuple, timeout: float | None, fut):
        self.id = item_id
        self.fn = fn
        self.args = args
        self.timeout = timeout
        self.fut = fut
        self.requeues = 0


class _Worker:
    __slots__ = (
        "alive",
        "chunks",
        "fd",
        "ghosts",
        "inbuf",
        "inflight",
        "outbuf",
        "proc",
        "progress",
        "sock",
        "stalled",
    )

    def __init__(self, proc, sock: socket.socket, progress) -> None:
        self.proc = proc
        self.sock = sock
        self.fd = sock.fileno()
        self.progress = progress
        self.inflight: dict[int, _Item] = {}  # item id -> item, in send order
        # items taken back from this worker (see _steal) that it will still run: id -> timeout
        self.ghosts: dict[int, float | None] = {}
        self.chunks: dict[int, None] = {}  # chunk ids not yet completed
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.alive = True
        self.stalled = False  # running an item past its timeout: gets no new work


def _kill_all(procs: list) -> None:
    for proc in procs:
        try:
            if proc.is_alive():
                proc.kill()
        except Exception:  # noqa: BLE001, S110 (best effort at garbage collection / exit)
            pass


@contextlib.contextmanager
def _caller_main_hidden() -> Iterator[None]:
    """Start processes without making them import the caller's ``__main__``.

    spawn and forkserver children re-import the parent's main script (as ``__mp_main__``)
    when the preparation data names its path or module (``multiprocessing.spawn.
    get_preparation_data``), so an unguarded script that uses nel would run again in every
    worker. Workers only run nel's module-level functions, so while they start, ``__main__``
    is a bare module with neither ``__file__`` nor ``__spec__``: nothing to re-import.
    """
    real = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if real is not None:
            sys.modules["__main__"] = real


def _default_context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class ScoringPool:
    """Worker processes for CPU-bound scoring calls, with an asyncio API.

    ``workers``: number of processes; ``None`` means ``os.cpu_count()``. ``0`` runs every call
    inline in the calling thread (for debugging): no process, no timeout enforcement by the
    pool (a function may still enforce its own), and the event loop blocks while it runs.

    ``grace``: seconds past an item's timeout before its worker is killed. ``max_chunk``: the
    most items sent to a worker in one message. ``preload``: modules imported in every worker
    at start (with the forkserver context they are imported once in the server and shared
    copy-on-write by all workers, so restarts are fast). ``context``: a multiprocessing
    context; default forkserver where available, else spawn (never fork: the parent runs
    threads and an event loop).
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        grace: float = 2.0,
        max_chunk: int = 64,
        preload: Iterable[str] = (),
        context: multiprocessing.context.BaseContext | None = None,
    ) -> None:
        if workers is None:
            workers = os.cpu_count() or 1
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if max_chunk < 1:
            raise ValueError(f"max_chunk must be >= 1, got {max_chunk}")
        self.workers = workers
        self.grace = grace
        self.max_chunk = max_chunk
        self._preload = tuple(preload)
        self._ctx: Any = context or _default_context()
        if self._ctx.get_start_method() == "fork":
            raise ValueError("ScoringPool needs the spawn or forkserver start method, not fork")
        if self._ctx.get_start_method() == "forkserver":
            # Only effective if this process has not started its forkserver yet. Without it the
            # forkserver would preload "__main__" (multiprocessing's default).
            self._ctx.set_forkserver_preload(["nel.execution.pool", *self._preload])
        self._ids = itertools.count(1)
        self._chunk_ids = itertools.count(1)
        self._pending: collections.deque[_Item] = collections.deque()
        self._workers: list[_Worker] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dispatch_handle: asyncio.Handle | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._startup_failures = 0
        self._broken: str | None = None
        self._closed = False
        self._procs: list = []
        self._finalizer = weakref.finalize(self, _kill_all, self._procs)
        for _ in range(workers):
            self._workers.append(self._start_worker())

    # ---------------------------------------------------------------- public API

    async def run(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        """Run ``fn(*args)`` in a worker and return its result.

        Raises :class:`ScoringTimeoutError` when the call exceeds ``timeout`` seconds (``None``:
        no limit), :class:`ScoringTaskError` when it raised or its worker died, and
        :class:`~nel.errors.ScoringError` when the pool is closed or broken.
        """
        if self._closed:
            raise ScoringError("ScoringPool is closed")
        if timeout is not None and timeout <= 0:
            timeout = None
        if self.workers == 0:
            return self._run_inline(fn, args)
        if self._broken:
            raise ScoringError(self._broken)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._attach(loop)
        fut = loop.create_future()
        self._pending.append(_Item(next(self._ids), fn, args, timeout, fut))
        if self._dispatch_handle is None:
            self._dispatch_handle = loop.call_soon(self._dispatch)
        return await fut

    def close(self) -> None:
        """Stop the workers and fail calls still waiting. Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = self._loop if self._loop is not None and not self._loop.is_closed() else None
        error = ScoringError("ScoringPool was closed")
        for w in self._workers:
            self._detach_worker(w)
            busy = bool(w.inflight)
            for item in w.inflight.values():
                self._fail(item, error)
            w.inflight.clear()
            try:
                w.sock.close()  # idle workers see EOF and exit
            except OSError:
                pass
            w.alive = False
            if busy:
                w.proc.kill()
        while self._pending:
            self._fail(self._pending.popleft(), error)
        deadline = time.monotonic() + 2.0
        for w in self._workers:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(1.0)
        if loop is not None:
            for handle in (self._dispatch_handle, self._watchdog):
                if handle is not None:
                    handle.cancel()
        self._dispatch_handle = self._watchdog = None
        self._workers.clear()
        self._procs.clear()

    def __enter__(self) -> ScoringPool:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ScoringPool:  # noqa: PYI034
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    @property
    def worker_pids(self) -> list[int]:
        """PIDs of the current worker processes (changes when a worker is replaced)."""
        return [w.proc.pid for w in self._workers if w.alive]

    # ---------------------------------------------------------------- inline mode

    @staticmethod
    def _run_inline(fn: Callable, args: tuple) -> Any:
        try:
            return fn(*args)
        except ScoringError:
            raise
        except Exception as exc:
            name, text, tb = _describe(exc)
            raise ScoringTaskError(f"{name}: {text}", exc_type=name, remote_traceback=tb) from exc

    # ---------------------------------------------------------------- workers

    def _start_worker(self) -> _Worker:
        parent_sock, child_sock = socket.socketpair()
        progress = self._ctx.RawArray("d", 3)
        proc = self._ctx.Process(
            target=_worker_main,
            args=(child_sock, progress, self._preload),
            name="nel-scoring-worker",
            daemon=True,
        )
        with _caller_main_hidden():
            proc.start()
        child_sock.close()
        parent_sock.setblocking(False)
        self._procs.append(proc)
        worker = _Worker(proc, parent_sock, progress)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.add_reader(worker.fd, self._on_readable, worker)
        return worker

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind the pool to ``loop`` (first use, or the previous loop has finished)."""
        old = self._loop
        if old is not None and not old.is_closed():
            if old.is_running():
                raise RuntimeError("ScoringPool is in use by another running event loop")
            for w in self._workers:
                self._detach_worker(w)
            for handle in (self._dispatch_handle, self._watchdog):
                if handle is not None:
                    handle.cancel()
        self._dispatch_handle = self._watchdog = None
        self._loop = loop
        # Work left from the previous loop cannot be delivered any more; a worker still busy
        # with it is replaced so that it cannot hold up (or hang) the new loop's items.
        self._pending.clear()
        for idx, w in enumerate(self._workers):
            if w.inflight or w.chunks or w.outbuf:
                w.inflight.clear()
                self._kill(w)
                self._workers[idx] = self._start_worker()
            else:
                w.inbuf.clear()
                loop.add_reader(w.fd, self._on_readable, w)

    def _detach_worker(self, w: _Worker) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.remove_reader(w.fd)
            loop.remove_writer(w.fd)

    def _kill(self, w: _Worker) -> None:
        self._detach_worker(w)
        w.alive = False
        try:
            w.proc.kill()
        except Exception:  # noqa: BLE001, S110 (already gone)
            pass
        try:
            w.sock.close()
        except OSError:
            pass
        w.proc.join(1.0)
        try:
            self._procs.remove(w.proc)
        except ValueError:
            pass

    def _replace(self, w: _Worker, *, culprit: _Item | None, error: ScoringError | None) -> None:
        """Kill ``w``, fail ``culprit`` with ``error``, re-queue its other items, restart it."""
        was_ready = w.progress[_P_READY] == 1.0
        self._kill(w)
        if culprit is not None and error is not None:
            w.inflight.pop(culprit.id, None)
            self._fail(culprit, error)
        survivors = [item for item in w.inflight.values() if not item.fut.done()]
        w.inflight.clear()
        w.chunks.clear()
        for item in reversed(survivors):
            item.requeues += 1
            if item.requeues > _MAX_REQUEUES:
                self._fail(
                    item,
                    ScoringTaskError(
                        "scoring worker died repeatedly while this item was queued", exc_type="WorkerDied"
                    ),
                )
            else:
                self._pending.appendleft(item)
        if self._closed:
            return
        if was_ready or culprit is not None:
            self._startup_failures = 0
        else:
            self._startup_failures += 1
            if self._startup_failures >= _MAX_STARTUP_FAILURES:
                self._break(
                    f"scoring workers keep dying during start-up (exit code {w.proc.exitcode}); "
                    f"check that the preload modules {list(self._preload)} import cleanly"
                )
                return
        idx = self._workers.index(w)
        self._workers[idx] = self._start_worker()
        self._schedule_dispatch()

    def _break(self, reason: str) -> None:
        self._broken = reason
        error = ScoringError(reason)
        for w in self._workers:
            for item in w.inflight.values():
                self._fail(item, error)
            w.inflight.clear()
        while self._pending:
            self._fail(self._pending.popleft(), error)

    # ---------------------------------------------------------------- dispatch

    def _schedule_dispatch(self) -> None:
        if self._dispatch_handle is None and self._loop is not None and not self._loop.is_closed():
            self._dispatch_handle = self._loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_handle = None
        pending = self._pending
        while pending:
            free = [w for w in self._workers if w.alive and not w.stalled and len(w.chunks) < _DEPTH]
            if not free:
                break
            ready = [w for w in free if w.progress[_P_READY] == 1.0]
            if ready:  # a worker still starting up only gets work when the others are full
                free = ready
            free.sort(key=lambda w: len(w.chunks))
            slots = sum(_DEPTH - len(w.chunks) for w in free)
            per = min(self.max_chunk, max(1, math.ceil(len(pending) / slots)))
            for w in free:
                batch: list[_Item] = []
                while pending and len(batch) < per:
                    item = pending.popleft()
                    if not item.fut.done():  # skip calls whose awaiter was cancelled
                        batch.append(item)
                if batch:
                    self._send_chunk(w, batch)
                if not pending:
                    break
        if self._watchdog is None and any(w.inflight for w in self._workers):
            self._arm_watchdog()

    def _send_chunk(self, w: _Worker, batch: list[_Item]) -> None:
        try:
            body = pickle.dumps([(item.fn, item.args) for item in batch], _PICKLE)
        except Exception:  # noqa: BLE001 (pickling can raise anything; find the culprits below)
            good = []
            for item in batch:
                try:
                    pickle.dumps((item.fn, item.args), _PICKLE)
                except Exception as exc:  # noqa: BLE001
                    name, text, tb = _describe(exc)
                    self._fail(
                        item,
                        ScoringTaskError(
                            f"cannot send the call to a worker: {name}: {text}",
                            exc_type=name,
                            remote_traceback=tb,
                        ),
                    )
                else:
                    good.append(item)
            if not good:
                return
            batch = good
            body = pickle.dumps([(item.fn, item.args) for item in batch], _PICKLE)
        chunk_id = next(self._chunk_ids)
        frame = pickle.dumps(
            (chunk_id, [item.id for item in batch], [item.timeout for item in batch], body),
            _PICKLE,
        )
        inflight = w.inflight
        for item in batch:
            inflight[item.id] = item
        w.chunks[chunk_id] = None
        self._write(w, _HEADER.pack(len(frame)) + frame)

    def _write(self, w: _Worker, data: bytes) -> None:
        if w.outbuf:
            w.outbuf += data
            return
        try:
            sent = w.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return  # the worker is gone; its EOF handler will clean up
        if sent < len(data):
            w.outbuf += memoryview(data)[sent:]
            self._bound_loop().add_writer(w.fd, self._on_writable, w)

    def _on_writable(self, w: _Worker) -> None:
        try:
            sent = w.sock.send(w.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._bound_loop().remove_writer(w.fd)
            return
        del w.outbuf[:sent]
        if not w.outbuf:
            self._bound_loop().remove_writer(w.fd)

    def _bound_loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "no event loop bound yet"
        return self._loop

    # ---------------------------------------------------------------- results

    def _on_readable(self, w: _Worker) -> None:
        try:
            data = w.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._on_worker_exit(w)
            return
        buf = w.inbuf
        buf += data
        size = _HEADER.size
        completed = False
        while len(buf) >= size:
            (n,) = _HEADER.unpack_from(buf)
            if len(buf) < size + n:
                break
            with memoryview(buf) as view:
                chunk_id, done, results = pickle.loads(view[size : size + n])
            del buf[: size + n]
            self._deliver(w, results)
            if done:
                w.chunks.pop(chunk_id, None)
                w.stalled = False
                completed = True
        if completed and self._pending:
            self._dispatch()

    def _deliver(self, w: _Worker, results: list) -> None:
        pop = w.inflight.pop
        ghosts = w.ghosts
        for item_id, status, payload in results:
            item = pop(item_id, None)
            if item is None:
                if ghosts:
                    ghosts.pop(item_id, None)
                continue
            fut = item.fut
            if fut.done():
                continue
            if status == _OK:
                fut.set_result(payload)
            elif status == _TIMEOUT:
                fut.set_exception(
                    ScoringTimeoutError(
                        f"scoring call exceeded its timeout of {item.timeout}s", timeout=item.timeout
                    )
                )
            else:
                name, text, tb = payload
                fut.set_exception(ScoringTaskError(f"{name}: {text}", exc_type=name, remote_traceback=tb))

    @staticmethod
    def _fail(item: _Item, error: BaseException) -> None:
        fut = item.fut
        if not fut.done() and not fut.get_loop().is_closed():
            fut.set_exception(error)

    @staticmethod
    def _current_item(w: _Worker) -> tuple[int, float]:
        """Id of the item ``w`` is running now and when it started (0, 0.0 when idle).

        Read from shared memory without a lock: the id is read twice around the start time.
        """
        p = w.progress
        first = p[_P_ITEM]
        start = p[_P_START]
        if start == 0.0 or p[_P_ITEM] != first:
            return 0, 0.0
        return int(first), start

    def _on_worker_exit(self, w: _Worker) -> None:
        if not w.alive or self._closed:
            return
        culprit = w.inflight.get(self._current_item(w)[0])
        w.proc.join(1.0)
        code = w.proc.exitcode
        error = ScoringTaskError(
            f"scoring worker process died (exit code {code}) while running this item",
            exc_type="WorkerDied",
        )
        self._replace(w, culprit=culprit, error=error)

    # ---------------------------------------------------------------- hang watchdog

    def _steal(self, w: _Worker, current: _Item) -> None:
        """``w`` is late on ``current``: give the items queued behind it to other workers.

        Results ``w`` may still send for them are ignored (they are no longer in its
        ``inflight``). ``w`` gets no new work until it finishes its chunk or is replaced.
        """
        w.stalled = True
        queued = [item for item in w.inflight.values() if item is not current]
        for item in queued:
            del w.inflight[item.id]
            w.ghosts[item.id] = item.timeout
        for item in reversed(queued):
            if not item.fut.done():
                self._pending.appendleft(item)
        if queued:
            self._schedule_dispatch()

    def _arm_watchdog(self) -> None:
        tick = min(0.25, max(0.02, self.grace / 4))
        self._watchdog = self._bound_loop().call_later(tick, self._check_hangs)

    def _check_hangs(self) -> None:
        self._watchdog = None
        now = time.monotonic()
        for w in list(self._workers):
            if not w.alive or not (w.inflight or w.ghosts):
                continue
            item_id, start = self._current_item(w)
            item = w.inflight.get(item_id)
            if item is None:
                # A ghost (taken back from this worker) can hang it as well: replace the worker
                # once the ghost is past its deadline; the ghost's owner elsewhere is unaffected.
                limit = w.ghosts.get(item_id)
                if limit is not None and now - start > limit + self.grace:
                    self._replace(w, culprit=None, error=None)
                continue
            if item.timeout is None:
                continue
            overdue = now - start - item.timeout
            if overdue > _STEAL_AFTER_S and not w.stalled:
                self._steal(w, item)
            if overdue > self.grace:
                error = ScoringTimeoutError(
                    f"scoring call exceeded its timeout of {item.timeout}s and did not respond "
                    f"to interruption; its worker was killed",
                    timeout=item.timeout,
                    hard=True,
                )
                self._replace(w, culprit=item, error=error)
        if self._pending or any(w.inflight or w.ghosts for w in self._workers):
            self._arm_watchdog()
