"""Turn the validated user configuration into the engine's plain connection specs.

Equal values (proposals, identities, pre-shared keys, kernel options) are made once and shared
across the connections of one configuration, keyed by what was configured: they are immutable,
and a fleet's connections mostly repeat them (a reload of N connections would otherwise parse
and keep N copies of each).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Hashable
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from xfrmctl.config.model import parse_mark
from xfrmctl.ike.engine import EndpointConfig
from xfrmctl.ike.iana import ProtocolId
from xfrmctl.ike.spec import (
    Auth,
    CertAuth,
    ChildSpec,
    CloseAction,
    ConnectionSpec,
    Encap,
    Identity,
    InterfaceOptions,
    IPAddress,
    KernelOptions,
    MarkSpec,
    Mode,
    Offload,
    PeerAuth,
    PeerCertAuth,
    PskAuth,
    StartAction,
    TsSpec,
)

if TYPE_CHECKING:
    from xfrmctl.config import Child, Connection, LoadedConfig, Selector
    from xfrmctl.config.model import Settings


class SpecError(ValueError):
    """A connection that validates as configuration but cannot run (names the connection)."""


_DPD_ACTIONS = {"clear": CloseAction.NONE, "trap": CloseAction.TRAP, "restart": CloseAction.START}


T = TypeVar("T")
A = TypeVar("A", bound=Auth | PeerAuth)


class Shared:
    """Values made once per distinct input (a kind and the configured text or numbers) across
    a configuration's connections; hashing the input is cheaper than comparing the values."""

    def __init__(self) -> None:
        self._made: dict[Hashable, object] = {}

    def __call__(self, key: Hashable, make: Callable[[], T]) -> T:
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]  # type: ignore[return-value]


def build_specs(config: LoadedConfig) -> list[ConnectionSpec]:
    shared = Shared()
    return [build_spec(config, name, conn, shared) for name, conn in config.connections.items()]


def _addresses(values: list[str], shared: Shared) -> tuple[IPAddress, ...]:
    texts = tuple(str(value) for value in values)
    return shared(("addrs", texts), lambda: _parse_addresses(texts))


def _parse_addresses(texts: tuple[str, ...]) -> tuple[IPAddress, ...]:
    out: list[IPAddress] = []
    for text in texts:
        if text in ("%any", "0.0.0.0/0", "::/0"):
            continue
        out.append(ipaddress.ip_network(text, strict=False).network_address)
    return tuple(out)


def _seconds(value: float, shared: Shared) -> float:
    """One float object per distinct time across the configuration (each is 24 bytes, and a
    connection has about ten)."""
    number = float(value)
    return shared(("float", number), lambda: number)


def _selectors(
    selectors: list[Selector], address: IPAddress | None, what: str
) -> tuple[TsSpec, ...]:
    out = []
    for sel in selectors:
        if sel.network is None:
            if address is None:
                raise SpecError(f"{what}: 'dynamic' needs a configured address")
            sel = sel.resolve(address)
        assert sel.network is not None  # resolved above; for the type checker only
        out.append(TsSpec(sel.network, sel.protocol, sel.port_start, sel.port_end))
    return tuple(out)


def _child(
    name: str,
    conn: tuple[str, Connection],
    child: Child,
    ends: tuple[IPAddress | None, IPAddress | None],
    shared: Shared,
) -> ChildSpec:
    conn_name = conn[0]
    where = f"connection {conn_name!r} child {name!r}"
    local, remote = ends
    return ChildSpec(
        name=name,
        local_ts=_selectors(child.local_selectors(), local, f"{where} local_ts"),
        remote_ts=_selectors(child.remote_selectors(), remote, f"{where} remote_ts"),
        proposals=shared(
            ("esp", child.protocol, tuple(child.proposal_texts())), lambda: tuple(child.proposals())
        ),
        mode=Mode(child.mode),
        protocol=ProtocolId.AH if child.protocol == "ah" else ProtocolId.ESP,
        rekey_time=_seconds(child.rekey_time, shared),
        life_time=_seconds(child.life_time or child.rekey_time, shared),
        rand_time=_seconds(child.rand_time or 0, shared),
        rekey_bytes=int(child.rekey_bytes),
        life_bytes=int(child.life_bytes or 0),
        rand_bytes=int(child.rand_bytes or 0),
        rekey_packets=int(child.rekey_packets),
        life_packets=int(child.life_packets or 0),
        rand_packets=int(child.rand_packets or 0),
        start_action=StartAction(child.start_action),
        dpd_action=_DPD_ACTIONS[child.dpd_action],
        close_action=CloseAction(child.close_action),
        kernel=_shared_kernel(conn[1], child, shared),
        ipcomp=bool(child.ipcomp),
    )


# What KernelOptions is made of, besides the connection's interface.
_KERNEL_KEYS = attrgetter(
    "replay_window", "if_id_in", "if_id_out", "hw_offload", "mark_in", "mark_out"
)


def _shared_kernel(conn: Connection, child: Child, shared: Shared) -> KernelOptions:
    if conn.interface is not None:  # the connection's own interface: not keyed here
        return _kernel_options(conn, child)
    return shared(("kernel", _KERNEL_KEYS(child)), lambda: _kernel_options(conn, child))


def _kernel_options(conn: Connection, child: Child) -> KernelOptions:
    return KernelOptions(
        replay_window=int(child.replay_window),
        if_id_in=int(child.if_id_in or 0),
        if_id_out=int(child.if_id_out or 0),
        hw_offload=Offload(child.hw_offload),
        interface=_interface(conn),
        mark_in=_mark(child.mark_in),
        mark_out=_mark(child.mark_out),
    )


def _mark(text: str | None) -> MarkSpec | None:
    return None if text is None else MarkSpec(*parse_mark(text))


def _interface(conn: Connection) -> InterfaceOptions | None:
    i = conn.interface
    if i is None:
        return None
    return InterfaceOptions(i.name, i.if_id, i.mtu, tuple(i.addresses), tuple(i.routes))


def _local_auth(config: LoadedConfig, name: str, conn: Connection) -> Auth:
    """How we prove ourselves (local.auth)."""
    if conn.local.auth == "psk":
        return PskAuth(config.psk_bytes(name))
    from cryptography.hazmat.primitives.serialization import Encoding

    from xfrmctl.ike.crypto.auth import LocalSigner
    from xfrmctl.ike.crypto.certs import load_certificate_chain

    chain: list[bytes] = []
    for path in conn.local.certs:
        for cert in load_certificate_chain(Path(path).read_bytes()):
            chain.append(cert.public_bytes(Encoding.DER))
    signer = LocalSigner.from_pem(config.private_key_bytes(name))
    return CertAuth(signer, tuple(chain), None)


def _remote_auth(config: LoadedConfig, name: str, conn: Connection) -> PeerAuth:
    """How the peer must prove itself (remote.auth): its own method, whatever ours is."""
    if conn.remote.auth == "psk":
        return PskAuth(config.psk_bytes(name))
    from xfrmctl.ike.crypto import revocation as rv
    from xfrmctl.ike.crypto.certs import TrustStore

    cacerts = [Path(p) for p in conn.remote.cacerts]
    pinned = [Path(p) for p in conn.remote.certs]
    revocation = rv.RevocationConfig(
        rv.Policy(conn.remote.revocation),
        tuple(rv.load_crl_file(Path(p)) for p in conn.remote.crls),
        tuple(conn.remote.ocsp_uris),
        float(config.settings.revocation_timeout),
    )
    return PeerCertAuth(TrustStore.from_pem_files(cacerts, pinned), revocation=revocation)


def build_spec(
    config: LoadedConfig, name: str, conn: Connection, shared: Shared | None = None
) -> ConnectionSpec:
    shared = shared or Shared()
    local_addrs = _addresses(list(conn.local_addrs), shared)
    remote_addrs = _addresses(list(conn.remote_addrs), shared)
    local = local_addrs[0] if local_addrs else None
    remote = remote_addrs[0] if remote_addrs else None
    local_id_text = conn.local.id
    if local_id_text:
        local_id = _identity(str(local_id_text), shared)
    elif local is not None:
        local_id = _identity(str(local), shared)
    else:
        raise SpecError(f"connection {name!r}: set local.id or local_addrs")
    remote_id_text = str(conn.remote.id)
    remote_id = None if remote_id_text == "%any" else _identity(remote_id_text, shared)
    over = _seconds(conn.over_time or 0, shared)
    return ConnectionSpec(
        name=name,
        local_addrs=local_addrs,
        remote_addrs=remote_addrs,
        local_id=local_id,
        remote_id=remote_id,
        auth=_shared_psk(_local_auth(config, name, conn), shared),
        remote_auth=_shared_psk(_remote_auth(config, name, conn), shared),
        ike_proposals=shared(("ike", tuple(conn.proposals)), lambda: tuple(conn.ike_proposals())),
        children=tuple(
            _child(cname, (name, conn), child, (local, remote), shared)
            for cname, child in conn.children.items()
        ),
        remote_port=int(conn.remote_port),
        rekey_time=_seconds(conn.rekey_time, shared),
        reauth_time=_seconds(conn.reauth_time, shared),
        over_time=over,
        rand_time=_seconds(conn.rand_time if conn.rand_time is not None else over, shared),
        dpd_delay=_seconds(conn.dpd_delay, shared),
        dpd_timeout=_seconds(conn.dpd_timeout, shared),
        encap=Encap(conn.encap),
        fragmentation=bool(conn.fragmentation),
        keep_alive=_seconds(conn.keep_alive, shared),
    )


def _identity(text: str, shared: Shared) -> Identity:
    return shared(("id", text), lambda: Identity.parse(text))


def _shared_psk(auth: A, shared: Shared) -> A:
    """Certificate auth holds keys and trust stores compared by identity: never shared."""
    if isinstance(auth, PskAuth):
        psk = auth.psk
        return shared(("psk", psk), lambda: auth)
    return auth


def endpoint_config(settings: Settings) -> EndpointConfig:
    """The engine's daemon-wide settings: ports and the half-open (DoS) limits."""
    return EndpointConfig(
        ike_port=settings.port,
        natt_port=settings.port_nat_t,
        max_half_open=settings.init_limit_half_open,
        cookie_threshold=settings.cookie_threshold,
        cookie_threshold_ip=settings.cookie_threshold_ip,
        block_threshold=settings.block_threshold,
    )
