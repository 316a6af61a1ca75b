"""The house has no import cycles: every import among edgeprune's modules, deferred ones inside functions
included, forms a directed acyclic graph (a deferred import is still a dependency)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import edgeprune

PKG = Path(edgeprune.__file__).parent


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(PKG.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
            skip.update(id(x) for x in ast.walk(n))
    return skip


def import_graph() -> dict[str, set[str]]:
    """module -> the edgeprune modules it imports (``from . import sub`` points at the submodule)."""
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        base = m.split(".") if f.name == "__init__.py" else m.split(".")[:-1]
        tree = ast.parse(f.read_text())
        skip = _type_checking_nodes(tree)
        for n in ast.walk(tree):
            if id(n) in skip:
                continue
            targets: list[str] = []
            if isinstance(n, ast.Import):
                targets = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom):
                mod = ".".join(base[: len(base) - (n.level - 1)] + ([n.module] if n.module else [])) if n.level else (n.module or "")
                subs = [f"{mod}.{a.name}" for a in n.names if f"{mod}.{a.name}" in mods]
                targets = subs if len(subs) == len(n.names) else [mod, *subs]
            edges[m].update(t for t in targets if t in mods and t != m)
    return edges


def test_graph_sees_known_edges():
    g = import_graph()
    assert "edgeprune.surgery.plan" in g["edgeprune.surgery"]  # the finder reads relative imports
    assert len(g) > 40


def test_no_import_cycles():
    try:
        tuple(graphlib.TopologicalSorter(import_graph()).static_order())
    except graphlib.CycleError as e:
        raise AssertionError(f"import cycle among edgeprune's modules: {' -> '.join(e.args[1])}") from None


def test_cycle_is_detected():
    sorter = graphlib.TopologicalSorter({"a": {"b"}, "b": {"a"}})
    try:
        tuple(sorter.static_order())
    except graphlib.CycleError:
        return
    raise AssertionError("graphlib did not report a two-module cycle")
