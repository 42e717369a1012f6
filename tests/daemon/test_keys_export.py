"""export_tables: which key goes with which SPI and direction, and what is left out and why."""

from __future__ import annotations

from ipaddress import ip_address
from types import SimpleNamespace
from typing import Any, cast

from xfrmctl.daemon.keys import export_tables
from xfrmctl.ike.events import ChildSaReady, Lifetimes
from xfrmctl.ike.iana import EncrId, IntegId, ProtocolId, TransformType
from xfrmctl.ike.payloads import TrafficSelector
from xfrmctl.ike.spec import Mode
from xfrmctl.ike.transforms import Transform

A, B = ip_address("192.0.2.1"), ip_address("192.0.2.2")
KEY_IN, KEY_OUT = b"\x11" * 16, b"\x22" * 16
AUTH_IN, AUTH_OUT = b"\x33" * 20, b"\x44" * 20


def ready(child: str, protocol: ProtocolId, encr: Transform | None, **keys: Any) -> ChildSaReady:
    return ChildSaReady(
        conn="site",
        child=child,
        unique_id=1,
        ike_sa_id=1,
        mode=Mode.TUNNEL,
        protocol=protocol,
        spi_in=0xC1000001,
        spi_out=0xC2000002,
        local=A,
        remote=B,
        encr=encr,
        integ=Transform(TransformType.INTEG, IntegId.HMAC_SHA1_96),
        encr_key_in=keys.get("encr_in", KEY_IN),
        encr_key_out=keys.get("encr_out", KEY_OUT),
        integ_key_in=AUTH_IN,
        integ_key_out=AUTH_OUT,
        esn=False,
        local_ts=(TrafficSelector(ip_address("10.1.0.0"), ip_address("10.1.255.255")),),
        remote_ts=(TrafficSelector(ip_address("10.2.0.0"), ip_address("10.2.255.255")),),
        lifetimes=Lifetimes(3000, 3600),
        encap=None,
        reqid=5,
        tfc_padding=False,
    )


AES128 = Transform(TransformType.ENCR, EncrId.AES_CBC, 128)


def test_each_direction_gets_its_own_spi_addresses_and_keys() -> None:
    tables = export_tables([], [ready("net", ProtocolId.ESP, AES128)])
    out, inbound = tables.esp_sa
    assert out == (
        f'"IPv4","192.0.2.1","192.0.2.2","0xc2000002","AES-CBC [RFC3602]","0x{KEY_OUT.hex()}",'
        f'"HMAC-SHA-1-96 [RFC2404]","0x{AUTH_OUT.hex()}"'
    )
    assert inbound == (
        f'"IPv4","192.0.2.2","192.0.2.1","0xc1000001","AES-CBC [RFC3602]","0x{KEY_IN.hex()}",'
        f'"HMAC-SHA-1-96 [RFC2404]","0x{AUTH_IN.hex()}"'
    )
    assert tables.skipped == [] and tables.ikev2 == []
    assert tables.to_json()["esp_sas"] == 2


def test_what_wireshark_cannot_decrypt_is_named_and_the_rest_exported() -> None:
    chacha = Transform(TransformType.ENCR, EncrId.CHACHA20_POLY1305)
    children = [
        ready("fast", ProtocolId.ESP, chacha, encr_in=bytes(36), encr_out=bytes(36)),
        ready("signed", ProtocolId.AH, None),
        ready("net", ProtocolId.ESP, AES128),
    ]
    no_keys_yet = SimpleNamespace(crypto=None)  # an IKE SA before IKE_SA_INIT completed
    tables = export_tables([cast(Any, no_keys_yet)], children)
    assert len(tables.esp_sa) == 2 and all("0xc" in line for line in tables.esp_sa)
    assert tables.skipped == [
        "ESP SA 0xc2000002 of site/fast (192.0.2.1 -> 192.0.2.2): "
        "Wireshark cannot decrypt ESP with CHACHA20_POLY1305",
        "ESP SA 0xc1000001 of site/fast (192.0.2.2 -> 192.0.2.1): "
        "Wireshark cannot decrypt ESP with CHACHA20_POLY1305",
        "AH SAs of site/signed: AH does not encrypt, Wireshark shows their packets without keys",
    ]
    assert tables.ikev2 == []
    assert "1111" not in repr(tables) and "2222" not in repr(tables)  # no keys in reprs
