#!/usr/bin/env python3
"""xfrmctl side by side with strongSwan's charon in one lab guest (issue 15): setup rate, CPU
and memory per setup, `up` latency and ESP throughput, same suite, same kernel, same run.

Each stack gets two network namespaces on a veth (initiator 192.168.77.1, responder .2), both
daemons of the same kind: IKE aes256gcm16-prfsha256-x25519, ESP aes256gcm16, PSK, tunnel
mode. The initiator has N connections with one /32<->/32 child each (10.1.x.y <-> 10.2.x.y);
the responder one connection whose /16s narrow to each pair, with the half-open DoS limits
lifted on both stacks (one initiator address runs N half-open SAs). Setup is driven the way an
operator adds sites at scale: the N connections are loaded into the running initiator with
`start_action: start` (`swanctl --load-conns`, xfrmctl's `reload` request), and the interval
runs until both kernels hold 2N SAs. Must run as root in the lab guest:

  ./lab.sh bench --n 200
  .venv/bin/python integration/lab.py exec -- .venv/bin/python bench/tunnels.py --n 200

Last line (machine-readable), ratios xfrmctl/strongSwan:
  ratio_setups_per_s=R ratio_cpu_ms_per_setup=R ratio_kib_per_ike_sa=R ratio_up_latency=R
  ratio_first_packet=R ratio_rekey_storm=R n=N
The first-packet and rekey-storm phases are described in bench/tunnel_phases.py.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "integration"), str(REPO / "bench")]

from netlab import Host, Network  # noqa: E402
from tunnel_phases import StormResult, first_packet, rekey_storm  # noqa: E402

from xfrmctl.client import ControlClient  # noqa: E402

CHARON = "/usr/sbin/charon-systemd"
SWANCTL = "/usr/sbin/swanctl"
XFRMCTL = str(REPO / ".venv" / "bin" / "xfrmctl")
PSK = "bench secret, not for production"
INI, RESP = "192.168.77.1", "192.168.77.2"
IKE, ESP = "aes256gcm16-prfsha256-x25519", "aes256gcm16"
# iperf3 runs through a connection of its own, with its own responder connection (the
# initiator's ID picks it): one responder connection narrowed to many /32 pairs would leave
# several Child SAs of one reqid on xfrmctl's side (see bench/README.md).
TPUT = ("10.5.0.1", "10.6.0.1", "tput.bench")
LATENCY_CONNS = 5  # extra connections for `up` latency, initiated one by one afterwards
FIRST = 210 * 256  # the first-packet connections' sites: host_ip(FIRST + j, side)
# Configurations, secrets and logs of both stacks live on the guest's tmpfs during the run, as
# on a machine's local disk, and are copied to --out at the end: the lab's 9p share makes every
# write a round trip to the host, which xfrmctl's line-flushed log would pay per setup.
RUN = Path("/run/xfrmctl-bench")
METRICS_PORT = 9468  # each xfrmctl daemon's Prometheus endpoint, in its own namespace
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# ------------------------------------------------------------------------ pure parts


def cpu_times(stat: str, clk_tck: int = CLK_TCK) -> tuple[float, float]:
    """(utime, stime) of a /proc/PID/stat line (the command may hold spaces and parentheses)."""
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / clk_tck, int(fields[12]) / clk_tck  # fields 14 and 15 of stat(5)


def cpu_seconds(stat: str, clk_tck: int = CLK_TCK) -> float:
    """utime + stime of a /proc/PID/stat line."""
    return sum(cpu_times(stat, clk_tck))


def rss_kib(status: str) -> int:
    """VmRSS of a /proc/PID/status text, in KiB."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError("no VmRSS line")


def sad_count(text: str) -> int:
    """`ip xfrm state count`: '\\t SAD count 42'."""
    return int(text.split()[-1])


RATIO_KEYS = (
    ("setups_per_s", "ratio_setups_per_s"),
    ("cpu_ms_per_setup", "ratio_cpu_ms_per_setup"),
    ("kib_per_ike_sa", "ratio_kib_per_ike_sa"),
    ("up_latency_s", "ratio_up_latency"),
    ("first_packet_s", "ratio_first_packet"),
    ("rekey_storm_s", "ratio_rekey_storm"),
)


def ratios(xfrmctl: dict[str, float], swan: dict[str, float]) -> dict[str, float]:
    """xfrmctl/strongSwan per figure, NaN where strongSwan's is 0."""
    return {key: xfrmctl[key] / swan[key] if swan.get(key) else math.nan for key, _ in RATIO_KEYS}


def median_ratios(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds' ratios: each round pairs the two stacks under the
    same load, so its ratio is the comparable quantity, and the median drops a round that one
    stack ran on a busy host."""
    return {
        key: statistics.median(r[key] for r in rounds) if rounds else math.nan
        for key, _ in RATIO_KEYS
    }


def round_order(k: int) -> tuple[str, str]:
    """Which stack runs first in round k (from 1): alternating, so neither always runs on a
    freshly booted guest."""
    return ("xfrmctl", "strongswan") if k % 2 else ("strongswan", "xfrmctl")


def ratio_line(rs: dict[str, float], n: int, rounds: int = 1) -> str:
    """Setup rate as xfrmctl/strongSwan (above 1: xfrmctl faster); the rest xfrmctl/strongSwan
    (below 1: xfrmctl cheaper or quicker)."""
    line = " ".join(f"{name}={rs[key]:.3f}" for key, name in RATIO_KEYS) + f" n={n}"
    return line + (f" rounds={rounds}" if rounds > 1 else "")


def site_pair(i: int) -> tuple[str, str]:
    """The i-th site's addresses behind the initiator and behind the responder."""
    return host_ip(i, 1), host_ip(i, 2)


def host_ip(i: int, side: int) -> str:
    """The i-th site's address (side 1: behind the initiator, 2: behind the responder)."""
    return f"10.{side}.{(i + 1) // 256}.{(i + 1) % 256}"


def prom_value(text: str, name: str) -> float:
    """The value of sample `name` (labels included, as written) in a Prometheus text
    exposition; 0 when absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def charon_retransmits(log: str) -> int:
    """charon's "retransmit N of request" lines (IKE level 1, which the bench logs)."""
    return len(re.findall(r"\] retransmit \d+ of request", log))


# ------------------------------------------------------------------------ measuring a daemon


@dataclass
class Sample:
    cpu_s: float
    sys_s: float  # of cpu_s, in the kernel (XFRM installs, sockets, netlink)
    rss_kib: int


def sample(pid: int) -> Sample:
    proc = Path(f"/proc/{pid}")
    user, system = cpu_times((proc / "stat").read_text())
    return Sample(user + system, system, rss_kib((proc / "status").read_text()))


@dataclass
class StackResult:
    name: str
    n: int
    setup_s: float = 0.0
    cpu_ms_per_setup: dict[str, float] = field(default_factory=dict)
    sys_ms_per_setup: dict[str, float] = field(default_factory=dict)  # the kernel's part
    kib_per_ike_sa: dict[str, float] = field(default_factory=dict)
    idle_rss_kib: dict[str, int] = field(default_factory=dict)
    sas: dict[str, int] = field(default_factory=dict)
    up_latencies_s: list[float] = field(default_factory=list)
    first_packet_s: list[float] = field(default_factory=list)
    storm: StormResult = field(default_factory=StormResult)
    iperf_mbit_s: float = 0.0
    iperf_daemons_cpu_ms: float = 0.0  # both daemons, while iperf3 ran: they share its CPUs
    retransmits: dict[str, int] = field(default_factory=dict)  # IKE requests sent again

    def figures(self) -> dict[str, float]:
        return {
            "setups_per_s": self.n / self.setup_s,
            "cpu_ms_per_setup": sum(self.cpu_ms_per_setup.values()),
            "kib_per_ike_sa": sum(self.kib_per_ike_sa.values()) / 2,
            "up_latency_s": statistics.median(self.up_latencies_s),
            "first_packet_s": statistics.median(self.first_packet_s),
            "rekey_storm_s": self.storm.seconds,
        }


def timed_until_sas(
    hosts: list[Host], want: int, timeout: float, start: Callable[[], None]
) -> float:
    """Seconds from `start()` until every host's kernel holds `want` SAs. A watcher per
    namespace (bench/sa_watch.py), started before the interval, asks its kernel over netlink
    and notes when the count is reached: polling with an `ip` process per namespace four
    times a second took the guest's CPU from the daemons being measured."""
    argv = [sys.executable, str(REPO / "bench" / "sa_watch.py"), str(want), str(timeout)]
    watchers = [h.popen(argv, stdout=subprocess.PIPE) for h in hosts]
    for w in watchers:
        assert w.stdout is not None and w.stdout.readline().strip() == "ready"
    t0 = time.monotonic()
    start()
    ends = []
    for h, w in zip(hosts, watchers, strict=True):
        assert w.stdout is not None
        seen = w.stdout.readline().split()
        w.wait()
        if len(seen) != 2 or seen[0] == "timeout":
            raise SystemExit(f"{h.name}: not {want} SAs after {timeout:.0f} s ({' '.join(seen)})")
        ends.append(float(seen[0]))
    return max(ends) - t0


def measure_setup(
    res: StackResult, ini: Host, resp: Host, pids: dict[str, int], load: Callable[[], None]
) -> None:
    """Load the N connections into the running initiator and time them into both kernels."""
    before = {side: sample(pid) for side, pid in pids.items()}
    res.idle_rss_kib = {side: s.rss_kib for side, s in before.items()}
    res.setup_s = timed_until_sas([ini, resp], 2 * res.n, 60 + res.n * 2.0, load)
    time.sleep(1.0)  # let the last installs' bookkeeping finish before reading memory
    for side, pid in pids.items():
        after = sample(pid)
        res.cpu_ms_per_setup[side] = (after.cpu_s - before[side].cpu_s) * 1000 / res.n
        res.sys_ms_per_setup[side] = (after.sys_s - before[side].sys_s) * 1000 / res.n
        res.kib_per_ike_sa[side] = (after.rss_kib - before[side].rss_kib) / res.n
    res.sas = {h.name: sad_count(h.run("ip xfrm state count").stdout) for h in (ini, resp)}


def measure_up(res: StackResult, ini: Host, up_cmd: Callable[[str], list[str]]) -> None:
    """`up` latency (lat0..) and time to the first packet (first0..), the same way on both
    stacks; `up_cmd` is the stack's command bringing a connection up."""
    for j in range(LATENCY_CONNS):
        cmd = up_cmd(f"lat{j}")
        res.up_latencies_s.append(timed(functools.partial(ini.run, cmd, timeout=200)))
    for j in range(LATENCY_CONNS):
        up = functools.partial(ini.run, up_cmd(f"first{j}"), timeout=200)
        res.first_packet_s.append(first_packet(ini, up, *site_pair(FIRST + j)))


def timed(cmd: Callable[[], object]) -> float:
    t0 = time.monotonic()
    cmd()
    return time.monotonic() - t0


def cpu_spent_ms(pids: dict[str, int], during: Callable[[], object]) -> float:
    """CPU ms the processes `pids` used, summed, while `during` ran."""
    before = {side: sample(pid).cpu_s for side, pid in pids.items()}
    during()
    return sum(sample(pid).cpu_s - before[side] for side, pid in pids.items()) * 1000


def measure_iperf(res: StackResult, ini: Host, resp: Host, pids: dict[str, int], s: int) -> None:
    """iperf3 through the `tput` tunnel, and what the stack's daemons used meanwhile: on the
    guest's two CPUs, a daemon still busy (a storm's last deletes) slows the tunnel's
    traffic, and the SAs are the same on both stacks (same algorithm, ICV and replay window)."""

    def run() -> None:
        res.iperf_mbit_s = iperf(ini, resp, TPUT[0], TPUT[1], s)

    res.iperf_daemons_cpu_ms = cpu_spent_ms(pids, run)


def iperf(ini: Host, resp: Host, src: str, dst: str, seconds: int) -> float:
    server = resp.popen(["iperf3", "-s", "-1", "-B", dst], stdout=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        proc = ini.run(
            ["iperf3", "-c", dst, "-B", src, "-t", str(seconds), "-J"],
            check=False,
            timeout=seconds + 60,
        )
    finally:
        server.kill()
    if proc.returncode != 0:
        print(f"iperf3 {src} -> {dst} failed: {proc.stdout[-500:]}{proc.stderr[-500:]}")
        for host in (ini, resp):
            print(f"--- {host.name}:\n{host.run('ip xfrm policy; ip route').stdout[-3000:]}")
        return 0.0
    return float(json.loads(proc.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e6


# ------------------------------------------------------------------------ the two stacks


def topology(net: Network, n: int) -> tuple[Host, Host]:
    ini, resp = net.host("ini"), net.host("resp")
    net.link(ini, f"{INI}/24", resp, f"{RESP}/24")
    for host, side, peer in ((ini, 1, RESP), (resp, 2, INI)):
        for site in [0] + [FIRST + j for j in range(LATENCY_CONNS)]:
            host.run(f"ip addr add {host_ip(site, side)}/32 dev lo")
        host.run(f"ip route add 10.{3 - side}.0.0/16 via {peer}")
        host.run(f"ip addr add {TPUT[side - 1]}/32 dev lo")
        host.run(f"ip route add {TPUT[2 - side]}/32 via {peer}")
    return ini, resp


def charon_conf(workdir: Path, name: str, vici: str) -> Path:
    conf = workdir / f"{name}-strongswan.conf"
    conf.write_text(
        "charon {\n"
        "  install_routes = no\n"
        "  cookie_threshold = 100000\n  block_threshold = 100000\n"
        "  init_limit_half_open = 100000\n"
        f"  plugins {{\n    vici {{\n      socket = unix://{vici}\n    }}\n  }}\n"
        f"  filelog {{\n    bench {{\n      path = {workdir / name}-charon.log\n"
        "      default = 1\n    }\n  }\n"
        "}\n"
        f"swanctl {{\n  socket = unix://{vici}\n}}\n"
    )
    return conf


def swan_conn(
    name: str, local: str, remote: str, lts: str, rts: str, start: bool, ini_id: str = "ini.bench"
) -> str:
    ids = (ini_id, "resp.bench") if local == INI else ("resp.bench", ini_id)
    return (
        f"  {name} {{\n    local_addrs = {local}\n    remote_addrs = {remote}\n"
        f"    proposals = {IKE}\n    unique = never\n"
        f"    local {{\n      auth = psk\n      id = {ids[0]}\n    }}\n"
        f"    remote {{\n      auth = psk\n      id = {ids[1]}\n    }}\n"
        f"    children {{\n      net {{\n        local_ts = {lts}\n        remote_ts = {rts}\n"
        f"        esp_proposals = {ESP}\n        start_action = {'start' if start else 'none'}\n"
        "      }\n    }\n  }\n"
    )


def swan_file(conns: list[str]) -> str:
    return (
        "connections {\n" + "".join(conns) + "}\nsecrets {\n  ike-bench {\n"
        f"    id-1 = ini.bench\n    id-2 = resp.bench\n    id-3 = {TPUT[2]}\n"
        f'    secret = "{PSK}"\n  }}\n}}\n'
    )


class Charon:
    def __init__(self, host: Host, workdir: Path, conns: list[str]) -> None:
        self.host = host
        vici = f"/run/bench-charon-{host.ns}.vici"
        self.dir = workdir / f"{host.name}-swanctl"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "swanctl.conf").write_text(swan_file(conns))
        conf = charon_conf(workdir, host.name, vici)
        self.env = [f"STRONGSWAN_CONF={conf}", f"SWANCTL_DIR={self.dir}"]
        Path(vici).unlink(missing_ok=True)  # an earlier round's charon leaves its socket
        self.proc = host.popen(["env", *self.env, CHARON], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not Path(vici).exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"charon did not start in {host.name}")
            time.sleep(0.2)
        self.swanctl("--load-all")

    def swanctl(self, *args: str) -> None:
        proc = self.host.run(["env", *self.env, SWANCTL, *args], check=False, timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"swanctl {' '.join(args)}: {proc.stdout}{proc.stderr}")

    def load(self, conns: list[str]) -> None:
        (self.dir / "swanctl.conf").write_text(swan_file(conns))
        self.swanctl("--load-conns")


def run_strongswan(workdir: Path, n: int, iperf_s: int) -> StackResult:
    res = StackResult("strongswan", n)
    net = Network(workdir, "bsw")
    try:
        ini, resp = topology(net, n)
        lat = [
            swan_conn(
                f"lat{j}", INI, RESP, host_ip(200 * 256 + j, 1), host_ip(200 * 256 + j, 2), False
            )
            for j in range(LATENCY_CONNS)
        ]
        sites = [
            swan_conn(f"c{i}", INI, RESP, host_ip(i, 1), host_ip(i, 2), True) for i in range(n)
        ]
        lat += [
            swan_conn(f"first{j}", INI, RESP, host_ip(FIRST + j, 1), host_ip(FIRST + j, 2), False)
            for j in range(LATENCY_CONNS)
        ]
        lat.append(swan_conn("tput", INI, RESP, f"{TPUT[0]}/32", f"{TPUT[1]}/32", False, TPUT[2]))
        responder = Charon(
            resp,
            workdir,
            [
                swan_conn("any", RESP, INI, "10.2.0.0/16", "10.1.0.0/16", False),
                swan_conn("tput", RESP, INI, f"{TPUT[1]}/32", f"{TPUT[0]}/32", False, TPUT[2]),
            ],
        )
        initiator = Charon(ini, workdir, lat)
        pids = {"initiator": initiator.proc.pid, "responder": responder.proc.pid}
        measure_setup(res, ini, resp, pids, lambda: initiator.load(lat + sites))
        measure_up(
            res,
            ini,
            lambda name: [
                "env",
                *initiator.env,
                SWANCTL,
                "--initiate",
                "--child",
                "net",
                "--ike",
                name,
            ],
        )
        initiator.swanctl("--initiate", "--child", "net", "--ike", "tput")
        storm = functools.partial(initiator.swanctl, "--rekey", "--child", "net")
        res.storm = rekey_storm(ini, INI, storm, site_pair(0), timeout=60 + n * 1.0)
        measure_iperf(res, ini, resp, pids, iperf_s)
    finally:
        net.close()
    for side, host in (("initiator", "ini"), ("responder", "resp")):
        log = workdir / f"{host}-charon.log"
        res.retransmits[side] = charon_retransmits(log.read_text()) if log.exists() else -1
    return res


# `--xfrmctl-setting KEY=VALUE`: more settings for both xfrmctl daemons (experiments).
EXTRA_SETTINGS: list[tuple[str, str]] = []


def xfrmctl_yaml(workdir: Path, name: str, conns: list[str]) -> Path:
    cfg = workdir / f"{name}.yaml"
    cfg.write_text(
        "settings:\n  cookie_threshold: 100000\n  cookie_threshold_ip: 100000\n"
        "  block_threshold: 100000\n  init_limit_half_open: 100000\n"
        f"  metrics: {{listen: '127.0.0.1:{METRICS_PORT}'}}\n"
        + "".join(f"  {key}: {value}\n" for key, value in EXTRA_SETTINGS)
        + "connections:\n"
        + "".join(conns)
    )
    return cfg


def x_conn(
    name: str,
    local: str,
    remote: str,
    lts: str,
    rts: str,
    start: bool,
    psk: Path,
    ini_id: str = "ini.bench",
) -> str:
    ids = (ini_id, "resp.bench") if local == INI else ("resp.bench", ini_id)
    return (
        f"  {name}:\n    local_addrs: [{local}]\n    remote_addrs: [{remote}]\n"
        f"    proposals: [{IKE}]\n    local: {{id: {ids[0]}, auth: psk}}\n"
        f"    remote: {{id: {ids[1]}, auth: psk}}\n    psk_file: {psk}\n"
        f"    children:\n      net:\n        mode: tunnel\n        local_ts: [{lts}]\n"
        f"        remote_ts: [{rts}]\n        esp_proposals: [{ESP}]\n"
        f"        start_action: {'start' if start else 'none'}\n"
    )


def start_xfrmctl(host: Host, workdir: Path, cfg: Path) -> tuple[subprocess.Popen[str], Path]:
    sock = RUN / f"{host.ns}.sock"
    log = workdir / f"{host.name}-xfrmctl.log"
    proc = host.popen(
        [XFRMCTL, "daemon", "--config", str(cfg), "--socket", str(sock)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 400
    while "xfrmctl daemon ready" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"xfrmctl did not start in {host.name}:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    return proc, sock


def run_xfrmctl(workdir: Path, n: int, iperf_s: int) -> StackResult:
    res = StackResult("xfrmctl", n)
    net = Network(workdir, "bxf")
    try:
        ini, resp = topology(net, n)
        psk = workdir / "bench.psk"
        psk.write_text(PSK + "\n")
        psk.chmod(0o600)
        lat = [
            x_conn(
                f"lat{j}",
                INI,
                RESP,
                host_ip(200 * 256 + j, 1),
                host_ip(200 * 256 + j, 2),
                False,
                psk,
            )
            for j in range(LATENCY_CONNS)
        ]
        sites = [
            x_conn(f"c{i}", INI, RESP, host_ip(i, 1), host_ip(i, 2), True, psk) for i in range(n)
        ]
        lat += [
            x_conn(f"first{j}", INI, RESP, host_ip(FIRST + j, 1), host_ip(FIRST + j, 2), False, psk)
            for j in range(LATENCY_CONNS)
        ]
        lat.append(x_conn("tput", INI, RESP, f"{TPUT[0]}/32", f"{TPUT[1]}/32", False, psk, TPUT[2]))
        r_cfg = xfrmctl_yaml(
            workdir,
            "resp",
            [
                x_conn("any", RESP, INI, "10.2.0.0/16", "10.1.0.0/16", False, psk),
                x_conn("tput", RESP, INI, f"{TPUT[1]}/32", f"{TPUT[0]}/32", False, psk, TPUT[2]),
            ],
        )
        i_cfg = xfrmctl_yaml(workdir, "ini", lat)
        r_proc, _ = start_xfrmctl(resp, workdir, r_cfg)
        i_proc, i_sock = start_xfrmctl(ini, workdir, i_cfg)
        pids = {"initiator": i_proc.pid, "responder": r_proc.pid}

        def load() -> None:
            xfrmctl_yaml(workdir, "ini", lat + sites)
            ControlClient(i_sock, timeout=600).call("reload", {})

        measure_setup(res, ini, resp, pids, load)
        measure_up(res, ini, lambda name: [XFRMCTL, "--socket", str(i_sock), "up", name])
        ini.run([XFRMCTL, "--socket", str(i_sock), "up", "tput"], timeout=200)
        names = [f"c{i}" for i in range(n)] + [f"lat{j}" for j in range(LATENCY_CONNS)]
        names += [f"first{j}" for j in range(LATENCY_CONNS)] + ["tput"]

        def storm() -> None:
            client = ControlClient(i_sock, timeout=600)
            for name in names:
                client.call("rekey", {"name": name, "child": None, "ike": False})

        res.storm = rekey_storm(ini, INI, storm, site_pair(0), timeout=60 + n * 1.0)
        measure_iperf(res, ini, resp, pids, iperf_s)
        for side, host in (("initiator", ini), ("responder", resp)):
            res.retransmits[side] = int(
                prom_value(scrape(host), "xfrmctl_ike_retransmissions_total")
            )
    finally:
        net.close()
    return res


def scrape(host: Host) -> str:
    """The daemon's Prometheus text, from inside its namespace."""
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    code = (
        f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=30).read().decode())"
    )
    return host.run([sys.executable, "-c", code], timeout=60).stdout


def report(res: StackResult) -> None:
    f = res.figures()
    print(
        f"{res.name:10s} N={res.n}: {f['setups_per_s']:7.2f} setups/s ({res.setup_s:.1f} s), "
        f"CPU ms/setup initiator {res.cpu_ms_per_setup['initiator']:.1f} responder "
        f"{res.cpu_ms_per_setup['responder']:.1f} (system {res.sys_ms_per_setup['initiator']:.1f}"
        f" / {res.sys_ms_per_setup['responder']:.1f}), KiB/IKE SA initiator "
        f"{res.kib_per_ike_sa['initiator']:.1f} responder {res.kib_per_ike_sa['responder']:.1f} "
        f"(idle RSS {res.idle_rss_kib['initiator']}/{res.idle_rss_kib['responder']} KiB), "
        f"SAs {res.sas}, up median {f['up_latency_s']:.2f} s "
        f"({', '.join(f'{t:.2f}' for t in res.up_latencies_s)}), "
        f"first packet median {f['first_packet_s']:.2f} s, "
        f"rekey storm {res.storm.completed}/{res.storm.children} in {res.storm.seconds:.1f} s "
        f"({res.storm.failed} failed, {res.storm.lost} of {res.storm.pings_sent} pings lost), "
        f"iperf3 {res.iperf_mbit_s:.0f} Mbit/s (daemons' CPU meanwhile "
        f"{res.iperf_daemons_cpu_ms:.0f} ms), IKE retransmissions over the run "
        f"{res.retransmits.get('initiator', -1)} / {res.retransmits.get('responder', -1)}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="IKE SAs (one Child SA each)")
    ap.add_argument("--iperf-seconds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("XFRMCTL_LAB_OUT", "lab-out")))
    ap.add_argument(
        "--only",
        choices=("xfrmctl", "strongswan"),
        help="one stack's figures, no ratios (to profile it: see bench/README.md)",
    )
    ap.add_argument(
        "--xfrmctl-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for both xfrmctl daemons, e.g. start_window=0 (repeatable)",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run both stacks this many times, alternating which goes first; the last line "
        "gives each ratio's median over the rounds",
    )
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds: at least 1")
    for item in args.xfrmctl_setting:
        key, eq, value = item.partition("=")
        if not eq or not key:
            ap.error(f"--xfrmctl-setting {item!r}: expected KEY=VALUE")
        EXTRA_SETTINGS.append((key, value))
    if os.geteuid() != 0:
        raise SystemExit("run in the lab guest: ./lab.sh bench (needs root and ESP)")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    workdir = RUN / f"work-{stamp}"
    workdir.mkdir(parents=True)
    per_round: list[dict[str, float]] = []
    try:
        for k in range(1, args.rounds + 1):
            results = run_round(workdir, k, args)
            if args.only:
                continue
            xf, swan = results["xfrmctl"], results["strongswan"]
            if swan.iperf_mbit_s:
                iperf = xf.iperf_mbit_s / swan.iperf_mbit_s
                print(f"iperf3 ratio {iperf:.3f} (same kernel: expect ~1)")
            per_round.append(ratios(xf.figures(), swan.figures()))
            if args.rounds > 1:
                print(f"round {k}: {ratio_line(per_round[-1], args.n)}", flush=True)
    finally:
        shutil.copytree(workdir, args.out / f"bench-{stamp}")
        shutil.rmtree(workdir)
    if not args.only:
        print(ratio_line(median_ratios(per_round), args.n, args.rounds), flush=True)


def run_round(workdir: Path, k: int, args: argparse.Namespace) -> dict[str, StackResult]:
    """Both stacks (or --only's) once, in round k's order; each round's files apart."""
    runs = {"xfrmctl": run_xfrmctl, "strongswan": run_strongswan}
    where = workdir if args.rounds == 1 else workdir / f"round-{k}"
    where.mkdir(exist_ok=True)
    results: dict[str, StackResult] = {}
    for name in round_order(k):
        if args.only in (None, name):
            results[name] = runs[name](where, args.n, args.iperf_seconds)
            report(results[name])
    for res in results.values():
        if any(count < 2 * args.n for count in res.sas.values()):
            raise SystemExit(f"{res.name}: expected {2 * args.n} SAs in each kernel: {res.sas}")
    return results


if __name__ == "__main__":
    main()
