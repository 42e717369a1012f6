"""The role for real on this host: two network-namespace hosts, ansible-playbook through the
collection's `netns` connection. This kernel has no ESP, so the play that brings the tunnel up
is skipped (tag xfrmctl_up); integration/test_ansible_playbook.py does that in the lab guest.
Run with XFRMCTL_SLOW_TESTS=1 as root (a few minutes).

Checks idempotency (second run and check mode change nothing), that secrets are 0600 and never
printed, and that a configuration change reloads the running daemon instead of restarting it.
The install path (`xfrmctl_install: true`) runs offline from a wheelhouse: this checkout's wheel
beside its dependencies' from scripts/setup.sh; a new version upgrades and restarts.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import xfrmctl

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
# scripts/setup.sh: the wheels of xfrmctl's dependencies and build backend, for offline installs.
WHEELHOUSE = BIN.parent / "wheelhouse"
PSK = "netns test secret that must never be printed"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


class Hosts:
    def __init__(
        self,
        tmp: Path,
        group_vars: dict[str, Any] | None = None,
        host_vars: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.tmp = tmp
        self.group_vars = group_vars or {}
        self.host_vars = host_vars or {}
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
                **self.host_vars.get(name, {}),
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
            **self.group_vars,
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


def build_wheel(tmp: Path, version: str, out: Path) -> None:
    """This checkout's wheel as `version`, built with no index (setuptools from the wheelhouse),
    from a copy: setuptools leaves build/ behind in the tree it builds."""
    src = tmp / f"src-{version}"
    shutil.copytree(REPO / "xfrmctl", src / "xfrmctl", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "README.md", src)
    shutil.copy(REPO / "pyproject.toml", src)
    init = src / "xfrmctl" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{xfrmctl.__version__}"', f'"{version}"', 1))
    cmd = [str(BIN / "python"), "-m", "pip", "wheel", "-q", "--no-deps", "--no-index"]
    cmd += ["--find-links", str(WHEELHOUSE), "--wheel-dir", str(out), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / f"xfrmctl-{version}-py3-none-any.whl").exists(), sorted(out.iterdir())


def versions(cli: Path, socket: str) -> str:
    proc = subprocess.run([str(cli), "--socket", socket, "version"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.timeout(900)
def test_role_installs_and_upgrades_from_an_offline_wheelhouse(tmp_path: Path) -> None:
    """The role's install path (`xfrmctl_install: true`, the default): a virtualenv per host
    from a wheelhouse, copied to one host and read in place by the other, with no index (the
    namespaces have no route anywhere); a new `xfrmctl_version` upgrades and restarts."""
    assert any(WHEELHOUSE.glob("pydantic-*.whl")), f"{WHEELHOUSE} is empty: run scripts/setup.sh"
    wheels = tmp_path / "wheels"
    shutil.copytree(WHEELHOUSE, wheels)
    old, new = xfrmctl.__version__, f"{xfrmctl.__version__}+upgrade"
    build_wheel(tmp_path, old, wheels)
    names = ("left", "right")
    venv = {name: tmp_path / name / "venv" for name in names}
    link = {name: tmp_path / name / "bin" / "xfrmctl" for name in names}
    for path in link.values():
        path.parent.mkdir(parents=True)
    group = {
        "xfrmctl_install": True,
        "xfrmctl_python": getattr(sys, "_base_executable", sys.executable),
        "xfrmctl_wheelhouse": str(wheels),
        "xfrmctl_pip_offline": True,
        "xfrmctl_version": old,
    }
    per_host = {
        name: {
            "xfrmctl_venv": str(venv[name]),
            "xfrmctl_cli_link": str(link[name]),
            "xfrmctl_wheelhouse_on_host": name == "right",
        }
        for name in names
    }
    hosts = Hosts(tmp_path, group, per_host)
    try:
        changed, out = hosts.playbook()
        assert changed["left"] > 0 and changed["right"] > 0, out
        pids = {}
        for name in names:
            assert link[name].resolve() == venv[name] / "bin" / "xfrmctl"
            pids[name] = hosts.pid(name)
            cmdline = Path(f"/proc/{pids[name]}/cmdline").read_bytes().split(b"\0")
            assert str(venv[name] / "bin" / "xfrmctl").encode() in cmdline, cmdline
            socket = hosts.path(name, "xfrmctl_socket")
            cli, daemon = versions(link[name], socket).splitlines()[:2]
            assert cli == f"xfrmctl {old}" and daemon.startswith(f"daemon {old} "), (cli, daemon)
        copied = tmp_path / "left" / "venv-wheels"
        assert (copied / f"xfrmctl-{old}-py3-none-any.whl").exists(), "wheelhouse not copied"
        assert not (tmp_path / "right" / "venv-wheels").exists(), "copied though on the host"

        changed, out = hosts.playbook()
        assert changed == {"left": 0, "right": 0, "localhost": 0}, out

        build_wheel(tmp_path, new, wheels)
        hosts.group_vars["xfrmctl_version"] = new
        hosts.write_inventory({})
        changed, out = hosts.playbook()
        assert out.count("RUNNING HANDLER [xfrmctl.ipsec.xfrmctl : Restart the background") == 1
        for name in names:
            assert hosts.pid(name) != pids[name], f"{name}: the daemon was not restarted"
            socket = hosts.path(name, "xfrmctl_socket")
            assert f"daemon {new} " in versions(link[name], socket), out
        assert (copied / f"xfrmctl-{new}-py3-none-any.whl").exists()
    finally:
        hosts.close()
