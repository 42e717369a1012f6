"""What an established IKE SA keeps: not the IKE_SA_INIT messages (signed into AUTH, needed no
more once authenticated), and no per-instance __dict__ on the objects there are thousands of."""

from __future__ import annotations

from harness import make_pair

from xfrmctl.ike.events import ChildSaReady, IkeSaEstablished
from xfrmctl.ike.exchanges import IkeState


def test_established_sas_drop_the_init_messages_and_have_no_dict() -> None:
    h, _, _ = make_pair()
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    assert h.of("a", IkeSaEstablished) and h.of("b", IkeSaEstablished)
    for ep in (h.a, h.b):
        (sa,) = ep.sas.values()
        assert sa.state == IkeState.ESTABLISHED
        assert sa.init_request == sa.init_response == b""
        assert sa.ni and sa.nr  # the nonces are not the messages: they stay
        (child,) = sa.children
        assert not hasattr(sa, "__dict__") and not hasattr(child, "__dict__")
        assert not hasattr(sa.tasks, "__dict__")


def test_the_ready_event_the_host_keeps_per_pair_has_no_dict() -> None:
    """The daemon keeps each ChildSaReady as long as the pair is installed (~790 bytes more
    each with a __dict__); its lifetimes and encapsulation go with it."""
    h, _, _ = make_pair()
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    for side in ("a", "b"):
        (ready,) = h.of(side, ChildSaReady)
        assert not hasattr(ready, "__dict__") and not hasattr(ready.lifetimes, "__dict__")
        assert ready == ready and "encr_key" not in repr(ready)  # Value's eq and repr still
