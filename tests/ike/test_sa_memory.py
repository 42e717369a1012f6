"""What an established IKE SA keeps: not the IKE_SA_INIT messages (signed into AUTH, needed no
more once authenticated), and no per-instance __dict__ on the objects there are thousands of."""

from __future__ import annotations

from harness import make_pair

from xfrmctl.ike.events import ChildSaReady, IkeSaEstablished
from xfrmctl.ike.exchanges import IkeState
from xfrmctl.ike.sa import NO_CERTREQ


def test_established_sas_drop_the_init_messages_and_have_no_dict() -> None:
    h, _, _ = make_pair()
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    assert h.of("a", IkeSaEstablished) and h.of("b", IkeSaEstablished)
    for ep in (h.a, h.b):
        (sa,) = ep.sas.values()
        assert sa.state == IkeState.ESTABLISHED
        assert sa.init_request == sa.init_response == b""
        assert sa.ni == sa.nr == b""  # signed into AUTH, keyed the first Child SA: done
        assert sa.crypto is not None and sa.crypto.keys.sk_pi == sa.crypto.keys.sk_pr == b""
        assert sa.crypto.keys.sk_d and sa.crypto.keys.sk_ei  # what the SA still needs
        assert not hasattr(sa.crypto.keys, "__dict__") and not hasattr(sa.crypto, "__dict__")
        (child,) = sa.children
        assert child.lowest_nonce is None  # only a rekey's SAs need it, for collisions
        assert sa.reassembly is None  # no fragments: no table
        assert sa.peer_certreq is NO_CERTREQ  # PSK: no CERTREQ, and one shared empty set
        assert not hasattr(sa, "__dict__") and not hasattr(child, "__dict__")
        assert not hasattr(sa.tasks, "__dict__")
        assert sa.pending_children == ()  # the one shared empty tuple, not a list each
        assert not hasattr(sa.proposal, "__dict__") and not hasattr(child.proposal, "__dict__")
        assert not any(hasattr(t, "__dict__") for t in child.proposal.transforms)


def test_sas_that_agreed_on_the_same_transforms_share_them() -> None:
    """Each IKE SA and Child SA keeps its agreed proposal; decoded from the peer's message, it
    is a dozen objects per SA unless the transforms are shared."""
    h, _, _ = make_pair()
    for _ in range(3):
        h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    for ep in (h.a, h.b):
        sas = list(ep.sas.values())
        assert len(sas) == 3
        assert len({id(sa.proposal.transforms) for sa in sas}) == 1
        children = [c for sa in sas for c in sa.children]
        assert len({id(c.proposal.transforms) for c in children}) == 1
        assert len({c.proposal.spi for c in children}) == 3  # the SPIs stay each SA's own


def test_shared_transform_sets_are_bounded() -> None:
    """A peer cycling through distinct transform sets cannot grow the shared table."""
    from xfrmctl.ike import transforms as tr
    from xfrmctl.ike.iana import ProtocolId, TransformType

    for key_length in range(tr.KEPT_MAX + 50):
        ts = (tr.Transform(TransformType.ENCR, 20, key_length),)
        p = tr.Proposal(ProtocolId.ESP, ts, 1, b"\x01\x02\x03\x04")
        assert tr.kept(p) == p
    assert len(tr._kept) <= tr.KEPT_MAX


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
