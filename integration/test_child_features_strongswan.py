"""IPComp and marks against strongSwan in the real kernel (issue 10, items 1 and 4).

One network, one charon (host b, every child `ipcomp = yes`) and one xfrmctl (host a); each
child has its own inner address pair:
- `zip` (ipcomp: yes, xfrmctl initiates it in IKE_AUTH and rekeys it after 10 packets) and
  `zipr` (ipcomp: yes, charon initiates it with CREATE_CHILD_SA and rekeys it): a compressible
  1000-byte ping crosses as ESP packets a fraction of its size, both ways; a default-sized ping
  (too small to compress) crosses as IP-in-IP under ESP, through the kernel's tunnel state;
- `plain` (ipcomp: no, charon initiates with IPCOMP_SUPPORTED): uncompressed, and working;
- `mk` (mark_in 0x2a/0xff, mark_out 0x2a): only packets carrying the mark (`ping -m`) are
  encrypted, the rest crosses in the clear; an nftables rule marks arriving ESP, as a VTI
  would, so replies match the marked inbound policy; a rekey deletes the old marked SAs;
- `wide` (10.98.x.8/29 on our side): charon starts two children inside it, `n1` and `n2`, each
  one /32 pair; each gets its own reqid, so each pair's ping takes its own SA (with one reqid
  the kernel sent both pairs through one SA and charon dropped the other's), and closing `n1`
  leaves `n2` working;
and `down` leaves no SA (IPComp, IP-in-IP or ESP) and no policy behind.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from interop import non_socket_policies, wait_for
from netlab import Host, Network
from strongswan import Charon, swanctl_conf
from xfrmctl_host import Xfrmctl, write_psk

PSK = "child features lab secret, not for production"
A_ID, B_ID = "a.lab.example", "b.lab.example"
A_IP, B_IP = "10.98.0.1", "10.98.0.2"
MARK = 0x2A
CHILDREN = {  # name: (inner index, xfrmctl child options)
    "zip": (1, "ipcomp: yes\nrekey_packets: 10\nlife_packets: 1000\nrand_packets: 0"),
    "zipr": (2, "ipcomp: yes"),
    "plain": (3, "ipcomp: no"),
    "mk": (4, f"mark_in: '{MARK:#x}/0xff'\nmark_out: {MARK:#x}"),
}
NARROW = {"n1": 9, "n2": 10}  # charon's children inside xfrmctl's `wide`
BIG = "-s 1000 -p 00"  # deflate turns its 1028 inner bytes into a few dozen


def inner(side: str, index: int) -> str:
    return f"10.98.{1 if side == 'a' else 2}.{index}"


def xfrmctl_config(workdir: Path) -> Path:
    psk = write_psk(workdir, "a", PSK)
    children = ""
    for name, (i, extra) in CHILDREN.items():
        opts = "".join(f"\n        {line}" for line in extra.splitlines())
        children += (
            f"      {name}:\n        local_ts: [{inner('a', i)}/32]\n"
            f"        remote_ts: [{inner('b', i)}/32]{opts}\n"
        )
    children += (
        f"      wide:\n        local_ts: [{inner('a', 8)}/29]\n"
        f"        remote_ts: [{inner('b', 8)}/29]\n        ipcomp: no\n"
    )
    cfg = workdir / "a.yaml"
    cfg.write_text(
        "connections:\n  peer:\n"
        f"    local_addrs: [{A_IP}]\n    remote_addrs: [{B_IP}]\n"
        f"    local: {{id: {A_ID}, auth: psk}}\n    remote: {{id: {B_ID}, auth: psk}}\n"
        f"    psk_file: {psk}\n    children:\n{children}"
    )
    return cfg


def charon_config() -> str:
    children = "".join(
        f"      {name} {{\n        local_ts = {inner('b', i)}/32\n"
        f"        remote_ts = {inner('a', i)}/32\n        esp_proposals = aes256gcm16\n"
        "        ipcomp = yes\n      }\n"
        for name, (i, _) in CHILDREN.items()
    )
    children += "".join(
        f"      {name} {{\n        local_ts = {inner('b', i)}/32\n"
        f"        remote_ts = {inner('a', i)}/32\n        esp_proposals = aes256gcm16\n      }}\n"
        for name, i in NARROW.items()
    )
    conn = (
        "  peer {\n    version = 2\n"
        f"    local_addrs = {B_IP}\n    remote_addrs = {A_IP}\n"
        "    proposals = aes256gcm16-prfsha384-x25519\n"
        f"    local {{\n      auth = psk\n      id = {B_ID}\n    }}\n"
        f"    remote {{\n      auth = psk\n      id = {A_ID}\n    }}\n"
        f"    children {{\n{children}    }}\n  }}\n"
    )
    return swanctl_conf([conn], [(A_ID, B_ID, PSK)])


def child_status(da: Xfrmctl, name: str) -> dict[str, Any] | None:
    for ike in da.status()["ike_sas"]:
        for child in ike["children"]:
            if child["name"] == name and child["state"] == "INSTALLED":
                found: dict[str, Any] = child
                return found
    return None


def installed(da: Xfrmctl, name: str) -> dict[str, Any]:
    wait_for(lambda: child_status(da, name) is not None, f"child {name} installed", timeout=60)
    child = child_status(da, name)
    assert child is not None
    return child


def rekeyed(da: Xfrmctl, name: str, old: dict[str, Any]) -> bool:
    child = child_status(da, name)
    return child is not None and child["spi_in"] != old["spi_in"]


def ping(host: Host, index: int, extra: str = "", count: int = 3) -> bool:
    cmd = f"ping -n -c {count} -i 0.3 -W 2 {extra} -I {inner('a', index)} {inner('b', index)}"
    return host.run(cmd, check=False).returncode == 0


def esp_lengths(capture: str) -> dict[int, list[int]]:
    """IP lengths of the ESP packets on the wire, by SPI (tcpdump -v)."""
    out: dict[int, list[int]] = {}
    pattern = r"proto ESP \(50\), length (\d+)\)\n\s+\S+ > \S+: ESP\(spi=(0x[0-9a-f]+)"
    for length, spi in re.findall(pattern, capture):
        out.setdefault(int(spi, 16), []).append(int(length))
    return out


def states(host: Host) -> str:
    return host.xfrm_state_text()


def shown(host: Host) -> str:
    """`ip xfrm state` for an assertion message, keys left out."""
    return re.sub(r"(aead|enc|auth|auth-trunc) (\S+) 0x[0-9a-f]+", r"\1 \2 <key>", states(host))


def comp_spis(host: Host) -> set[int]:
    return {int(s, 16) for s in re.findall(r"proto comp spi (0x[0-9a-f]+)", states(host))}


def test_ipcomp_and_marks(net: Network, lab_out: Path) -> None:
    workdir = lab_out / "child-features"
    workdir.mkdir(parents=True, exist_ok=True)
    a, b = net.host("a"), net.host("b")
    sw, _ = net.bridge([(a, f"{A_IP}/24"), (b, f"{B_IP}/24")])
    for i in [i for i, _ in CHILDREN.values()] + list(NARROW.values()):
        a.run(f"ip addr add {inner('a', i)}/32 dev lo")
        b.run(f"ip addr add {inner('b', i)}/32 dev lo")
    a.run(f"ip route add 10.98.2.0/24 via {B_IP}")
    b.run(f"ip route add 10.98.1.0/24 via {A_IP}")
    charon = Charon(b, workdir, charon_config())
    da = Xfrmctl(a, workdir, xfrmctl_config(workdir))
    try:
        ipcomp_phase(net, a, sw, charon, da)
        marks_phase(net, a, sw, charon, da)
        narrowed_phase(a, charon, da)
        da.cli("down", "peer")
        wait_for(lambda: states(a).strip() == "", "no SA left after down", timeout=30)
        assert non_socket_policies(a) == "", non_socket_policies(a)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- charon log ---\n{charon.log_text()[-6000:]}") from None
    finally:
        codes = (da.stop(), charon.stop())
    assert codes[0] == 0


def ipcomp_phase(net: Network, a: Host, sw: Host, charon: Charon, da: Xfrmctl) -> None:
    da.cli("up", "peer/zip")  # IKE_AUTH, xfrmctl initiating
    charon.initiate("peer", "zipr")  # CREATE_CHILD_SA, xfrmctl answering
    charon.initiate("peer", "plain")  # charon offers IPComp, xfrmctl's child declines
    zip_, zipr, plain = (installed(da, n) for n in ("zip", "zipr", "plain"))
    for child in (zip_, zipr):
        assert child["ipcomp"] is not None, child
    assert plain["ipcomp"] is None, plain
    cpis = {int(c["ipcomp"][k], 16) for c in (zip_, zipr) for k in ("cpi_in", "cpi_out")}
    assert cpis == comp_spis(a), shown(a)
    sas = charon.swanctl("--list-sas", "--raw").stdout
    assert f"cpi-in={zip_['ipcomp']['cpi_out']}" in sas, sas  # charon's own CPI, as we use it
    assert re.search(r"proto 4 spi", states(a)), shown(a)  # the kernel's IP-in-IP state
    assert "comp deflate" in states(a)

    with net.capture(sw, "br0") as cap:
        for i in (1, 2, 3):
            assert ping(a, i, BIG), f"big ping on child {i}"
        assert ping(a, 1), "small (uncompressed IP-in-IP) ping on zip"
    lengths = esp_lengths(cap.text)
    evidence = Path(charon.log).parent / "esp-lengths.txt"  # the wire, for a reader of lab-out
    evidence.write_text(
        "".join(
            f"{c['name']} {key} {c[key]}: {lengths.get(int(c[key], 16), [])}\n"
            for c in (zip_, zipr, plain)
            for key in ("spi_out", "spi_in")
        )
    )
    for child in (zip_, zipr):
        for key in ("spi_out", "spi_in"):
            got = lengths.get(int(child[key], 16), [])
            assert got and min(got) < 300, (child["name"], key, got)  # compressed, both ways
    for key in ("spi_out", "spi_in"):
        got = lengths.get(int(plain[key], 16), [])
        assert len(got) >= 3 and min(got) > 1000, ("plain", key, got)
    assert "ICMP echo" not in cap.text, cap.text[-3000:]

    # Rekeys: charon's of zipr (xfrmctl answers), xfrmctl's own of zip (past rekey_packets).
    charon.swanctl("--rekey", "--child", "zipr")
    ping(a, 1, count=6)
    for name, old in (("zipr", zipr), ("zip", zip_)):
        wait_for(functools.partial(rekeyed, da, name, old), f"{name} rekeyed", timeout=90)
        new = installed(da, name)
        assert new["ipcomp"] is not None and new["ipcomp"] != old["ipcomp"], (old, new)
        assert ping(a, CHILDREN[name][0], BIG), f"big ping on rekeyed {name}"
    old_cpis = {int(zipr["ipcomp"][k], 16) for k in ("cpi_in", "cpi_out")}
    wait_for(lambda: not old_cpis & comp_spis(a), "zipr's old IPComp SAs removed", timeout=30)


def marks_phase(net: Network, a: Host, sw: Host, charon: Charon, da: Xfrmctl) -> None:
    # As a VTI would: arriving ESP carries the mark, so decrypted packets match mark_in.
    a.run(
        "nft add table ip mk && nft add chain ip mk pre "
        "'{ type filter hook prerouting priority -150; }' && "
        f"nft add rule ip mk pre ip protocol esp meta mark set {MARK:#x}"
    )
    da.cli("up", "peer/mk")
    mk = installed(da, "mk")
    assert (mk["mark_in"], mk["mark_out"]) == ("0x2a/0xff", "0x2a/0xffffffff"), mk
    policies = a.xfrm_policy_text()
    assert len(re.findall(r"mark 0x2a/0xff(?![0-9a-f])", policies)) >= 2, policies  # in, fwd
    assert "mark 0x2a/0xffffffff" in policies, policies  # out
    blocks = re.split(r"\n(?=src )", states(a))
    out_sa = [s for s in blocks if f"spi 0x{mk['spi_out']}" in s]
    assert out_sa and "mark 0x2a/0xffffffff" in out_sa[0], shown(a)

    with net.capture(sw, "br0") as cap:
        marked = ping(a, 4, f"-m {MARK}")
        unmarked = ping(a, 4, count=2)
    assert marked, "the marked ping goes through the tunnel"
    assert not unmarked  # in the clear, and charon drops what its policy wants encrypted
    text = cap.text
    assert re.search(rf"> {re.escape(inner('b', 4))}: ICMP echo request", text), text[-3000:]
    mk_out = int(mk["spi_out"], 16)
    assert len(esp_lengths(text).get(mk_out, [])) >= 3, text[-3000:]
    counters = installed(da, "mk")
    assert counters["packets_out"] >= 3 and counters["packets_in"] >= 3, counters

    # A rekey deletes the old marked SAs (found only with their mark).
    charon.swanctl("--rekey", "--child", "mk")
    wait_for(lambda: rekeyed(da, "mk", mk), "mk rekeyed", timeout=60)
    old = {mk["spi_in"], mk["spi_out"]}
    wait_for(
        lambda: not any(f"spi 0x{spi}" in states(a) for spi in old),
        "the old marked SAs deleted",
        timeout=30,
    )
    assert ping(a, 4, f"-m {MARK}"), "marked ping after the rekey"


def narrowed_phase(a: Host, charon: Charon, da: Xfrmctl) -> None:
    for name in NARROW:
        charon.initiate("peer", name)  # CREATE_CHILD_SA, each narrowing our `wide`
    wait_for(lambda: len(wide_children(da)) == 2, "two Child SAs of `wide`", timeout=60)
    reqids = {
        spi: re.search(rf"spi 0x{spi} reqid (\d+)", states(a))
        for spi in (c["spi_in"] for c in wide_children(da))
    }
    assert all(reqids.values()), shown(a)
    assert len({m.group(1) for m in reqids.values() if m}) == 2, shown(a)
    for name, i in NARROW.items():
        assert ping(a, i), f"ping through {name}, inside `wide`"
    charon.swanctl("--terminate", "--child", "n1")
    wait_for(lambda: len(wide_children(da)) == 1, "n1 closed", timeout=30)
    assert ping(a, NARROW["n2"]), "n2 works once n1 is gone"


def wide_children(da: Xfrmctl) -> list[dict[str, Any]]:
    return [
        child
        for ike in da.status()["ike_sas"]
        for child in ike["children"]
        if child["name"] == "wide" and child["state"] == "INSTALLED"
    ]
