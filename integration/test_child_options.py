"""Per-child options against strongSwan in the real kernel (issue 9, section 1).

One xfrmctl (host a) and one charon (host b); each child has its own inner address pair:
- `close_action: start` / `trap`: strongSwan terminates the child; xfrmctl re-initiates it, or
  installs the trap so the next packet does;
- `replay_window`, ESN, `if_id_in`/`if_id_out`: read back from the kernel's SAs and policies;
- `hw_offload: yes` on a veth (no IPsec offload) fails cleanly, installing nothing; `auto`
  falls back to software and carries traffic;
- hardware offload (issue 10 item 3) on a netdevsim device holding the local address of a
  second connection (IKE still crosses the veth: netdevsim in 6.1 has no wire): `yes` and
  `auto` install crypto offload that the device's debugfs lists, `packet` (not in 6.1) fails
  installing nothing, and `down` empties the device. Installation is proven, not traffic.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from interop import wait_for
from netlab import Host, NetdevSim, Network
from strongswan import Charon, swanctl_conf
from xfrmctl_host import Xfrmctl, write_psk

PSK = "child options lab secret, not for production"
A_ID, B_ID = "a.lab.example", "b.lab.example"
A_IP, B_IP = "10.98.0.1", "10.98.0.2"
CHILDREN = {  # name: (inner index, xfrmctl child options, strongSwan esp_proposals)
    "st": (1, "close_action: start", "aes256gcm16"),
    "tr": (2, "close_action: trap", "aes256gcm16"),
    "kopt": (3, "replay_window: 128\nif_id_in: 7\nif_id_out: 8", "aes256gcm16-esn"),
    "hwyes": (4, "hw_offload: yes", "aes256gcm16"),
    "hwauto": (5, "hw_offload: auto", "aes256gcm16"),
}
# Connection `nsim` from N_IP, an address on the netdevsim device. netdevsim offloads only
# rfc4106(gcm(aes)) with a 128-bit key and ICV, and no ESN.
N_ID, N_IP = "n.lab.example", "10.98.3.1"
NSIM_CHILDREN = {
    "nsyes": (6, "hw_offload: yes", "aes128gcm16"),
    "nspkt": (7, "hw_offload: packet", "aes128gcm16"),
    "nsauto": (8, "hw_offload: auto", "aes128gcm16"),
}


def inner(side: str, index: int) -> str:
    return f"10.98.{1 if side == 'a' else 2}.{index}"


def xfrmctl_config(workdir: Path) -> Path:
    psk = write_psk(workdir, "a", PSK)
    conns = ""
    for conn, local_ip, local_id, table in (
        ("peer", A_IP, A_ID, CHILDREN),
        ("nsim", N_IP, N_ID, NSIM_CHILDREN),
    ):
        children = ""
        for name, (i, extra, esp) in table.items():
            opts = "".join(f"\n        {line}" for line in extra.splitlines())
            children += (
                f"      {name}:\n        local_ts: [{inner('a', i)}/32]\n"
                f"        remote_ts: [{inner('b', i)}/32]\n        esp_proposals: [{esp}]{opts}\n"
            )
        conns += (
            f"  {conn}:\n    local_addrs: [{local_ip}]\n    remote_addrs: [{B_IP}]\n"
            f"    local: {{id: {local_id}, auth: psk}}\n    remote: {{id: {B_ID}, auth: psk}}\n"
            f"    psk_file: {psk}\n    children:\n{children}"
        )
    cfg = workdir / "a.yaml"
    cfg.write_text("connections:\n" + conns)
    return cfg


def charon_config() -> str:
    conns = []
    for conn, remote_ip, remote_id, table in (
        ("peer", A_IP, A_ID, CHILDREN),
        ("nsim", N_IP, N_ID, NSIM_CHILDREN),
    ):
        children = "".join(
            f"      {name} {{\n        local_ts = {inner('b', i)}/32\n"
            f"        remote_ts = {inner('a', i)}/32\n        esp_proposals = {esp}\n      }}\n"
            for name, (i, _, esp) in table.items()
        )
        conns.append(
            f"  {conn} {{\n    version = 2\n"
            f"    local_addrs = {B_IP}\n    remote_addrs = {remote_ip}\n"
            "    proposals = aes256gcm16-prfsha384-x25519\n"
            f"    local {{\n      auth = psk\n      id = {B_ID}\n    }}\n"
            f"    remote {{\n      auth = psk\n      id = {remote_id}\n    }}\n"
            f"    children {{\n{children}    }}\n  }}\n"
        )
    return swanctl_conf(conns, [(A_ID, B_ID, PSK), (N_ID, B_ID, PSK)])


def child_status(da: Xfrmctl, name: str) -> dict[str, Any] | None:
    status = da.status()
    for ike in status["ike_sas"]:
        for child in ike["children"]:
            if child["name"] == name and child["state"] == "INSTALLED":
                result: dict[str, Any] = child
                return result
    return None


def child_spis(da: Xfrmctl, name: str) -> set[int]:
    """Inbound and outbound SPI of the child's installed pair, from `status --json`."""
    child = child_status(da, name)
    return set() if child is None else {int(child["spi_in"], 16), int(child["spi_out"], 16)}


def kernel_spis(host: Host) -> set[int]:
    return {int(x, 16) for x in re.findall(r"\bspi (0x[0-9a-f]+)", host.xfrm_state_text())}


def states_of(host: Host, spis: set[int]) -> list[str]:
    blocks = re.split(r"\n(?=src )", host.xfrm_state_text())
    return [b for b in blocks if any(f"spi {spi:#010x}" in b for spi in spis)]


def shown(host: Host) -> str:
    """`ip xfrm state` for an assertion message, keys left out."""
    text = host.xfrm_state_text()
    return re.sub(r"(aead|enc|auth|auth-trunc) (\S+) 0x[0-9a-f]+", r"\1 \2 <key>", text)


def ping(host: Host, index: int, count: int = 3) -> bool:
    cmd = f"ping -n -c {count} -i 0.3 -W 2 -I {inner('a', index)} {inner('b', index)}"
    return host.run(cmd, check=False).returncode == 0


def test_close_action_kernel_options_and_offload(net: Network, lab_out: Path) -> None:
    workdir = lab_out / "child-options"
    workdir.mkdir(parents=True, exist_ok=True)
    a, b = net.host("a"), net.host("b")
    sw, devs = net.bridge([(a, f"{A_IP}/24"), (b, f"{B_IP}/24")])
    for i, _, _ in [*CHILDREN.values(), *NSIM_CHILDREN.values()]:
        a.run(f"ip addr add {inner('a', i)}/32 dev lo")
        b.run(f"ip addr add {inner('b', i)}/32 dev lo")
    nsim = net.netdevsim(a)
    a.run(f"ip addr add {N_IP}/32 dev {nsim.dev}")
    b.run(f"ip route add {N_IP}/32 via {A_IP}")  # IKE from N_IP leaves a through the veth
    for side, host in (("a", a), ("b", b)):
        other = "b" if side == "a" else "a"
        gw = B_IP if side == "a" else A_IP
        host.run(f"ip route add 10.98.{1 if other == 'a' else 2}.0/24 via {gw}")
    charon = Charon(b, workdir, charon_config())
    da = Xfrmctl(a, workdir, xfrmctl_config(workdir))
    try:
        run_scenario(net, a, b, sw, devs["a"], charon, da)
        offload_phase(a, charon, da, nsim)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- xfrmctl log ---\n{da.log.read_text()[-6000:]}\n"
            f"--- charon log ---\n{charon.log_text()[-6000:]}"
        ) from None
    finally:
        codes = (da.stop(), charon.stop())
    assert codes[0] == 0
    for host in (a, b):
        assert host.xfrm_state_text().strip() == "", host.xfrm_state_text()


def run_scenario(
    net: Network, a: Host, b: Host, sw: Host, dev_a: str, charon: Charon, da: Xfrmctl
) -> None:
    for name in ("st", "tr", "kopt"):
        da.cli("up", f"peer/{name}")
    for name in ("st", "tr"):
        assert ping(a, CHILDREN[name][0]), f"no traffic through {name}"

    # Kernel options, read back from the kernel.
    kopt = CHILDREN["kopt"][0]
    states = states_of(a, child_spis(da, "kopt"))
    assert len(states) == 2, a.xfrm_state_text()
    for text in states:
        assert re.search(r"flag [a-z0-9- ]*\besn\b", text), text  # with af-unspec: tunnel
        assert re.search(r"replay_window 128\b", text), text
    ifids = sorted(m.group(1) for s in states if (m := re.search(r"if_id (0x[0-9a-f]+)", s)))
    assert ifids == ["0x7", "0x8"], states
    blocks = re.split(r"\n(?=src )", a.xfrm_policy_text())
    policies = [p for p in blocks if f"{inner('a', kopt)}/32" in p or f"{inner('b', kopt)}/32" in p]
    assert len(policies) == 3, a.xfrm_policy_text()  # in, fwd, out
    for p in policies:
        want = "0x8" if "dir out" in p else "0x7"
        assert f"if_id {want}" in p, p

    # close_action start: strongSwan closes the child, xfrmctl brings it back.
    st = CHILDREN["st"][0]
    old = child_spis(da, "st")
    assert len(old) == 2 and old <= kernel_spis(a)
    charon.swanctl("--terminate", "--child", "st", "--timeout", "30")
    wait_for(lambda: not (old & kernel_spis(a)), "st removed")
    wait_for(lambda: len(child_spis(da, "st")) == 2, "st re-established")
    assert not (child_spis(da, "st") & old)
    assert ping(a, st), "no traffic after close_action start"

    # close_action trap: closed by strongSwan, the trap sends the next packet through IKE.
    tr = CHILDREN["tr"][0]
    old = child_spis(da, "tr")
    charon.swanctl("--terminate", "--child", "tr", "--timeout", "30")
    wait_for(lambda: not (old & kernel_spis(a)), "tr removed")
    blocks = re.split(r"\n(?=src )", a.xfrm_policy_text())
    trap = [p for p in blocks if f"dst {inner('b', tr)}/32" in p and "dir out" in p]
    assert trap, a.xfrm_policy_text()
    with net.capture(sw, "br0", f"host {A_IP}") as cap:
        a.run(f"ping -n -c 1 -W 1 -I {inner('a', tr)} {inner('b', tr)}", check=False)  # ACQUIRE
        wait_for(lambda: len(child_spis(da, "tr")) == 2, "tr re-negotiated on traffic")
        assert ping(a, tr), "no traffic after close_action trap"
    assert "ICMP echo" not in cap.text, "cleartext while the trap was in place:\n" + cap.text

    # hw_offload: yes on a device without IPsec offload fails and installs nothing.
    before = kernel_spis(a)
    proc = da.cli("up", "peer/hwyes", check=False)
    assert proc.returncode == 1, proc
    message = proc.stdout + proc.stderr
    assert "hw_offload yes" in message and f"{dev_a} has no IPsec offload" in message, message
    assert kernel_spis(a) == before, a.xfrm_state_text()
    assert child_status(da, "hwyes") is None
    # auto falls back to software and works.
    da.cli("up", "peer/hwauto")
    assert ping(a, CHILDREN["hwauto"][0]), "no traffic with hw_offload auto"
    assert "offload" not in a.xfrm_state_text()  # veth: software

    da.cli("down", "peer")
    wait_for(lambda: charon.ike_sa_count("peer") == 0, "strongSwan to drop the IKE SA", 30)


def offload_phase(a: Host, charon: Charon, da: Xfrmctl, nsim: NetdevSim) -> None:
    """Every check is collected first, so a run with offload switched off shows them all."""
    da.cli("up", "nsim/nsyes")
    problems = offload_problems(a, da, nsim, "nsyes")
    before, held = kernel_spis(a), nsim.offloaded()
    proc = da.cli("up", "nsim/nspkt", check=False)
    message = proc.stdout + proc.stderr
    if (
        proc.returncode != 1
        or f"hw_offload packet: the kernel refused offload to {nsim.dev}" not in message
    ):
        problems.append(f"packet offload on 6.1 did not fail clearly: {proc}")
    if kernel_spis(a) != before or nsim.offloaded() != held or child_status(da, "nspkt"):
        problems.append("the failed packet offload left SAs behind")
    da.cli("up", "nsim/nsauto")
    problems += offload_problems(a, da, nsim, "nsauto")
    da.cli("down", "nsim")
    wait_for(lambda: charon.ike_sa_count("nsim") == 0, "strongSwan to drop the nsim IKE SA", 30)
    if nsim.offloaded() or a.xfrm_state_text().strip():
        problems.append(f"left after down: {nsim.offloaded()} on {nsim.dev}")
    assert not problems, "\n".join(problems) + "\n" + shown(a)


def offload_problems(a: Host, da: Xfrmctl, nsim: NetdevSim, name: str) -> list[str]:
    """What is wrong with `name`'s crypto offload to `nsim`: kernel, device and status."""
    child = child_status(da, name)
    if child is None:
        return [f"{name} is not installed"]
    spi_in, spi_out = int(child["spi_in"], 16), int(child["spi_out"], 16)
    problems = []
    for spi, way in ((spi_in, "in"), (spi_out, "out")):
        want = f"crypto offload parameters: dev {nsim.dev} dir {way}"
        if want not in "".join(states_of(a, {spi})):
            problems.append(f"{name}: SA {spi:#x} lacks '{want}'")
    held = nsim.offloaded()
    if ("rx", spi_in) not in held or ("tx", spi_out) not in held:
        problems.append(f"{name}: {nsim.dev}'s debugfs lists {held}, not {spi_in:#x}/{spi_out:#x}")
    if (child["offload"], child["offload_mode"]) != (nsim.dev, "crypto"):
        problems.append(f"{name}: status says offload {child['offload']!r} {child['offload_mode']}")
    return problems
