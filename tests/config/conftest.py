"""Fixtures for configuration tests (helpers live in config_helpers.py)."""

from config_helpers import write

__all__ = ["write"]
