"""Test hosts as network namespaces: links, bridges, routes, NAT, packet capture, XFRM readouts.

Every namespace and process a `Network` creates is removed by `close()`, which the pytest
fixture calls even when a test fails; deleting a namespace also deletes its veth ends.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from zygote import ForkedProcess

Command = str | Sequence[str]
_counter = itertools.count()
NSIM_BUS = Path("/sys/bus/netdevsim")
DEBUGFS = Path("/sys/kernel/debug")


def esp_unavailable() -> str | None:
    """None when this kernel can install an ESP SA, else the kernel's reason it cannot."""
    ns = f"xfrmctl-esp-probe-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        proc = subprocess.run(
            ["ip", "-n", ns, "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2",
             "proto", "esp", "spi", "0x100", "mode", "transport",
             "aead", "rfc4106(gcm(aes))", "0x" + "00" * 20, "128"],
            capture_output=True,
            text=True,
        )  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    return None if proc.returncode == 0 else proc.stderr.strip()


# Anything a shell would interpret; a command line without it is split on spaces and run
# directly. Under emulation the extra shell (dash forks its command rather than exec it) was
# about 40 ms of guest CPU per call, and the lab makes some 1,500 of them.
_SHELL_SYNTAX = re.compile(r"[|&;<>()$`\\\"'*?\[\]#~{}!\n]")
_SHELL_ONLY = frozenset({"cd", "exec", "exit", "export", "set", "ulimit", "wait", "trap", "."})


def _argv(cmd: Command) -> list[str]:
    if not isinstance(cmd, str):
        return list(cmd)
    words = cmd.split()
    if not words or _SHELL_SYNTAX.search(cmd) or "=" in words[0] or words[0] in _SHELL_ONLY:
        return ["sh", "-c", cmd]
    return words


def _in_namespace(ns: str, cmd: Command) -> list[str]:
    """The command line that runs `cmd` in namespace `ns`: iproute2 switches itself (`ip -n`),
    saving an exec; anything else goes through `ip netns exec`."""
    argv = _argv(cmd)
    if argv[0] == "ip" and argv[1:2] != ["netns"]:
        return ["ip", "-n", ns, *argv[1:]]
    return ["ip", "netns", "exec", ns, *argv]


@dataclass(frozen=True)
class SaCounters:
    spi: int
    src: str
    dst: str
    proto: str
    bytes: int
    packets: int


@dataclass
class Host:
    name: str
    ns: str
    processes: list[subprocess.Popen[str] | ForkedProcess] = field(default_factory=list)

    def run(
        self, cmd: Command, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside this host; on failure the error shows its output."""
        argv = _in_namespace(self.ns, cmd)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"[{self.name}] {cmd!r} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def adopt(self, proc: ForkedProcess) -> ForkedProcess:
        """A process started in this host by other means (a zygote's child): killed at teardown."""
        self.processes.append(proc)
        return proc

    def popen(self, cmd: Command, **kwargs: object) -> subprocess.Popen[str]:
        """Start a background process in this host; it is killed at teardown."""
        argv = _in_namespace(self.ns, cmd)
        proc: subprocess.Popen[str] = subprocess.Popen(  # type: ignore[call-overload]
            argv, text=True, start_new_session=True, **kwargs
        )
        self.processes.append(proc)
        return proc

    def ping(self, dst: str, count: int = 3, interval: float = 0.2, wait: float = 2) -> bool:
        proc = self.run(
            f"ping -n -c {count} -i {interval} -W {wait} {shlex.quote(dst)}", check=False
        )
        return proc.returncode == 0

    def xfrm_sa_counters(self) -> list[SaCounters]:
        """SA byte/packet counters as `ip -s xfrm state` shows them (iproute2 as the oracle)."""
        return parse_xfrm_state_stats(self.run("ip -s xfrm state").stdout)

    def xfrm_state_text(self) -> str:
        return self.run("ip xfrm state").stdout

    def xfrm_policy_text(self) -> str:
        return self.run("ip xfrm policy").stdout

    def xfrm_dir_policies(self) -> str:
        """Policies other than per-socket bypass ones ("socket in/out" of a running daemon)."""
        blocks = re.split(r"\n(?=src )", self.xfrm_policy_text())
        # iproute2 prints "\tdir out": match the word, not " dir ".
        return "\n".join(b for b in blocks if re.search(r"\bdir \w+", b))


_SA_HEAD = re.compile(r"^src (\S+) dst (\S+)\s*$")
_SA_PROTO = re.compile(r"^\s+proto (\S+) spi (0x[0-9a-f]+)")
_SA_CUR = re.compile(r"^\s+(\d+)\(bytes\), (\d+)\(packets\)")


def parse_xfrm_state_stats(text: str) -> list[SaCounters]:
    out: list[SaCounters] = []
    src = dst = proto = ""
    spi = 0
    in_current = False
    for line in text.splitlines():
        if m := _SA_HEAD.match(line):
            src, dst = m.groups()
            in_current = False
        elif m := _SA_PROTO.match(line):
            proto, spi = m.group(1), int(m.group(2), 16)
        elif "lifetime current:" in line:
            in_current = True
        elif in_current and (m := _SA_CUR.match(line)):
            out.append(SaCounters(spi, src, dst, proto, int(m.group(1)), int(m.group(2))))
            in_current = False
    return out


@dataclass(frozen=True)
class NetdevSim:
    """A netdevsim device (one port) in a host: a netdev that advertises ESP crypto offload
    and lists in debugfs the SAs the kernel offloaded to it. lab.py builds and loads the
    module; the device is created from inside the host, so it starts in the host's namespace."""

    id: int
    dev: str

    def offloaded(self) -> list[tuple[str, int]]:
        """(rx|tx, spi) of each SA the device holds. Only these fields are read: the debugfs
        file also shows the keys, which must not reach logs or assertion messages."""
        path = DEBUGFS / "netdevsim" / f"netdevsim{self.id}" / "ports" / "0" / "ipsec"
        text = path.read_text()
        dirs = dict(re.findall(r"^sa\[(\d+)\] ([rt]x) ipaddr=", text, re.M))
        spis = re.findall(r"^sa\[(\d+)\]\s+spi=(0x[0-9a-f]+)", text, re.M)
        return sorted((dirs.get(i, "?"), int(spi, 16)) for i, spi in spis)


def _netdevsim(host: Host, dev_id: int) -> NetdevSim:
    if not NSIM_BUS.is_dir():
        raise AssertionError(
            "netdevsim is not loaded: lab.py install builds it, the guest loads it"
        )
    if not os.path.ismount(DEBUGFS):
        subprocess.run(["mount", "-t", "debugfs", "none", str(DEBUGFS)], check=True)
    host.run(f"echo '{dev_id} 1' > {NSIM_BUS}/new_device")
    links = json.loads(host.run("ip -j -d link show").stdout)
    names = [x["ifname"] for x in links if x.get("parentdev") == f"netdevsim{dev_id}"]
    if len(names) != 1:
        raise AssertionError(f"no netdevsim{dev_id} netdev in {host.name}: {links}")
    host.run(f"ip link set {names[0]} up")
    return NetdevSim(dev_id, names[0])


@dataclass
class Capture:
    """A tcpdump running on one link of one host, read back as text after stop()."""

    host: Host
    dev: str
    pcap: Path
    proc: subprocess.Popen[str] | None = None
    text: str = ""

    def start(self, bpf: str = "") -> Capture:
        self.proc = self.host.popen(
            # --immediate-mode: without it libpcap hands packets over one ring block at a time
            # (after a timeout that stretches under TCG), and packets still in the ring when
            # SIGINT arrives never reach the file: a capture came back empty in CI that way.
            [
                "tcpdump",
                "-i",
                self.dev,
                "-n",
                "-U",
                "--immediate-mode",
                "-w",
                str(self.pcap),
                *shlex.split(bpf),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # tcpdump prints "listening on ..." once the capture is open.
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        if "listening" not in line:
            raise AssertionError(f"tcpdump did not start on {self.dev}: {line}")
        return self

    def stop(self) -> str:
        if self.proc is not None and self.proc.poll() is None:
            time.sleep(0.5)  # let the last packets reach the file
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=10)
        out = subprocess.run(
            ["tcpdump", "-n", "-v", "-r", str(self.pcap)], capture_output=True, text=True
        )
        if out.returncode != 0:
            raise AssertionError(f"tcpdump could not read {self.pcap}: {out.stderr.strip()}")
        self.text = out.stdout
        return self.text

    def lines(self) -> list[str]:
        return [ln for ln in self.text.splitlines() if ln and not ln.startswith(" ")]


class Network:
    """A set of named hosts (network namespaces) and the links between them."""

    def __init__(self, workdir: Path, prefix: str | None = None) -> None:
        self.workdir = workdir
        self.prefix = prefix or f"xl{os.getpid() % 10000}n{next(_counter)}"
        self.hosts: dict[str, Host] = {}
        self._links = 0
        self._netdevsims: list[int] = []

    def host(self, name: str, forward: bool = False) -> Host:
        ns = f"{self.prefix}-{name}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        host = Host(name, ns)
        self.hosts[name] = host
        host.run("ip link set lo up")
        host.run(f"sysctl -qw net.ipv4.ip_forward={int(forward)}")
        host.run(f"sysctl -qw net.ipv6.conf.all.forwarding={int(forward)}")
        host.run("sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0")
        return host

    def link(self, a: Host, a_addr: str, b: Host, b_addr: str) -> tuple[str, str]:
        """A veth pair between two hosts; returns the device names (in a, in b)."""
        n = self._links
        self._links += 1
        a_dev, b_dev = f"veth{n}{a.name[:5]}", f"veth{n}{b.name[:5]}"
        subprocess.run(
            [
                "ip",
                "link",
                "add",
                a_dev,
                "netns",
                a.ns,
                "type",
                "veth",
                "peer",
                "name",
                b_dev,
                "netns",
                b.ns,
            ],
            check=True,
        )
        for host, dev, addr in ((a, a_dev, a_addr), (b, b_dev, b_addr)):
            host.run(
                f"ip addr add {addr} dev {dev} nodad"
                if ":" in addr
                else f"ip addr add {addr} dev {dev}"
            )
            host.run(f"ip link set {dev} up")
        return a_dev, b_dev

    def bridge(
        self, members: Sequence[tuple[Host, str]], name: str = "sw"
    ) -> tuple[Host, dict[str, str]]:
        """A switch (bridge `br0` in its own namespace) joining several hosts.

        Returns the switch host and each member's device. Capture on the switch's `br0` to see
        exactly what crossed the wire: a capture on an endpoint's own device also shows
        tunnel-mode packets after the kernel decapsulated them.
        """
        sw = self.host(f"{name}{self._links}")
        sw.run("ip link add br0 type bridge && ip link set br0 up")
        devs: dict[str, str] = {}
        for host, addr in members:
            n = self._links
            self._links += 1
            h_dev, s_dev = f"veth{n}{host.name[:5]}", f"port{n}"
            subprocess.run(
                [
                    "ip",
                    "link",
                    "add",
                    h_dev,
                    "netns",
                    host.ns,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    s_dev,
                    "netns",
                    sw.ns,
                ],
                check=True,
            )
            sw.run(f"ip link set {s_dev} master br0 && ip link set {s_dev} up")
            host.run(f"ip addr add {addr} dev {h_dev} && ip link set {h_dev} up")
            devs[host.name] = h_dev
        return sw, devs

    def gateways(self) -> tuple[Host, Host, Host, Host, Host]:
        """left (10.1.0.2) — gwa ==switch== gwb — right (10.2.0.2), routed both ways.

        Returns (left, gwa, gwb, right, switch); the gateways are 192.0.2.1 and 192.0.2.2 on the
        switch, whose `br0` is where the protected wire is observed.
        """
        left, gwa = self.host("left"), self.host("gwa", forward=True)
        gwb, right = self.host("gwb", forward=True), self.host("right")
        self.link(left, "10.1.0.2/24", gwa, "10.1.0.1/24")
        switch, _ = self.bridge([(gwa, "192.0.2.1/24"), (gwb, "192.0.2.2/24")])
        self.link(gwb, "10.2.0.1/24", right, "10.2.0.2/24")
        left.run("ip route add default via 10.1.0.1")
        right.run("ip route add default via 10.2.0.1")
        self.route(gwa, "10.2.0.0/16", "192.0.2.2")
        self.route(gwb, "10.1.0.0/16", "192.0.2.1")
        return left, gwa, gwb, right, switch

    def netdevsim(self, host: Host) -> NetdevSim:
        """A netdevsim device in `host`, deleted by close() (a namespace's deletion would only
        move it back to the root namespace)."""
        dev_id = 1000 + (os.getpid() * 16 + len(self._netdevsims)) % 60000
        self._netdevsims.append(dev_id)
        return _netdevsim(host, dev_id)

    def route(self, host: Host, dst: str, via: str) -> None:
        host.run(f"ip route add {dst} via {via}")

    def masquerade(self, host: Host, out_dev: str) -> None:
        """Make `host` a NAT box that masquerades everything leaving through `out_dev`."""
        host.run("sysctl -qw net.ipv4.ip_forward=1")
        rules = (
            "table ip nat {\n"
            " chain postrouting { type nat hook postrouting priority srcnat;"
            f' oifname "{out_dev}" masquerade; }}\n'
            "}\n"
        )
        host.run(f"printf '%s' {shlex.quote(rules)} | nft -f -")

    @contextlib.contextmanager
    def capture(self, host: Host, dev: str, bpf: str = "") -> Iterator[Capture]:
        pcap = self.workdir / f"{host.ns}-{dev}-{next(_counter)}.pcap"
        cap = Capture(host, dev, pcap).start(bpf)
        try:
            yield cap
        finally:
            cap.stop()

    def close(self) -> None:
        for host in self.hosts.values():
            for proc in host.processes:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=5)
        for dev_id in self._netdevsims:
            with contextlib.suppress(OSError):
                (NSIM_BUS / "del_device").write_text(str(dev_id))
        self._netdevsims.clear()
        for host in self.hosts.values():
            subprocess.run(["ip", "netns", "del", host.ns], capture_output=True)
        self.hosts.clear()
