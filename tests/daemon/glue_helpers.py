"""The in-memory kernel (tests/kernel/test_xfrm_transaction.py's FakeKernel, which decodes
the real netlink requests) under an XfrmGlue, and a ChildSaReady to install on it."""

from __future__ import annotations

import importlib
import sys
from ipaddress import ip_address
from pathlib import Path
from typing import Any, cast

from xfrmctl.daemon.xfrm_glue import XfrmGlue
from xfrmctl.ike.events import ChildSaReady, Lifetimes
from xfrmctl.ike.iana import EncrId, ProtocolId, TransformType
from xfrmctl.ike.payloads import TrafficSelector
from xfrmctl.ike.spec import Mode
from xfrmctl.ike.transforms import Transform

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernel"))
FakeKernel: Any = importlib.import_module("test_xfrm_transaction").FakeKernel

A, B = ip_address("192.0.2.1"), ip_address("192.0.2.2")


def ready(spi_in: int, spi_out: int, replaces: int | None = None) -> ChildSaReady:
    return ChildSaReady(
        conn="tun",
        child="net",
        unique_id=spi_in,
        ike_sa_id=1,
        mode=Mode.TUNNEL,
        protocol=ProtocolId.ESP,
        spi_in=spi_in,
        spi_out=spi_out,
        local=A,
        remote=B,
        encr=Transform(TransformType.ENCR, EncrId.AES_GCM_16, 256),
        integ=None,
        encr_key_in=bytes(36),
        encr_key_out=bytes(36),
        integ_key_in=b"",
        integ_key_out=b"",
        esn=False,
        local_ts=(TrafficSelector(ip_address("10.1.0.0"), ip_address("10.1.255.255")),),
        remote_ts=(TrafficSelector(ip_address("10.2.0.0"), ip_address("10.2.255.255")),),
        lifetimes=Lifetimes(3000, 3600),
        encap=None,
        reqid=5,
        tfc_padding=False,
        replaces_spi_in=replaces,
    )


def glue_on(kernel: Any) -> XfrmGlue:
    glue = XfrmGlue()
    glue.conn = cast(Any, kernel)
    glue._opened = True
    return glue


def spis(kernel: Any) -> set[int]:
    return {sid.spi for sid in kernel.sas}
