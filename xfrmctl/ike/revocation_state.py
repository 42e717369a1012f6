"""What the endpoint keeps for certificate revocation (RFC 5280 §6.3, RFC 6960): the status
cache and the IKE SAs whose IKE_AUTH waits for a fetch. Plain state, apart from `sa.py` so that
the IKE SA's host can hold it; `revocation_wait` acts on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from xfrmctl.ike.crypto import revocation_data as rv


@dataclass
class Wait:
    requests: dict[rv.FetchRequest, tuple[rv.Link, ...]]
    resume: Callable[[float], None]
    deadline: float
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    asked: bool = True  # a fetch is out; False once its answers are in


class Revocations:
    """The endpoint's revocation state: the status cache and the parked IKE SAs by id."""

    def __init__(self) -> None:
        self.cache = rv.RevocationCache()
        self.waits: dict[int, Wait] = {}
