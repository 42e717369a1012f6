"""The lab suite's modules import on this host: a broken import there costs a whole guest boot
to discover (the lab itself only runs inside the real-kernel guest)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
MODULES = sorted(p.stem for p in INTEGRATION.glob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_lab_module_imports(module: str) -> None:
    code = f"import sys; sys.path.insert(0, {str(INTEGRATION)!r}); import {module}"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
