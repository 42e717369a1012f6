"""The Ansible collection for real: ansible/site.yml configures two lab hosts (network namespaces,
reached through the collection's `netns` connection) and the tunnel it brings up carries ESP.

Systemd is not PID 1 in the lab guest, so the role runs with `xfrmctl_service_manager: none`
(a plain background daemon) and `xfrmctl_install: false` (this checkout's virtualenv: the guest
has no network for pip). The systemd unit is checked by tests/ansible/test_systemd_unit.py.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from netlab import Network
from playbook_run import BIN, FAILED, REPO, Recap, ansible_env, run_playbook, stream_to_log

PSK = "ansible lab secret that must never be printed"


class Lab:
    """Two hosts, their inventory, and ansible-playbook run against them."""

    def __init__(self, net: Network, workdir: Path, tmp: Path) -> None:
        self.workdir = workdir
        self.tmp = tmp
        self.left, self.right = net.host("left"), net.host("right")
        self.sw, _ = net.bridge([(self.left, "10.99.0.1/24"), (self.right, "10.99.0.2/24")])
        self.hosts = {"left": self.left, "right": self.right}
        self.runs = 0
        self.inventory = tmp / "inventory.yml"
        self.write_inventory({})

    def paths(self, name: str) -> dict[str, str]:
        ns = self.hosts[name].ns
        return {
            # Configuration and secrets on the guest's tmpfs; sockets cannot live on 9p.
            "xfrmctl_config_dir": str(self.tmp / name / "etc"),
            "xfrmctl_socket": f"/run/xfrmctl-ansible/{ns}.sock",
            "xfrmctl_pid_file": f"/run/xfrmctl-ansible-{ns}.pid",
            "xfrmctl_log_file": str(self.workdir / f"{name}-daemon.log"),
        }

    def write_inventory(self, tunnel_options: dict[str, Any]) -> None:
        python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else str(BIN / "python")
        hosts = {
            name: {
                "ansible_netns": host.ns,
                "xfrmctl_address": "10.99.0.1" if name == "left" else "10.99.0.2",
                **self.paths(name),
            }
            for name, host in self.hosts.items()
        }
        inventory = {
            "xfrmctl": {
                "hosts": hosts,
                "vars": {
                    "ansible_connection": "xfrmctl.ipsec.netns",
                    "ansible_python_interpreter": python,
                    "ansible_pipelining": True,
                    "ansible_become": False,
                    "xfrmctl_service_manager": "none",
                    "xfrmctl_install": False,
                    "xfrmctl_venv": str(REPO / ".venv"),
                    "xfrmctl_cli_link": "",
                    # The guest's /usr is the host's, read-only; tests/ansible covers completion.
                    "xfrmctl_bash_completion_dir": "",
                    "xfrmctl_system_packages": [],
                    "xfrmctl_start_timeout": 300,
                    "xfrmctl_tunnels": [
                        {
                            "name": "lr",
                            "ends": ["left", "right"],
                            "psk": PSK,
                            "mode": "tunnel",
                            **tunnel_options,
                        }
                    ],
                },
            }
        }
        self.inventory.write_text(yaml.safe_dump(inventory))

    def env(self) -> dict[str, str]:
        return ansible_env(self.tmp / "ansible-home")

    def playbook(self, *args: str) -> tuple[Recap, str]:
        """Run site.yml; returns the recap per host and the output (kept in lab-out)."""
        self.runs += 1
        log = self.workdir / f"playbook-{self.runs}.log"
        return run_playbook(self.inventory, log, self.tmp / "ansible-home", PSK, *args)

    def module_calls(self, host: str, *calls: dict[str, str]) -> list[dict[str, Any]]:
        """xfrmctl_connection calls, in order, as the tasks of one small playbook (one
        controller start under TCG instead of one per call); returns each task's result."""
        common = {"socket": self.paths(host)["xfrmctl_socket"], "executable": str(BIN / "xfrmctl")}
        tasks = [
            {"name": f"call {i}", "xfrmctl.ipsec.xfrmctl_connection": {**common, **args}}
            for i, args in enumerate(calls)
        ]
        play = [{"hosts": host, "gather_facts": False, "tasks": tasks}]
        self.runs += 1
        playbook = self.tmp / f"calls-{self.runs}.yml"
        playbook.write_text(yaml.safe_dump(play, sort_keys=False))
        cmd = [str(BIN / "ansible-playbook"), "-v", "-i", str(self.inventory), str(playbook)]
        env = dict(self.env(), ANSIBLE_CALLBACK_RESULT_FORMAT="json")
        out = stream_to_log(cmd, self.workdir / f"module-calls-{self.runs}.log", env)
        assert not out.startswith(FAILED), out
        # -v with JSON results: "changed: [left] => {...}", one line per task
        marks = (f"ok: [{host}] => ", f"changed: [{host}] => ")
        lines = [x for x in out.splitlines() if x.startswith(marks)]
        assert len(lines) == len(calls), out
        return [json.loads(line.split(" => ", 1)[1]) for line in lines]

    def status(self, host: str) -> dict[str, Any]:
        proc = self.hosts[host].run(
            [
                str(BIN / "xfrmctl"),
                "--socket",
                self.paths(host)["xfrmctl_socket"],
                "status",
                "--json",
            ]
        )
        return json.loads(proc.stdout)  # type: ignore[no-any-return]

    def pid(self, host: str) -> int:
        return int(Path(self.paths(host)["xfrmctl_pid_file"]).read_text())

    def stop(self) -> None:
        for name in self.hosts:
            pid_file = Path(self.paths(name)["xfrmctl_pid_file"])
            if not pid_file.exists():
                continue
            pid = int(pid_file.read_text())
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            else:
                os.kill(pid, signal.SIGKILL)


def assert_esp_only(lab: Lab, net: Network) -> None:
    with net.capture(lab.sw, "br0") as cap:
        assert lab.left.ping("10.99.0.2", count=3), "no traffic through the tunnel"
    assert "ESP(" in cap.text and "ICMP echo" not in cap.text, cap.text


def ike(report: dict[str, Any]) -> dict[str, Any]:
    (sa,) = [s for s in report["ike_sas"] if s["name"] == "lr"]
    return dict(sa)


@pytest.mark.long
@pytest.mark.timeout(3000)
def test_playbook_configures_a_working_tunnel(net: Network, lab_out: Path, tmp_path: Path) -> None:
    workdir = lab_out / "ansible"
    workdir.mkdir(parents=True, exist_ok=True)
    lab = Lab(net, workdir, tmp_path)
    try:
        # 1. First run: everything is new; the last play brings the tunnel up from `left`.
        recap, _ = lab.playbook()
        assert recap["left"]["changed"] > 0 and recap["right"]["changed"] > 0, recap
        for name in ("left", "right"):
            secret = Path(lab.paths(name)["xfrmctl_config_dir"]) / "secrets" / "lr.psk"
            assert secret.stat().st_mode & 0o777 == 0o600
            assert secret.read_text() == PSK + "\n"
        sa = ike(lab.status("left"))
        assert sa["state"] == "ESTABLISHED" and sa["remote_addr"] == "10.99.0.2"
        assert sa["children"][0]["state"] == "INSTALLED", sa
        assert_esp_only(lab, net)

        # 2. The module against the real daemon: up when up changes nothing; down, then down
        # again changes nothing.
        # (Idempotency, check mode and reload-on-change of the same role and inventory shape
        # are proven on the host, without the guest's cost of minutes per playbook run:
        # tests/ansible/test_role_netns.py and test_xfrmctl_connection.py.)
        up, down, down_again = lab.module_calls(
            "left",
            {"name": "lr", "state": "up"},
            {"name": "lr", "state": "down"},
            {"name": "lr", "state": "down"},
        )
        assert up["changed"] is False, up
        assert down["changed"] is True and down["state"] == "down", down
        assert down_again["changed"] is False, down_again
        assert lab.left.xfrm_state_text().strip() == "", lab.left.xfrm_state_text()
        assert not lab.status("left")["ike_sas"]
    finally:
        lab.stop()
    for host in (lab.left, lab.right):
        assert host.xfrm_state_text().strip() == "", host.xfrm_state_text()
