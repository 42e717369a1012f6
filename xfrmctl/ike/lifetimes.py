"""When a newly established IKE SA rekeys, reauthenticates, expires and checks liveness.

RFC 7296 §2.8 leaves lifetimes to policy; as strongSwan: rekey at `rekey_time` and
reauthenticate at `reauth_time`, each less up to `rand_time` of jitter so both peers do not
start at once, and delete for good `over_time` after the first of them. DPD probes begin
`dpd_delay` after setup (§2.4).
"""

from __future__ import annotations

from xfrmctl.ike.sa import IkeSa
from xfrmctl.ike.spec import ConnectionSpec


def schedule(sa: IkeSa, spec: ConnectionSpec, now: float, reauth_at: float | None = None) -> None:
    """Rekey, reauth, hard-expiry and DPD times of an IKE SA established at `now`.

    `reauth_at` is inherited by an IKE SA that replaces another through a rekey: rekeying
    makes new keys but proves no identity again, so the reauth deadline stays.
    """
    sa.rekey_at = None
    if spec.rekey_time > 0:
        sa.rekey_at = now + spec.rekey_time - sa.ep.jitter(spec.rand_time)
    if reauth_at is None and spec.reauth_time > 0:
        reauth_at = now + spec.reauth_time - sa.ep.jitter(spec.rand_time)
    sa.reauth_at = reauth_at
    planned = [t for t in (sa.rekey_at, sa.reauth_at) if t is not None]
    sa.hard_at = min(planned) + spec.over_time if planned and spec.over_time > 0 else None
    if spec.dpd_delay > 0:
        sa.dpd_at = now + spec.dpd_delay
