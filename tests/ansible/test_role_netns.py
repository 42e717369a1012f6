"""The role for real on this host: two network-namespace hosts, ansible-playbook through the
collection's `netns` connection. This kernel has no ESP, so the play that brings the tunnel up
is skipped (tag xfrmctl_up); integration/test_ansible_playbook.py does that in the lab guest.
Run with XFRMCTL_SLOW_TESTS=1 as root (a few minutes).

Checks idempotency (second run and check mode change nothing), that secrets are 0600 and never
printed, and that a configuration change reloads the running daemon instead of restarting it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
    # Several ansible-playbook runs: minutes, not the seconds the unit suite is meant to take.
    pytest.mark.skipif(
        os.environ.get("XFRMCTL_SLOW_TESTS") != "1", reason="slow (minutes): XFRMCTL_SLOW_TESTS=1"
    ),
]
pytest.importorskip("ansible", reason="ansible-core is in the dev extra")

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
PSK = "netns test secret that must never be printed"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


class Hosts:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ns = {name: f"xfa{os.getpid() % 100000}-{name}" for name in ("left", "right")}
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "add", ns], check=True)
        left, right = self.ns["left"], self.ns["right"]
        subprocess.run(
            [
                "ip",
                "link",
                "add",
                "va",
                "netns",
                left,
                "type",
                "veth",
                "peer",
                "vb",
                "netns",
                right,
            ],
            check=True,
        )
        for ns, dev, addr in ((left, "va", "10.98.0.1/24"), (right, "vb", "10.98.0.2/24")):
            subprocess.run(["ip", "-n", ns, "addr", "add", addr, "dev", dev], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        self.inventory = tmp / "inventory.yml"
        self.write_inventory({})

    def path(self, name: str, what: str) -> str:
        return {
            "xfrmctl_config_dir": str(self.tmp / name / "etc"),
            "xfrmctl_socket": str(self.tmp / name / "run" / "xfrmctl.sock"),
            "xfrmctl_pid_file": str(self.tmp / name / "daemon.pid"),
            "xfrmctl_log_file": str(self.tmp / name / "daemon.log"),
            "xfrmctl_bash_completion_dir": str(self.tmp / name / "completions"),
        }[what]

    def write_inventory(self, tunnel_options: dict[str, Any]) -> None:
        keys = (
            "xfrmctl_config_dir",
            "xfrmctl_socket",
            "xfrmctl_pid_file",
            "xfrmctl_log_file",
            "xfrmctl_bash_completion_dir",
        )
        hosts = {
            name: {
                "ansible_netns": ns,
                "xfrmctl_address": "10.98.0.1" if name == "left" else "10.98.0.2",
                **{key: self.path(name, key) for key in keys},
            }
            for name, ns in self.ns.items()
        }
        tunnel = {"name": "lr", "ends": ["left", "right"], "psk": PSK, **tunnel_options}
        group_vars = {
            "ansible_connection": "xfrmctl.ipsec.netns",
            "ansible_python_interpreter": str(BIN / "python"),
            "ansible_pipelining": True,
            "ansible_become": False,
            "xfrmctl_service_manager": "none",
            "xfrmctl_install": False,
            "xfrmctl_venv": str(REPO / ".venv"),
            "xfrmctl_cli_link": "",
            "xfrmctl_system_packages": [],
            "xfrmctl_tunnels": [tunnel],
        }
        inventory = {"xfrmctl": {"hosts": hosts, "vars": group_vars}}
        self.inventory.write_text(yaml.safe_dump(inventory))

    def playbook(self, *args: str) -> tuple[dict[str, int], str]:
        """Run site.yml without the tunnel-up play; returns changed counts per host and output."""
        home = self.tmp / "ansible-home"
        env = dict(
            os.environ,
            ANSIBLE_CONFIG=str(REPO / "ansible" / "ansible.cfg"),
            ANSIBLE_HOME=str(home),
            ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
            ANSIBLE_REMOTE_TEMP=str(home / "remote-tmp"),
            ANSIBLE_NOCOLOR="1",
        )
        cmd = [str(BIN / "ansible-playbook"), "-i", str(self.inventory)]
        cmd += ["-e", "xfrmctl_build_wheel=false", "--skip-tags", "xfrmctl_up", *args, "site.yml"]
        proc = subprocess.run(
            cmd,
            cwd=REPO / "ansible",
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        out = proc.stdout + proc.stderr
        assert PSK not in out, "the pre-shared key was printed"
        assert proc.returncode == 0, out
        changed = {m.group(1): int(m.group(3)) for m in map(RECAP.match, out.splitlines()) if m}
        return changed, out

    def pid(self, name: str) -> int:
        return int(Path(self.path(name, "xfrmctl_pid_file")).read_text())

    def close(self) -> None:
        for name in self.ns:
            try:
                pid = self.pid(name)
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError):
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    lab = Hosts(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


@pytest.mark.timeout(900)
def test_role_is_idempotent_and_reloads_on_change(hosts: Hosts) -> None:
    changed, out = hosts.playbook()
    assert changed["left"] > 0 and changed["right"] > 0, out
    for name in ("left", "right"):
        secret = Path(hosts.path(name, "xfrmctl_config_dir")) / "secrets" / "lr.psk"
        assert secret.stat().st_mode & 0o777 == 0o600 and secret.read_text() == PSK + "\n"
        config = yaml.safe_load(
            (Path(hosts.path(name, "xfrmctl_config_dir")) / "xfrmctl.yaml").read_text()
        )
        assert config["settings"]["socket"] == hosts.path(name, "xfrmctl_socket")
        assert config["connections"]["lr"]["psk_file"] == str(secret)
        assert Path(hosts.path(name, "xfrmctl_socket")).exists(), "daemon is not running"
        # The completion script registers itself with bash for the xfrmctl command.
        script = Path(hosts.path(name, "xfrmctl_bash_completion_dir")) / "xfrmctl"
        proc = subprocess.run(
            ["bash", "-c", f"source {script} && complete -p xfrmctl"],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0 and "_xfrmctl_completion" in proc.stdout, proc.stderr
    pids = {name: hosts.pid(name) for name in hosts.ns}

    changed, out = hosts.playbook()
    assert changed == {"left": 0, "right": 0, "localhost": 0}, out
    changed, out = hosts.playbook("--check", "--diff")
    assert changed == {"left": 0, "right": 0, "localhost": 0}, out

    hosts.write_inventory({"connection_options": {"dpd_delay": "30s"}})
    config = Path(hosts.path("left", "xfrmctl_config_dir")) / "xfrmctl.yaml"
    before = config.read_text()
    changed, out = hosts.playbook("--check", "--diff")
    assert changed["left"] > 0 and "+    dpd_delay: 30s" in out, out
    assert config.read_text() == before, "check mode changed the configuration"

    changed, out = hosts.playbook()
    assert changed["left"] > 0 and changed["right"] > 0, out
    assert "dpd_delay: 30s" in config.read_text()
    assert out.count("RUNNING HANDLER [xfrmctl.ipsec.xfrmctl : Reload the background daemon]") == 1
    assert {name: hosts.pid(name) for name in hosts.ns} == pids, "the daemon was restarted"
    # One start, then the reload re-applied the changed connection (its trap policies).
    log = Path(hosts.path("left", "xfrmctl_log_file")).read_text()
    assert log.count("xfrmctl daemon ready") == 1, log
    assert "trap policies removed" in log.split("xfrmctl daemon ready", 1)[1], log
