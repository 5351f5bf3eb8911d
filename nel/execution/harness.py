"""The program nel runs inside the sandbox around model-written code, and the wire format.

This file is two things at once, so that the format has one home:

* nel imports it for :func:`encode` / :func:`decode`, the plain-data wire format;
* :mod:`nel.execution.testcases` copies its source into the sandbox as the program to run
  (standard library only, no nel imports), next to the code under test and a ``setup.json``.

Inside the sandbox it speaks JSON lines: one request on stdin, one reply on stdout. Before it
runs any of the code under test it moves the channel to private file descriptors and points
fd 0 at ``/dev/null`` and fd 1 at stderr, so what the code prints never lands in the channel
by accident. On purpose it can (the code runs in this very process and may rewrite anything
here): that is fine, because nothing here decides a verdict. This side only *reports
outputs*; nel compares them with expected values this process never sees.

Modes (``setup.json`` ``mode``):

``call``
    Run the source as ``__main__``, then answer ``{"args": [...]}`` with the target's return
    value: ``{"ok": true, "value": <encoded>}``, or ``{"ok": false, "error": "..."}``.
``stdio``
    Run the source, then answer ``{"input": "..."}`` by calling the zero-argument target with
    ``sys.stdin`` reading the input (and ``open()`` returning it, as LiveCodeBench's grader
    does), ``sys.stdout`` captured: ``{"ok": true, "stdout": "..."}``.
``checker``
    The trusted side of a test that calls the candidate itself (HumanEval's
    ``check(candidate)``): run the test source, call ``check`` with a stand-in candidate that
    sends each call as ``{"call": [...]}`` and waits for ``{"ok": ..., "value": ...}`` (bound
    to ``candidate_name`` too, for tests that call the function by its name); end
    with ``{"done": true}`` or ``{"done": false, "error": "..."}``. This process never runs
    the code under test: nel relays calls to a separate sandbox that does.

The wire format is JSON with tags for what JSON lacks: ``{"$tuple": [...]}``,
``{"$dict": [[k, v], ...]}`` (any keys), ``{"$set": [...]}``, ``{"$frozenset": [...]}``,
``{"$bytes": "<hex>"}``, ``{"$complex": [re, im]}``, ``{"$float": "nan"|"inf"|"-inf"}``,
``{"$int": "<hex>"}`` (integers too long for JSON's decimal digits).
Only exact built-in types travel. A value of a *subclass* of int, float, str, list, tuple or
dict is sent as its plain value, read with the base type's own methods (never the subclass's
``__eq__``, ``__iter__``, ...); a numpy scalar as its ``.item()``; anything else is
"not plain data" and fails the test.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import traceback
from typing import Any

MAX_DEPTH = 100
_BIG = 1 << 12000  # about 3,600 decimal digits


class NotPlainData(TypeError):
    """A value that has no plain-data form (an object, a function, a numpy array, ...)."""


def encode(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-ready plain data (see the module doc); raises :class:`NotPlainData`."""
    if depth > MAX_DEPTH:
        raise NotPlainData(f"nested deeper than {MAX_DEPTH}")
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:  # past ~4,000 digits Python's decimal int parsing refuses: send hex
        return value if -_BIG < value < _BIG else {"$int": hex(value)}
    if kind is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if kind is list:
        return [encode(item, depth + 1) for item in list.__iter__(value)]
    if kind is tuple:
        return {"$tuple": [encode(item, depth + 1) for item in tuple.__iter__(value)]}
    if kind is dict:
        return {"$dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in dict.items(value)]}
    if kind is set or kind is frozenset:
        items = [
            encode(item, depth + 1) for item in (set.__iter__ if kind is set else frozenset.__iter__)(value)
        ]
        return {"$" + kind.__name__: items}
    if kind is bytes:
        return {"$bytes": value.hex()}
    if kind is complex:
        return {"$complex": [encode(value.real), encode(value.imag)]}
    return encode(_plain_base(value), depth + 1)


def _plain_base(value: Any) -> Any:
    """The plain value under a subclass of a built-in type, or a numpy scalar's value."""
    readers: tuple[tuple[type, Any], ...] = (
        (bool, bool.__bool__), (int, int.__int__), (float, float.__float__), (str, str.__str__),
        (list, lambda v: list(list.__iter__(v))), (tuple, lambda v: tuple(tuple.__iter__(v))),
        (dict, lambda v: dict(dict.items(v))),
    )  # fmt: skip
    for base, read in readers:
        if isinstance(value, base):
            return read(value)
    module = getattr(type(value), "__module__", "") or ""
    if module.split(".")[0] == "numpy" and type(value).__name__ != "ndarray" and hasattr(value, "item"):
        item = value.item()
        if type(item) in (bool, int, float, complex, str, bytes):
            return item
    raise NotPlainData(f"{type(value).__module__}.{type(value).__qualname__} is not plain data")


_TAGS = {"$tuple", "$dict", "$set", "$frozenset", "$bytes", "$complex", "$float", "$int"}


def decode(data: Any, depth: int = 0) -> Any:
    """The Python value of wire data made by :func:`encode`; ValueError for anything else."""
    if depth > MAX_DEPTH + 2:
        raise ValueError("wire data nested too deep")
    kind = type(data)
    if data is None or kind in (bool, int, float, str):
        return data
    if kind is list:
        return [decode(item, depth + 1) for item in data]
    if kind is dict and len(data) == 1:
        tag, body = next(iter(data.items()))
        if tag in _TAGS:
            return _decode_tagged(tag, body, depth)
    raise ValueError(f"not wire data: {str(data)[:100]}")


def _decode_tagged(tag: str, body: Any, depth: int) -> Any:
    if tag == "$float":
        if body not in ("nan", "inf", "-inf"):
            raise ValueError(f"bad $float {body!r}")
        return float(body)
    if tag == "$bytes":
        return bytes.fromhex(str(body))
    if tag == "$int":
        return int(str(body), 16)
    if type(body) is not list:
        raise ValueError(f"{tag} needs a list")
    items = [decode(item, depth + 1) for item in body]
    if tag == "$tuple":
        return tuple(items)
    if tag == "$set":
        return set(items)
    if tag == "$frozenset":
        return frozenset(items)
    if tag == "$complex":
        real, imag = items
        return complex(real, imag)
    if any(type(pair) is not list or len(pair) != 2 for pair in items):
        raise ValueError("$dict needs [key, value] pairs")
    return {key: value for key, value in items}


def dumps(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode("ascii")


# --------------------------------------------------------------------------- sandbox side


def _error(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]


class _Channel:
    """The request/reply lines, on file descriptors the code under test was not handed."""

    def __init__(self) -> None:
        self._in = os.fdopen(os.dup(0), "rb")
        self._out = os.fdopen(os.dup(1), "wb")
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(2, 1)

    def read(self) -> Any:
        line = self._in.readline()
        return json.loads(line) if line else None

    def write(self, message: dict[str, Any]) -> None:
        try:
            data = dumps(message)
        except (TypeError, ValueError) as exc:
            data = dumps({"ok": False, "error": f"reply cannot be sent: {exc!r}"})
        self._out.write(data + b"\n")
        self._out.flush()


def _load(setup: dict[str, Any]) -> dict[str, Any]:
    with open(setup["source"], encoding="utf-8") as handle:
        source = handle.read()
    namespace: dict[str, Any] = {
        "__name__": setup.get("module_name") or "__main__",
        "__builtins__": __builtins__,
    }
    exec(compile(source, setup["source"], "exec"), namespace)
    return namespace


def _target(namespace: dict[str, Any], setup: dict[str, Any]) -> Any:
    owner = setup.get("instantiate")
    if owner:
        return getattr(namespace[owner](), setup["target"])
    return namespace[setup["target"]]


def _call(target: Any, request: dict[str, Any]) -> dict[str, Any]:
    try:
        value = target(*decode(request["args"]))
    except BaseException as exc:  # SystemExit included: the call did not return
        return {"ok": False, "error": _error(exc)}
    try:
        return {"ok": True, "value": encode(value)}
    except BaseException as exc:
        return {"ok": False, "error": f"the return value is not plain data: {exc}"}


def _stdio(target: Any, request: dict[str, Any]) -> dict[str, Any]:
    import builtins

    text = str(request["input"])
    captured = io.StringIO()
    saved = sys.stdin, sys.stdout, builtins.open
    sys.stdin, sys.stdout = io.StringIO(text), captured
    builtins.open = lambda *args, **kwargs: io.StringIO(text)  # type: ignore[assignment]
    try:
        target()
    except SystemExit:
        pass
    except BaseException as exc:
        return {"ok": False, "error": _error(exc)}
    finally:
        sys.stdin, sys.stdout, builtins.open = saved
    return {"ok": True, "stdout": captured.getvalue()}


def _serve(channel: _Channel, setup: dict[str, Any]) -> None:
    try:
        target = _target(_load(setup), setup)
    except BaseException as exc:
        channel.write({"ready": False, "error": _error(exc)})
        return
    channel.write({"ready": True})
    answer = _stdio if setup["mode"] == "stdio" else _call
    while True:
        request = channel.read()
        if request is None:
            return
        channel.write(answer(target, request))


class CandidateFailed(Exception):
    """Raised in the checker where the candidate raised (or returned no plain data)."""


def _check(channel: _Channel, setup: dict[str, Any]) -> None:
    def candidate(*args: Any) -> Any:
        channel.write({"call": encode(list(args))})
        reply = channel.read()
        if reply is None:
            raise SystemExit(3)
        if not reply.get("ok"):
            raise CandidateFailed(str(reply.get("error", "the candidate failed")))
        return decode(reply["value"])

    try:
        namespace = _load(setup)
        check = namespace[setup["target"]]
        if setup.get("candidate_name"):  # tests may also call the candidate by its own name
            namespace[setup["candidate_name"]] = candidate
    except BaseException as exc:
        channel.write({"ready": False, "error": _error(exc)})
        return
    channel.write({"ready": True})
    try:
        check(candidate)
    except BaseException as exc:
        channel.write({"done": False, "error": _error(exc)})
        return
    channel.write({"done": True})


def main() -> None:
    sys.set_int_max_str_digits(0) if hasattr(sys, "set_int_max_str_digits") else None
    with open("setup.json", encoding="utf-8") as handle:
        setup = json.load(handle)
    channel = _Channel()
    if setup["mode"] == "checker":
        _check(channel, setup)
    else:
        _serve(channel, setup)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
