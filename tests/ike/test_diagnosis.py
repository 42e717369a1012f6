"""`xfrmctl explain`'s diagnoses, table-driven: real failures between two engines (and two
events no engine pair makes), each with its finding, marked row and suggested change."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from certs_fixture import NOW, cert_auth, make_ca
from harness import PSK, child_spec, make_pair

from xfrmctl.ike.crypto.certs import TrustStore
from xfrmctl.ike.diagnosis import Diagnosis, diagnose
from xfrmctl.ike.events import AuthenticationFailed, NegotiationFailed, Offer
from xfrmctl.ike.iana import ProtocolId
from xfrmctl.ike.proposals import parse_proposals
from xfrmctl.ike.spec import PskAuth

CA_KEY, CA = make_ca("Lab CA")
ROGUE_KEY, ROGUE = make_ca("Rogue CA")
B_TRUST = TrustStore([CA], origins=["/etc/xfrmctl/lab-ca.pem"])
B_CERT = dataclasses.replace(cert_auth(CA_KEY, CA, "b.example", CA), trust_store=B_TRUST)


def failure(side: str, a: dict[str, Any], b: dict[str, Any], **kw: Any) -> Diagnosis:
    """Run A → B until it fails and diagnose `side`'s one failure event."""
    h, _, _ = make_pair(a=a, b=b, **kw)
    for ep in (h.a, h.b):
        ep.wall_clock = lambda: NOW
    h.a.initiate("a-to-b", now=h.now)
    h.run(5.0)
    events = [*h.of(side, NegotiationFailed), *h.of(side, AuthenticationFailed)]
    assert len(events) == 1, events
    return diagnose(events[0])


def initiator_identity() -> Diagnosis:
    """A peer that ignores our IDr and presents another identity (our engine refuses first)."""
    ours = Offer(identity="a.example", auth_method="psk", peer_id="b.example", peer_auth="psk")
    event = AuthenticationFailed(
        "a-to-b",
        1,
        (ipaddress.ip_address("192.0.2.2"), 500),
        "peer identity evil.example is not b.example",
        "a.example",
        "evil.example",
        "identity",
        True,
        ours,
        Offer(identity="evil.example"),
    )
    return diagnose(event)


def invalid_ke() -> Diagnosis:
    """A responder asking for a group we never offered (a retry is impossible)."""
    ours = parse_proposals(["aes256gcm16-prfsha256-x25519"], ProtocolId.IKE)
    event = NegotiationFailed(
        "a-to-b",
        1,
        None,
        "INVALID_KE_PAYLOAD",
        Offer(tuple(ours), ("aes256gcm16-prfsha256-x25519",)),
        Offer(ke_group="modp2048", hidden=("proposals",)),
        initiator=True,
    )
    return diagnose(event)


WEAK_ESP = {"children": (child_spec(proposals=("aes128-sha256",)),)}
WEAK_IKE = {"ike": ("aes128-sha256-modp3072",)}
OTHER_TS = {"children": (child_spec(local="10.7.0.0/16", remote="10.8.0.0/16"),)}
KEY = "connections.b-from-a"


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], Diagnosis]
    code: str
    role: str
    mismatch: str  # the row marked with "!" ("" for none)
    expect: tuple[str, ...]  # in the text: the finding and the suggested change


CASES = [
    Case(
        "ike-proposals-initiator",
        lambda: failure("a", WEAK_IKE, {}),
        "NO_PROPOSAL_CHOSEN",
        "initiator",
        "IKE proposals",
        (
            "the peer accepted none of our IKE proposals",
            "(not revealed by the peer)",
            "RFC 7296 §2.7",
            "add the peer's IKE proposal to `connections.a-to-b.proposals`",
        ),
    ),
    Case(
        "ike-proposals-responder",
        lambda: failure("b", WEAK_IKE, {}),
        "NO_PROPOSAL_CHOSEN",
        "responder",
        "IKE proposals",
        (
            "the peer offers only aes128-sha256-modp3072",
            "key exchange: we offer x25519, the peer modp3072",
            f"add `aes128-sha256-modp3072` to `{KEY}.proposals`",
        ),
    ),
    Case(
        "invalid-ke",
        invalid_ke,
        "INVALID_KE_PAYLOAD",
        "initiator",
        "key exchange",
        (
            "the peer wants key exchange modp2048",
            "add `aes256gcm16-prfsha256-modp2048` to `connections.a-to-b.proposals`",
        ),
    ),
    Case(
        "esp-proposals-initiator",
        lambda: failure("a", WEAK_ESP, {}),
        "NO_PROPOSAL_CHOSEN",
        "initiator",
        "ESP proposals",
        (
            "the peer accepted none of our ESP proposals for child net",
            "(not revealed by the peer)",
            "the peer agreed to `aes256gcm16-prfsha256-x25519` for the IKE SA",
            "add `aes256gcm16` to `connections.a-to-b.children.net.esp_proposals`",
        ),
    ),
    Case(
        "esp-proposals-responder",
        lambda: failure("b", WEAK_ESP, {}),
        "NO_PROPOSAL_CHOSEN",
        "responder",
        "ESP proposals",
        (
            "the peer offers only aes128-sha256",
            f"add `aes128-sha256` to `{KEY}.children.net.esp_proposals`",
        ),
    ),
    Case(
        "ts-initiator",
        lambda: failure("a", {}, OTHER_TS),
        "TS_UNACCEPTABLE",
        "initiator",
        "local traffic",
        ("RFC 7296 §2.9", "local_ts 10.2.0.0/16 and remote_ts 10.1.0.0/16"),
    ),
    Case(
        "ts-responder",
        lambda: failure("b", {}, OTHER_TS),
        "TS_UNACCEPTABLE",
        "responder",
        "local traffic",
        (
            f"set `{KEY}.children.net.local_ts: [10.2.0.0/16]`",
            f"set `{KEY}.children.net.remote_ts: [10.1.0.0/16]`",
        ),
    ),
    Case(
        "psk-responder",
        lambda: failure("b", {}, {"auth": PskAuth(PSK.psk + b"x")}),
        "AUTHENTICATION_FAILED",
        "responder",
        "pre-shared key",
        ("the pre-shared keys differ", f"`{KEY}.psk_file`"),
    ),
    Case(
        "psk-initiator",
        lambda: failure("a", {}, {"auth": PskAuth(PSK.psk + b"x")}),
        "AUTHENTICATION_FAILED",
        "initiator",
        "",
        ("most likely the pre-shared keys differ", "RFC 7296 §2.21.2"),
    ),
    Case(
        "id-responder",
        lambda: failure("b", {"local_id": "intruder.example"}, {}),
        "AUTHENTICATION_FAILED",
        "responder",
        "peer identity",
        (
            "no connection accepts identity intruder.example authenticating with psk",
            "set `remote.id: intruder.example` on the connection meant for it",
        ),
    ),
    Case(
        "idr-responder",
        lambda: failure("b", {"remote_id": "c.example"}, {}),
        "AUTHENTICATION_FAILED",
        "responder",
        "our identity",
        (
            "the peer wants us to be c.example, but our `local.id` is b.example",
            f"set `{KEY}.local.id: c.example`",
        ),
    ),
    Case(
        "id-initiator",
        initiator_identity,
        "AUTHENTICATION_FAILED",
        "initiator",
        "peer identity",
        (
            "the peer identifies as evil.example, but our `remote.id` is b.example",
            "set `connections.a-to-b.remote.id: evil.example`",
        ),
    ),
    Case(
        "untrusted-ca",
        lambda: failure(
            "b",
            {"auth": cert_auth(ROGUE_KEY, ROGUE, "a.example", CA)},
            {
                "auth": dataclasses.replace(
                    cert_auth(CA_KEY, CA, "b.example", CA), trust_store=B_TRUST
                )
            },
        ),
        "AUTHENTICATION_FAILED",
        "responder",
        "trusted CAs",
        (
            "issued by 'CN=Rogue CA', which is none of our trusted CAs",
            "/etc/xfrmctl/lab-ca.pem",
            f"add its CA certificate to `{KEY}.remote.cacerts`",
        ),
    ),
    Case(
        "auth-method",
        lambda: failure(
            "b",
            {"auth": cert_auth(CA_KEY, CA, "a.example", CA)},
            {"auth": PSK},
        ),
        "AUTHENTICATION_FAILED",
        "responder",
        "peer auth",
        ("the peer authenticates with pubkey, but we expect psk", f"`{KEY}.remote.auth: pubkey`"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_diagnosis(case: Case) -> None:
    d = case.make()
    text = "\n".join(d.lines())
    assert (d.code, d.role) == (case.code, case.role), text
    for expected in case.expect:
        assert expected in text, f"{expected!r} not in\n{text}"
    marked = [r.label for r in d.rows if r.mismatch]
    if case.mismatch:
        assert case.mismatch in marked, text
        assert any(line.startswith(f"  ! {case.mismatch}") for line in d.lines()), text
    assert d.suggestions, text
    assert PSK.psk.decode() not in text and "staple" not in text  # never a key
    as_json = d.to_json()
    assert as_json["text"] == d.lines() and as_json["code"] == case.code
    assert [r["field"] for r in as_json["rows"] if r["mismatch"]] == marked


def test_hidden_is_said_only_when_the_protocol_hid_it() -> None:
    assert failure("a", WEAK_IKE, {}).hidden
    assert not failure("b", WEAK_IKE, {}).hidden
    seen = failure("b", WEAK_ESP, {})
    (row,) = [r for r in seen.rows if r.label == "ESP proposals"]
    assert (row.ours, row.theirs) == ("aes256gcm16", "aes128-sha256")


def test_unsupported_peer_proposal_asks_the_peer_to_change() -> None:
    ours = parse_proposals(["aes256gcm16"], ProtocolId.ESP)
    event = NegotiationFailed(
        "c",
        1,
        "net",
        "NO_PROPOSAL_CHOSEN",
        Offer(tuple(ours), ("aes256gcm16",)),
        Offer((), ("3des-md5",)),
        initiator=False,
    )
    text = "\n".join(diagnose(event).lines())
    assert "xfrmctl supports none of the peer's ESP proposals" in text, text
    assert "include `aes256gcm16`" in text, text


def test_esn_difference_is_named() -> None:
    ours = parse_proposals(["aes256gcm16-esn"], ProtocolId.ESP)
    theirs = parse_proposals(["aes256gcm16-noesn"], ProtocolId.ESP)
    event = NegotiationFailed(
        "c",
        1,
        "net",
        "NO_PROPOSAL_CHOSEN",
        Offer(tuple(ours), ("aes256gcm16-esn",)),
        Offer(tuple(theirs), ("aes256gcm16",)),
        initiator=False,
    )
    d = diagnose(event)
    assert "ESN: we offer esn, the peer noesn" in d.summary, d.summary
    assert "add `aes256gcm16` to `connections.c.children.net.esp_proposals`" in d.suggestions
