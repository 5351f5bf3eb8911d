"""A SciCode test case split in two: what runs beside the model's code, and the verdict, which does not.

A SciCode test is Python that compares the step's function's output with ``target``, a value
from SciCode's ``test_data.h5`` (``assert np.allclose(f(x), target)``, ``a, b = target`` then
asserts on ``a`` and ``b``, helpers such as ``cmp_tuple_or_list``). Upstream runs it in the
model's process with the targets loaded there. nel never lets the targets (or the verdict)
into that process. :func:`plan_test` walks the test's statements in order:

* a statement that needs nothing of the sandbox (imports, functions and assignments built
  only from constants, ``numpy``/``scipy``/``sympy``/``math``, SciCode's comparison helpers
  and earlier such names) runs on **both** sides, so the inputs the model's code receives and
  the tolerances the verdict uses are nel's own values (the model's code cannot rebind them);
* the other plain statements run only in the sandbox (they call the model's functions);
* every statement that touches ``target`` (or a name unpacked from it) and every ``assert``
  runs **in nel**. Its sub-expressions that need the sandbox (``f(x)``, a sandbox variable)
  become *holes*: the sandbox evaluates each hole in order and reports its value as plain data;
  nel fills the holes in and evaluates the rest (the comparison, the tolerance, ``target``).

A test that would hand ``target`` to a sandbox function cannot be split and fails
(``unsupported``); none of SciCode's 1,082 tests does.
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass, field

__all__ = ["NEL_MODULES", "TestPlan", "UnsupportedTest", "plan_test"]

NEL_MODULES = {"np": "numpy", "numpy": "numpy", "scipy": "scipy", "sympy": "sympy", "math": "math"}
HELPERS = frozenset({"cmp_tuple_or_list", "are_dicts_close", "are_csc_matrix_close", "process_symbol_in_dict"})
_BUILTINS = frozenset(dir(builtins))
_SCICODE_IMPORT = re.compile(r"^\s*(from\s+scicode\.|import\s+scicode)\b")
_STRUCTURAL = (ast.Compare, ast.BoolOp, ast.UnaryOp)
HOLE = "__nel_hole_{}"


class UnsupportedTest(ValueError):
    """A test statement nel cannot split (it would give ``target`` to sandbox code)."""


@dataclass
class TestPlan:
    """``sandbox``: ``("exec", source)`` / ``("eval", source)`` in order (each ``eval`` is a hole,
    its value reported); ``nel``: ``("exec" | "assert", source)`` run in nel in order, after the
    holes, with hole ``i`` bound to ``HOLE.format(i)``."""

    sandbox: list[tuple[str, str]] = field(default_factory=list)
    nel: list[tuple[str, str]] = field(default_factory=list)
    holes: int = 0


def _loads(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _stores(node: ast.AST) -> set[str]:
    names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        names.add(node.name)
    return names


def _free_names(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> set[str]:
    """Names a definition reads that it does not bind itself."""
    bound = {a.arg for a in ast.walk(node) if isinstance(a, ast.arg)} | _stores(node)
    bound |= {n.name for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    return _loads(node) - bound


def _is_random(node: ast.AST) -> bool:
    """Calls ``random`` / ``np.random``: such a value differs between the two sides."""
    return any(isinstance(n, ast.Attribute) and n.attr == "random" for n in ast.walk(node)) or "random" in _loads(
        node
    )


class _Planner:
    def __init__(self) -> None:
        self.plan = TestPlan()
        self.known = set(NEL_MODULES) | HELPERS  # names nel can evaluate itself
        self.tainted = {"target"}

    def statement(self, node: ast.stmt) -> None:
        source = ast.unparse(node)
        reads = _loads(node)
        if isinstance(node, ast.Assert) or reads & self.tainted:
            self._in_nel(node)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            self.plan.sandbox.append(("exec", source))
            self.plan.nel.append(("exec", source))
            self.known |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.plan.sandbox.append(("exec", source))
            if _free_names(node) <= self.known | _BUILTINS:
                self.plan.nel.append(("exec", source))
                self.known.add(node.name)
            else:
                self.known.discard(node.name)
        elif isinstance(node, ast.Assign) and reads <= self.known | _BUILTINS and not _is_random(node):
            self.plan.sandbox.append(("exec", source))
            self.plan.nel.append(("exec", source))
            self.known |= _stores(node)
        else:
            self.plan.sandbox.append(("exec", source))
            self.known -= _stores(node)

    def _in_nel(self, node: ast.stmt) -> None:
        if not isinstance(node, (ast.Assert, ast.Assign)):
            raise UnsupportedTest(f"cannot run in nel: {ast.unparse(node)[:200]}")
        if isinstance(node, ast.Assert):
            self.plan.nel.append(("assert", ast.unparse(self._carve(node.test))))
            return
        value = self._carve(node.value)
        self.plan.nel.append(("exec", ast.unparse(ast.Assign(targets=node.targets, value=value, lineno=0))))
        stored = _stores(node)
        if _loads(node.value) & self.tainted:
            self.tainted |= stored
        self.known |= stored

    def _carve(self, node: ast.expr) -> ast.expr:
        """``node`` with every sub-expression that needs the sandbox replaced by a hole."""
        local = _comprehension_names(node)
        reads = _loads(node) - local
        if reads <= self.known | self.tainted | _BUILTINS:
            return node
        needs_target = bool(reads & self.tainted)
        trusted_call = isinstance(node, ast.Call) and _loads(node.func) <= self.known | _BUILTINS
        if not needs_target and not isinstance(node, _STRUCTURAL) and not trusted_call:
            index = self.plan.holes
            self.plan.sandbox.append(("eval", ast.unparse(node)))
            self.plan.holes += 1
            return ast.Name(id=HOLE.format(index), ctx=ast.Load())
        if isinstance(node, ast.Call) and not trusted_call:
            raise UnsupportedTest(f"gives target to sandbox code: {ast.unparse(node)[:200]}")
        added = local - self.known  # a comprehension kept in nel binds its variables in nel
        self.known |= added
        try:
            return _Carver(self).visit(node)  # type: ignore[no-any-return]
        finally:
            self.known -= added


def _comprehension_names(node: ast.AST) -> set[str]:
    return {
        n.id for c in ast.walk(node) if isinstance(c, ast.comprehension)
        for n in ast.walk(c.target) if isinstance(n, ast.Name)
    }  # fmt: skip


class _Carver(ast.NodeTransformer):
    """Carves the direct sub-expressions of one node (the node itself stays in nel)."""

    def __init__(self, planner: _Planner) -> None:
        self.planner = planner
        self.top = True

    def generic_visit(self, node: ast.AST) -> ast.AST:
        if self.top:
            self.top = False
            return super().generic_visit(node)
        if isinstance(node, ast.expr) and not isinstance(node, (ast.Name, ast.Constant)) or (
            isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
        ):
            return self.planner._carve(node)  # type: ignore[arg-type]
        return super().generic_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:  # noqa: N802 (ast's visitor naming)
        return self.generic_visit(node)


def plan_test(test: str) -> TestPlan:
    """Split one SciCode test case (see the module doc); UnsupportedTest where it cannot be."""
    source = "\n".join(line for line in test.split("\n") if not _SCICODE_IMPORT.match(line))
    planner = _Planner()
    for node in ast.parse(source).body:
        planner.statement(node)
    return planner.plan
