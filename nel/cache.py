"""The response cache (``--cache-dir``): a request answered before is answered from disk.

One file per entry, written to a unique temporary name beside it and renamed into place:
a rename is atomic on a local disk, NFS and Lustre alike, so shards of an array job that
share the directory, at once or later, never see half an entry and never need a lock; two
shards writing the same entry both write a whole one and the last rename wins. SQLite in
WAL mode needs shared memory on one host and its docs rule out network filesystems; the
figures and the reasoning are in docs/decisions.md.

The key is a hash of what decides the reply and nothing else: the route, the request body
(model, messages, sampling, tools, seed) and the sample (problem_idx, repeat), so repeats
stay distinct samples even without a seed. The endpoint URL is not in it (the same model
behind another address answers the same) and neither is the API key, which lives in a
header the cache never sees. Only replies that parsed into a completion are stored.

The cache never stops a run: an unreadable or corrupt entry is a miss (one warning per
run), and a failed write (disk full, quota, read-only) turns writing off (one warning).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from nel.errors import ConfigError, EnvironmentFault

CACHE_FORMAT = 1
"""Bumped when the key or the entry changes meaning; entries of another format live apart."""


@dataclass(frozen=True)
class CacheKey:
    """An entry's name (``digest``) and the canonical request it stands for."""

    digest: str
    request: bytes


def _stderr_warning(text: str) -> None:
    print(f"nel: warning: {text}", file=sys.stderr, flush=True)


class ResponseCache:
    """Entries under ``root/v<CACHE_FORMAT>/<first two hex digits>/<digest>.json``.

    The two-digit fan-out keeps directories at a few thousand entries for millions of
    requests (a large flat directory is slow to look up on NFS and Lustre).
    """

    def __init__(self, root: str | Path, warn: Any = _stderr_warning) -> None:
        self.root = Path(root)
        self._base = self.root / f"v{CACHE_FORMAT}"
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"--cache-dir {self.root} is a file; pass a directory (it is created if missing)")
        try:
            self._base.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EnvironmentFault(f"--cache-dir {self.root}: cannot create it ({exc.strerror or exc})") from None
        if not os.access(self._base, os.R_OK | os.W_OK | os.X_OK):
            raise EnvironmentFault(f"--cache-dir {self.root}: not readable and writable by this user")
        self._warn = warn
        self._lock = threading.Lock()  # get/put run in worker threads
        self._warned_corrupt = False
        self.writable = True
        self.hits = 0
        self.stores = 0
        self.corrupt = 0

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.root)!r})"

    @staticmethod
    def key(route: str, body: dict[str, Any], sample: tuple[int, int]) -> CacheKey:
        request = orjson.dumps(
            {"route": route, "body": body, "sample": list(sample)},
            option=orjson.OPT_SORT_KEYS,
        )
        return CacheKey(hashlib.sha256(request).hexdigest(), request)

    def path(self, key: CacheKey) -> Path:
        return self._base / key.digest[:2] / f"{key.digest}.json"

    def get(self, key: CacheKey) -> bytes | None:
        """The stored reply body, or None: a miss, or an entry that cannot be used (warned once)."""
        path = self.path(key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._corrupt(path, f"cannot read it ({exc.strerror or exc})")
            return None
        try:
            entry = orjson.loads(blob)
            if entry["format"] != CACHE_FORMAT or entry["key"] != key.digest:
                raise ValueError("it belongs to another key or format")
            reply = entry["reply"]
            if not isinstance(reply, str):
                raise TypeError("its reply is not a string")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            self._corrupt(path, str(exc) or type(exc).__name__)
            return None
        with self._lock:
            self.hits += 1
        return reply.encode()

    def put(self, key: CacheKey, reply: bytes) -> None:
        """Store ``reply`` (a 200 body that parsed) under ``key``; never raises."""
        if not self.writable:
            return
        path = self.path(key)
        entry = orjson.dumps(
            {"format": CACHE_FORMAT, "key": key.digest, "request": orjson.Fragment(key.request),
             "reply": reply.decode("utf-8", errors="replace")}  # fmt: skip
        )
        tmp = path.parent / f".{key.digest}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            path.parent.mkdir(exist_ok=True)
            with open(tmp, "xb") as handle:
                handle.write(entry)
            os.replace(tmp, path)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            with self._lock:
                first, self.writable = self.writable, False
            if first:
                self._warn(f"response cache {self.root}: cannot write ({exc.strerror or exc}); "
                           "the run goes on without storing replies")  # fmt: skip
            return
        with self._lock:
            self.stores += 1

    async def aget(self, key: CacheKey) -> bytes | None:
        # In a thread: on NFS an open() can take milliseconds, which would stall every request in flight.
        return await asyncio.to_thread(self.get, key)

    async def aput(self, key: CacheKey, reply: bytes) -> None:
        if self.writable:
            await asyncio.to_thread(self.put, key, reply)

    def unusable(self, key: CacheKey, why: str) -> None:
        """A caller found a stored reply it cannot use: counted and warned like a corrupt entry."""
        self._corrupt(self.path(key), why)

    def _corrupt(self, path: Path, why: str) -> None:
        with self._lock:
            self.corrupt += 1
            first, self._warned_corrupt = not self._warned_corrupt, True
        if first:
            self._warn(f"response cache entry {path} is unusable ({why}); treated as a miss "
                       "and replaced (further ones are not reported)")  # fmt: skip
