"""The configuration: one YAML file plus includes, validated with file:line error messages.

Exports resolve lazily so that importing a light helper (e.g. `xfrmctl.config.units`) from the
CLI does not pull in pydantic.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not even typing at run time: the CLI's fast path imports `units`
if TYPE_CHECKING:
    from typing import Any

    from xfrmctl.config.errors import ConfigError, ConfigIssue
    from xfrmctl.config.identities import Identity
    from xfrmctl.config.loader import LoadedConfig, check_config, load_config
    from xfrmctl.config.model import Child, Connection, Settings, XfrmctlConfig, json_schema
    from xfrmctl.config.selectors import Selector

_EXPORTS = {
    "ConfigError": "errors",
    "ConfigIssue": "errors",
    "Identity": "identities",
    "LoadedConfig": "loader",
    "check_config": "loader",
    "load_config": "loader",
    "Child": "model",
    "Connection": "model",
    "Settings": "model",
    "XfrmctlConfig": "model",
    "json_schema": "model",
    "Selector": "selectors",
}
__all__ = [
    "Child",
    "ConfigError",
    "ConfigIssue",
    "Connection",
    "Identity",
    "LoadedConfig",
    "Selector",
    "Settings",
    "XfrmctlConfig",
    "check_config",
    "json_schema",
    "load_config",
]


def __getattr__(name: str) -> Any:
    import importlib  # with warnings: not for the CLI's fast path, which only reads `units`

    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'xfrmctl.config' has no attribute {name!r}")
    return getattr(importlib.import_module(f"xfrmctl.config.{module}"), name)
