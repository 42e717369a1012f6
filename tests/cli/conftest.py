"""Fixtures for CLI and control-socket tests (helpers live in cli_helpers.py)."""

from cli_helpers import server, short_dir

__all__ = ["server", "short_dir"]
