"""Duration and size notation shared by every lifetime key (strongSwan's suffixes).

`re` is imported when a value is parsed, not with the module (~25 M instructions per start).
"""

from __future__ import annotations

_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_NUMBER = r"^\s*(\d+)\s*([A-Za-z]?)\s*$"

DURATION_PATTERN = r"^\s*\d+\s*[smhdSMHD]?\s*$"
SIZE_PATTERN = r"^\s*\d+\s*[kmgtKMGT]?\s*$"


def _parse(value: object, units: dict[str, int], what: str, examples: str) -> int:
    if isinstance(value, bool):
        # YAML 1.1 turns `yes`/`no` into booleans; a lifetime is never a yes/no answer.
        raise ValueError(f"expected a {what} like {examples}, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a {what} cannot be negative, got {value}")
        return value
    if isinstance(value, str):
        import re  # compiled once, then from re's own cache

        match = re.match(_NUMBER, value)
        if match and match.group(2).lower() in units:
            return int(match.group(1)) * units[match.group(2).lower()]
    raise ValueError(f"expected a {what} like {examples}, got {value!r}")


def parse_duration(value: object) -> int:
    """Seconds from `30s`, `5m`, `4h`, `1d` or a plain number of seconds."""
    return _parse(value, _DURATION_UNITS, "duration", "30s, 5m, 4h, 1d or plain seconds")


def parse_size(value: object) -> int:
    """A count from `500M`, `1G` (powers of 1024, as strongSwan) or a plain number."""
    return _parse(value, _SIZE_UNITS, "size", "500M, 1G, 64K or a plain number")
