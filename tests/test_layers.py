"""The package's layers import only downward: the kernel layer is a plain XFRM library and the
IKE engine is sans-IO, so neither imports the other nor anything above them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "xfrmctl"
# layer -> the xfrmctl subpackages and modules it must never import (at any depth, including
# imports inside functions and under TYPE_CHECKING)
FORBIDDEN = {
    "kernel": ("ike", "daemon", "config", "cli", "client"),
    "ike": ("kernel", "daemon", "config", "cli", "client"),
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def subpackage(module: str) -> str | None:
    """`xfrmctl.ike.iana` -> `ike`; None outside xfrmctl."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "xfrmctl" else None


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_downward(layer: str) -> None:
    bad = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in sorted((PACKAGE / layer).rglob("*.py"))
        for name in sorted(imported_modules(path))
        if subpackage(name) in FORBIDDEN[layer]
    ]
    assert not bad, "\n".join(bad)


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from xfrmctl.ike.iana import EncrId\n")
    assert "xfrmctl.ike.iana" in imported_modules(module)


# ------------------------------------------------------------------ no import circle in ike/


def module_name(path: Path, root: Path) -> str:
    """`xfrmctl/ike/sa.py` -> `xfrmctl.ike.sa` for root `xfrmctl/ike` (a package's `__init__`
    is the package)."""
    parts = list(path.relative_to(root.parents[1]).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path, modules: set[str]) -> set[str]:
    """The modules of `modules` that `path` imports, however and wherever (functions,
    TYPE_CHECKING, `from package import module`, relative imports)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(c for c in candidates if c in modules)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    modules = set(files)
    return {m: imports_of(p, root, modules) - {m} for m, p in files.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
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


def test_no_import_circle_in_the_engine() -> None:
    """Each exchange module sits above what it uses; none reaches back up, not even inside a
    function or for type checking only (the tasks know the IKE SA, not the other way)."""
    graph = import_graph(PACKAGE / "ike")
    assert "xfrmctl.ike.childsa" in graph["xfrmctl.ike.ike_auth"]  # the graph sees imports
    assert circles(graph) == []


def test_the_circle_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "xfrmctl" / "ike"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from xfrmctl.ike import b\n")
    (pkg / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from xfrmctl.ike.a import X\n"
    )
    (pkg / "d.py").write_text("import xfrmctl.ike.a\n")
    graph = import_graph(pkg)
    assert circles(graph) == [["xfrmctl.ike.a", "xfrmctl.ike.b", "xfrmctl.ike.c"]]
    (pkg / "c.py").write_text("")
    assert circles(import_graph(pkg)) == []
