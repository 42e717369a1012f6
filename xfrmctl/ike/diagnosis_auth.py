"""Diagnoses of AuthenticationFailed (RFC 7296 §2.15, §2.21.2): keys, identities, CAs,
revoked certificates and missing revocation status (RFC 4945 §5.1.3, RFC 5280 §6.3).

Contract: pure; one function per `AuthenticationFailed.kind`. It never sees a key: a PSK
mismatch is stated as "the pre-shared keys differ" and the fix names the file to edit.
"""

from __future__ import annotations

from collections.abc import Callable

from xfrmctl.ike.diagnosis_text import Diagnosis, Row, differs, identity_rows, nat_row
from xfrmctl.ike.events import AuthenticationFailed

Parts = tuple[str, list[Row], list[str], list[str]]  # summary, extra rows, hidden, suggestions

NO_REASON = (
    "the peer answered AUTHENTICATION_FAILED, which carries no reason (RFC 7296 §2.21.2): "
    "only the peer's log says which check failed"
)


def diagnose_auth(e: AuthenticationFailed) -> Diagnosis:
    summary, extra, hidden, suggestions = _CASES.get(e.kind, _generic)(e)
    rows = [*extra, *identity_rows(e.ours, e.theirs), nat_row(e.ours, e.theirs)]
    return Diagnosis(
        conn=e.conn,
        child=None,
        code="AUTHENTICATION_FAILED",
        reason=e.reason,
        role="" if e.initiator is None else ("initiator" if e.initiator else "responder"),
        summary=summary,
        rows=tuple(r for r in rows if r.ours or r.theirs),
        hidden=tuple(hidden),
        suggestions=tuple(suggestions),
    )


def _key(e: AuthenticationFailed, name: str) -> str:
    return f"connections.{e.conn}.{name}"


def _psk(e: AuthenticationFailed) -> Parts:
    peer = e.theirs.identity or e.remote_id or "the peer"
    return (
        f"the pre-shared keys differ: the AUTH payload of {peer} does not verify with our key",
        [Row("pre-shared key", "(ours)", "(differs)", True)],
        [],
        [
            f"put the same secret in `{_key(e, 'psk_file')}` as the peer uses for "
            f"{e.ours.identity or 'us'} <-> {peer} (strongSwan: `secrets.ike-*` in swanctl.conf)"
        ],
    )


def _peer_rejected(e: AuthenticationFailed) -> Parts:
    me = e.ours.identity or e.local_id
    if e.ours.auth_method == "psk":
        summary = (
            "the peer rejected our authentication: most likely the pre-shared keys differ, "
            f"or the peer does not accept our identity {me}"
        )
        fixes = [
            f"check that `{_key(e, 'psk_file')}` holds the same secret as the peer's",
            f"check that the peer expects {me} (our `local.id`) as its remote id",
        ]
    else:
        summary = (
            "the peer rejected our authentication: it does not trust our certificate's CA, "
            f"or does not accept our identity {me}"
        )
        fixes = [
            "give the peer the CA certificate that issued ours (strongSwan: `remote.cacerts` "
            "or /etc/swanctl/x509ca)",
            f"check that the peer expects {me} (our `local.id`) as its remote id",
        ]
    if e.ours.peer_id not in ("", "%any"):
        fixes.append(
            f"we asked the peer to be {e.ours.peer_id} (our `remote.id`): check that this is "
            "the peer's local id"
        )
    return summary, [], [NO_REASON], fixes


def _identity(e: AuthenticationFailed) -> Parts:
    peer = e.theirs.identity or e.remote_id
    if e.initiator:
        want = e.ours.peer_id
        return (
            f"the peer identifies as {peer}, but our `remote.id` is {want}",
            [],
            [],
            [
                f"if {peer} is the right peer, set `{_key(e, 'remote.id')}: {peer}`; otherwise "
                f"make the peer use {want} as its local id"
            ],
        )
    wanted = ", ".join(e.candidates) or e.ours.peer_id or "none"
    method = e.theirs.auth_method or "its method"
    summary = f"no connection accepts identity {peer} authenticating with {method}"
    fixes = []
    if differs(wanted, peer):
        fixes.append(
            f"if {peer} is a legitimate peer, set `remote.id: {peer}` on the connection meant "
            f"for it (accepted now: {wanted})"
        )
    if differs(e.theirs.peer_id, e.ours.identity):
        summary = (
            f"the peer wants us to be {e.theirs.peer_id}, but our `local.id` is {e.ours.identity}"
        )
        fixes.append(
            f"set `{_key(e, 'local.id')}: {e.theirs.peer_id}`, or make the peer's remote id "
            f"{e.ours.identity}"
        )
    return summary, [], [], fixes


def _auth_method(e: AuthenticationFailed) -> Parts:
    theirs, ours = e.theirs.auth_method or "another method", e.ours.peer_auth or "another"
    return (
        f"the peer authenticates with {theirs}, but we expect {ours}",
        [],
        [],
        [f"set `{_key(e, 'remote.auth')}: {theirs}`, or change the peer's own auth to {ours}"],
    )


def _ca(e: AuthenticationFailed) -> Parts:
    files = ", ".join(e.ca_files) or "(no CA files)"
    issuer = e.issuer or "an unknown issuer"
    return (
        f"the peer's certificate is issued by {issuer!r}, which is none of our trusted CAs "
        f"(from {files})",
        [Row("trusted CAs", files, f"issuer {issuer}", True)],
        [],
        [
            f"if you trust {issuer!r}, add its CA certificate to `{_key(e, 'remote.cacerts')}`; "
            "otherwise the peer must use a certificate from one of our CAs"
        ],
    )


def _certificate(e: AuthenticationFailed) -> Parts:
    return (
        f"the peer's certificate is not acceptable: {e.reason}",
        [],
        [],
        ["fix the peer's certificate (validity, identity in its subjectAltName, key usage)"],
    )


def _revoked(e: AuthenticationFailed) -> Parts:
    """A CRL or OCSP answer says so (RFC 5280 §6.3, RFC 6960): nothing to fix on our side."""
    return (
        f"the peer's certificate chain includes a revoked certificate: {e.reason}",
        [],
        [],
        [
            "the peer needs a new certificate from its CA (its old one was revoked); "
            "if the revocation is a mistake, only the CA can undo it in its CRL/OCSP answers"
        ],
    )


def _revocation(e: AuthenticationFailed) -> Parts:
    """No status was obtained, and remote.revocation (strict, ifuri) wants one."""
    return (
        f"no revocation status could be obtained for the peer's certificate: {e.reason}",
        [],
        [],
        [
            "check that this host reaches the CRL/OCSP URLs named above (a firewall, a "
            "responder down, a proxy?)",
            f"or give the CA's CRL as a file in `{_key(e, 'remote.crls')}`, or a reachable "
            f"responder in `{_key(e, 'remote.ocsp_uris')}`",
            f"or accept peers without a status: `{_key(e, 'remote.revocation')}: relaxed` "
            "(a certificate known revoked is still refused)",
        ],
    )


def _generic(e: AuthenticationFailed) -> Parts:
    return f"authentication failed: {e.reason}", [], [], []


_CASES: dict[str, Callable[[AuthenticationFailed], Parts]] = {
    "psk": _psk,
    "peer_rejected": _peer_rejected,
    "identity": _identity,
    "auth_method": _auth_method,
    "ca": _ca,
    "certificate": _certificate,
    "revoked": _revoked,
    "revocation": _revocation,
}
