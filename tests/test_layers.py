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
