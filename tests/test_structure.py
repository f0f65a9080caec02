"""The package's structure: no import cycles, no private names imported across modules, and the type check.

The import graph is read from the source (``ast``), every ``import`` counted wherever it stands (a
function-local import is still a dependency) except those under ``if TYPE_CHECKING:``. ``from P import n``
is an edge to the module ``P.n`` when that is a module, else to ``P``; the implicit import of a
module's parent package is not counted (that is how packages work, not a dependency)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "dfkd_jax"
# the benchmarks are leaving the package for a top-level folder; until then they are not held to this
EXCLUDED = ("dfkd_jax.bench",)


def _modules() -> dict[str, str]:
    mods = {}
    for folder, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                name = name[: -len(".__init__")] if name.endswith(".__init__") else name
                if not name.startswith(EXCLUDED):
                    mods[name] = path
    return mods


def _imports(name: str, path: str, mods: dict[str, str]):
    """``(target module, imported names)`` of every import of the package in the module, TYPE_CHECKING
    blocks left out."""
    tree = ast.parse(open(path).read())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == PACKAGE:
                    yield a.name, ()
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                keep = len(parts) - node.level + (1 if path.endswith("__init__.py") else 0)
                base = ".".join(parts[:keep] + ([node.module] if node.module else []))
            if base.split(".")[0] != PACKAGE:
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                yield (sub, ()) if sub in mods else (base, (a.name,))


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: {t for t, _ in _imports(m, p, mods) if t in mods and t != m} for m, p in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = _graph()
    assert "dfkd_jax.engine.distiller" in graph and graph["dfkd_jax.engine.distiller"]  # the graph is read
    assert _cycles(graph) == []


def test_no_private_names_imported_across_modules():
    mods = _modules()
    private = [f"{m}: {t}.{n}" for m, p in mods.items() for t, names in _imports(m, p, mods) for n in names
               if n.startswith("_") and t != m]
    assert private == []


def test_core_is_below_engine_and_synthesis():
    """The core layer imports nothing of the package but the errors (dependencies point down)."""
    graph = _graph()
    for m, targets in graph.items():
        if m.startswith("dfkd_jax.core"):
            assert all(t.startswith("dfkd_jax.core") or t == "dfkd_jax.errors" for t in targets), (m, targets)


def test_type_check():
    """mypy (the dev extra) on the package, with pyproject.toml's [tool.mypy] settings."""
    if shutil.which("mypy", path=os.path.dirname(sys.executable)) is None:
        try:
            import mypy  # noqa: F401
        except ImportError:
            if os.environ.get("DFKD_JAX_REQUIRE_EXTRAS"):
                pytest.fail("mypy is not installed: run `bash tools/install.sh --dev`.")
            pytest.skip("mypy is not installed (the dev extra)")
    cache = os.path.join(os.environ.get("DFKD_JAX_CACHE", "/tmp"), "mypy_cache")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", cache], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
