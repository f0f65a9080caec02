"""The package's layering, read from the source (no import): the engine distils a teacher it is given and never
trains one; the benchmark harness lives in its own modules, not in the package's face."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "dfkd_jax")


def imported_modules(path: str) -> set[str]:
    """Every module an import statement in ``path`` names, at any depth (function-level imports included)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_the_engine_receives_its_teacher():
    engine = os.path.join(PACKAGE, "engine")
    files = sorted(f for f in os.listdir(engine) if f.endswith(".py"))
    assert "loop.py" in files and "distiller.py" in files
    for name in files:
        used = imported_modules(os.path.join(engine, name))
        assert not used & {"dfkd_jax.supervised", "dfkd_jax.obtain"}, name  # obtaining a teacher is main's job


def test_the_bench_package_only_re_exports():
    path = os.path.join(PACKAGE, "bench", "__init__.py")
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    kinds = {type(node).__name__ for node in tree.body}
    assert kinds <= {"Expr", "ImportFrom", "Import", "Assign"}, kinds  # docstring, imports and __all__ only
    assert os.path.isfile(os.path.join(PACKAGE, "bench", "harness.py"))
