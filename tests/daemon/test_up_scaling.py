"""`up` and `status NAME` with many connections: the answer for one name is the full status
filtered by that name, and building it costs that connection's SAs only (issue 15: N
concurrent `up` requests used to build every SA's status each, N² in all)."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest
from daemon_helpers import BASE_PORT, RecordingKernel, no_progress

from xfrmctl.daemon.core import Daemon
from xfrmctl.daemon.handler import DaemonHandler
from xfrmctl.daemon.status import StatusReport
from xfrmctl.ike import engine
from xfrmctl.ike.iana import ProtocolId
from xfrmctl.ike.proposals import parse_proposals
from xfrmctl.ike.settings import EndpointConfig
from xfrmctl.ike.spec import ChildSpec, ConnectionSpec, Identity, PskAuth, TsSpec

K = 8
PORT = BASE_PORT + 800
A = ipaddress.ip_address("127.0.0.1")
B = ipaddress.ip_address("127.0.0.2")
LIMITS = EndpointConfig(cookie_threshold=100, cookie_threshold_ip=100, block_threshold=100)
# Seconds-until fields tick between two reports, and wall times are the monotonic ones moved
# by a wall clock read per report (microseconds apart); everything else must be identical.
TICKING = {"rekey_in", "reauth_in", "expires_in", "established_at", "installed_at"}
# `up` reports the pairs it installed with the counters they were installed with (zero), not
# the kernel's (RecordingKernel answers 100/1/200/2 for any pair): tests/daemon/test_up_reply.py
COUNTERS = {"bytes_in", "bytes_out", "packets_in", "packets_out"}


def _conn(name: str, me: Any, peer: Any, port: int, local: str, remote: str) -> ConnectionSpec:
    esp = tuple(parse_proposals(["aes256gcm16"], ProtocolId.ESP))
    child = ChildSpec(
        "net", (TsSpec(ipaddress.ip_network(local)),), (TsSpec(ipaddress.ip_network(remote)),), esp
    )
    return ConnectionSpec(
        name,
        (me,),
        (peer,),
        Identity.parse("a.example" if me == A else "b.example"),
        Identity.parse("b.example" if me == A else "a.example"),
        PskAuth(b"correct horse battery staple"),
        tuple(parse_proposals(["aes256gcm16-prfsha256-x25519"], ProtocolId.IKE)),
        (child,),
        remote_port=port,
    )


def _stable(report: StatusReport) -> dict[str, Any]:
    data = report.model_dump(mode="json")
    for ike in data["ike_sas"]:
        for key in TICKING & ike.keys():
            del ike[key]
        for child in ike["children"]:
            for key in TICKING & child.keys():
                del child[key]
    return data


def _filtered(full: dict[str, Any], name: str) -> dict[str, Any]:
    return {
        **full,
        "ike_sas": [s for s in full["ike_sas"] if s["name"] == name],
        "connections": [c for c in full["connections"] if c["name"] == name],
    }


def test_up_and_status_of_one_name_among_many(monkeypatch: pytest.MonkeyPatch) -> None:
    a_specs = [_conn(f"c{i}", A, B, PORT + 2, f"10.1.0.{i}/32", f"10.2.0.{i}/32") for i in range(K)]
    b_specs = [_conn("any", B, A, PORT, "10.2.0.0/16", "10.1.0.0/16")]
    built: list[int] = []
    real_status = engine.ike_status

    def counting(sa: Any) -> Any:
        built.append(sa.id)
        return real_status(sa)

    async def scenario() -> None:
        da = Daemon(a_specs, RecordingKernel(), (PORT, PORT + 1), limits=LIMITS)
        db = Daemon(b_specs, RecordingKernel(), (PORT + 2, PORT + 3), limits=LIMITS)
        for d in (da, db):
            d.sockets._ipv6 = False
            await d.start()
        handler = DaemonHandler(da, lambda: a_specs)
        try:
            ups = [handler.up(s.name, None, no_progress) for s in a_specs]
            results = await asyncio.wait_for(asyncio.gather(*ups), 30)
            assert len(da.installed) == len(db.installed) == K
            full = _stable(await handler.status(None))
            assert len(full["ike_sas"]) == K
            for spec, result in zip(a_specs, results, strict=True):
                raw = await handler.status(spec.name)
                assert raw.ike_sas[0].established_at is not None
                one = _stable(raw)
                assert one == _filtered(full, spec.name)
                (ike,) = one["ike_sas"]
                assert ike["children"][0]["local_ts"] == [str(spec.children[0].local_ts[0].network)]
                up_ike = {k: v for k, v in result["ike_sa"].items() if k not in TICKING}
                up_ike["children"] = [
                    {k: v for k, v in c.items() if k not in TICKING} for c in up_ike["children"]
                ]
                assert all(c[k] == 0 for c in up_ike["children"] for k in COUNTERS)
                for child in [*up_ike["children"], *ike["children"]]:
                    for key in COUNTERS:
                        del child[key]
                assert up_ike == ike
            monkeypatch.setattr(engine, "ike_status", counting)
            await handler.status("c3")
            assert len(built) == 1  # c3's IKE SA only, not all K
            built.clear()
            again = await handler.up("c5", None, no_progress)  # already up: answered at once
            assert again["ike_sa"]["name"] == "c5"
            assert len(built) <= 2
        finally:
            for d in (da, db):
                await d.stop()

    asyncio.run(scenario())
