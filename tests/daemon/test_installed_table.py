"""InstalledTable: its indexes (by connection, IKE SA, outbound SPI, replaced pair) say what a
scan of its pairs says after every kind of change, so a stale index fails here."""

from __future__ import annotations

import dataclasses

from glue_helpers import ready

from xfrmctl.daemon.installed import Installed, InstalledTable


def pair(spi_in: int, conn: str = "tun", ike: int = 1, replaces: int | None = None) -> Installed:
    r = dataclasses.replace(ready(spi_in, spi_in + 1000, replaces), conn=conn, ike_sa_id=ike)
    return Installed(r, 0.0)


def agree(t: InstalledTable) -> None:
    entries = list(t.values())
    for conn in {e.ready.conn for e in entries} | {"none"}:
        assert t.of_conn(conn) == [e for e in entries if e.ready.conn == conn]
    for ike in {e.ready.ike_sa_id for e in entries} | {99}:
        assert t.of_ike(ike) == [e.ready.spi_in for e in entries if e.ready.ike_sa_id == ike]
    for e in entries:
        assert t.spi_in_for(e.ready.spi_out) == e.ready.spi_in
        assert t.spi_in_for(e.ready.spi_in) == e.ready.spi_in
    for spi in [e.ready.spi_in for e in entries] + [12345]:
        assert t.replaced(spi) == any(e.ready.replaces_spi_in == spi for e in entries)


def test_indexes_follow_add_rekey_remove_and_clear() -> None:
    t = InstalledTable()
    t[1], t[2], t[3] = pair(1), pair(2, conn="other", ike=2), pair(3, ike=2)
    agree(t)
    t[4] = pair(4, replaces=1)  # a rekey of pair 1
    agree(t)
    assert t.replaced(1)
    del t[1]
    assert t.pop(4).ready.spi_in == 4
    agree(t)
    assert not t.replaced(1) and t.spi_in_for(1004) is None
    t[3] = pair(3, conn="moved", ike=7)  # the same SPI again, filed anew
    agree(t)
    assert t.of_conn("tun") == [] and t.of_ike(2) == [2]
    t.clear()
    agree(t)
    assert len(t) == 0 and t.of_conn("other") == [] and t.spi_in_for(1002) is None
