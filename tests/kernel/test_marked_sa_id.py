"""A marked SA is named with its mark: the SaId of an SA carries it, so GETSA, DELSA, GETAE and
NEWAE built from `sa.id` reach the marked SA (the kernel would answer ENOENT without it)."""

from __future__ import annotations

from ipaddress import ip_address

from xfrmctl.kernel import wire
from xfrmctl.kernel.messages import AE_RVAL
from xfrmctl.kernel.sa import decode_counters, delete_request, get_request
from xfrmctl.kernel.types import SA, Aead, Mark, Proto, SaId

A, B = ip_address("192.0.2.1"), ip_address("192.0.2.2")
MARKED = SA(A, B, 0x1234, aead=Aead("rfc4106(gcm(aes))", bytes(36)), mark=Mark(0x2A, 0xFF))
MARK_NLA = wire.mark_attrs(Mark(0x2A, 0xFF))


def test_an_sas_id_carries_its_mark() -> None:
    assert MARKED.id == SaId(B, 0x1234, Proto.ESP, Mark(0x2A, 0xFF))
    assert MARKED.id != SaId(B, 0x1234)  # two SAs that differ by mark alone stay apart
    assert "mark 0x2a/0xff" in str(MARKED.id)


def test_delete_and_get_of_sa_id_send_the_mark() -> None:
    for make in (delete_request, get_request):
        req = make(MARKED.id)
        assert req.body.endswith(MARK_NLA)
        assert req.msg.get_attr("XFRMA_MARK")["v"] == 0x2A
        # An explicit mark still wins (callers that pass it apart keep working).
        other = make(MARKED.id, Mark(7))
        assert other.body.endswith(wire.mark_attrs(Mark(7)))
    assert not delete_request(SaId(B, 0x1234)).body.endswith(MARK_NLA)


def test_counters_of_a_marked_sa_name_it_and_decode_its_mark() -> None:
    from xfrmctl.kernel.messages import Msg
    from xfrmctl.kernel.socket import Request

    body = wire.aevent_body(MARKED.id, A, AE_RVAL, MARKED.id.mark)
    assert body.endswith(MARK_NLA)
    decoded = decode_counters(Request(Msg.NEWAE, body, 0).msg)
    assert decoded.id == MARKED.id
