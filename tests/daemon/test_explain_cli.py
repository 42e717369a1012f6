"""`xfrmctl up` and `xfrmctl explain [--json]` through the real control socket, against two
daemons on loopback whose ESP proposals disagree."""

from __future__ import annotations

import json
from pathlib import Path

from daemon_helpers import BASE_PORT, cli, served_pair, write_config

PORT = BASE_PORT + 880


def test_up_failure_and_explain_show_the_diagnosis(tmp_path: Path) -> None:
    ids = ("a.example", "b.example")
    a_cfg = write_config(tmp_path, "a", "127.0.0.1", "127.0.0.2", PORT, PORT + 2, *ids)
    b_cfg = write_config(
        tmp_path, "b", "127.0.0.2", "127.0.0.1", PORT + 2, PORT, *ids[::-1], esp="aes128-sha256"
    )
    with served_pair(a_cfg, b_cfg) as (a, _):
        sock = a.sock
        code, out, _ = cli(sock, "explain", "tun")
        assert code == 0 and "tun: no failed negotiation on record" in out, out
        code, _, err = cli(sock, "up", "tun")
        assert code == 1, err
        assert "up tun failed: NO_PROPOSAL_CHOSEN" in err, err
        assert "the peer accepted none of our ESP proposals for child host" in err, err
        assert '"proposals"' not in err, err  # the diagnosis instead of the raw offers
        code, out, _ = cli(sock, "explain", "tun")
        assert code == 0, out
        lines = out.splitlines()
        assert lines[0] == "tun: child host failed: NO_PROPOSAL_CHOSEN, we were the initiator"
        assert any(line.startswith("  ! ESP proposals") for line in lines), out
        assert "(not revealed by the peer)" in out and "suggested change:" in out, out
        assert "\n".join(lines[1:]) in err  # `up` printed the same text
        code, out, _ = cli(sock, "explain", "tun", "--json")
        report = json.loads(out)
        assert report["connection"] == "tun" and report["failure"]["child"] == "host"
        assert report["failure"]["hidden"] and report["failure"]["suggestions"], report
        code, _, err = cli(sock, "explain", "nope")
        assert code == 1 and "UNKNOWN_CONNECTION" in err and "'nope'" in err, err
