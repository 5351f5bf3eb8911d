"""No import circles in nel/: the design's one-way imports, checked on the source itself.

Every module is parsed (not imported) and every import in it counts: top-level, inside a
function (a function-level import hides a circle, it does not remove one), and lazy loads by name:
``importlib.import_module("nel.x")`` and registry entries spelled ``"nel.x:Class"``. (A module
name in any other string, such as a logger's or ``python -m nel.x``, imports nothing.)
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

NEL = Path(__file__).resolve().parents[1] / "nel"
_ENTRY = re.compile(r"^(nel(?:\.\w+)+):\w+$")  # "nel.backends.local:LocalBackend"


def modules() -> dict[str, Path]:
    found = {}
    for path in NEL.rglob("*.py"):
        parts = list(path.relative_to(NEL.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: set[str | None] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                edges.update(resolve(a.name) for a in node.names if a.name.split(".")[0] == "nel")
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                if base.split(".")[0] != "nel":
                    continue
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    edges.add(full if full in mods else resolve(base))
            elif isinstance(node, ast.Call) and _lazy_import(node):
                edges.add(resolve(node.args[0].value))  # type: ignore[attr-defined]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                match = _ENTRY.match(node.value)
                if match:
                    edges.add(resolve(match.group(1)))
        edges.discard(name)
        edges.discard(None)
        graph[name] = {e for e in edges if e is not None}
    return graph


def _lazy_import(call: ast.Call) -> bool:
    """``importlib.import_module("nel....")`` (or ``import_module(...)``) with a literal name."""
    func = call.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id == "import_module"
    )
    return (
        named
        and bool(call.args)
        and isinstance(call.args[0], ast.Constant)
        and str(call.args[0].value).startswith("nel.")
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each as a list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_function_level_and_lazy_imports() -> None:
    graph = import_graph()
    assert len(graph) > 40
    assert "nel.runner" in graph["nel.backends.local"]  # imported inside a method
    assert {"nel.backends.local", "nel.backends.slurm"} <= graph["nel.backends"]  # registry by name
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nel_has_no_import_circle() -> None:
    found = cycles(import_graph())
    assert not found, "import circles in nel/: " + "; ".join(" <-> ".join(c) for c in found)
