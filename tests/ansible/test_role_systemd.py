"""The role's systemd path on this host, against a systemctl double (a second systemd must never
boot here): which systemctl calls the role makes on a first run, on a second run that changes
nothing, and on a configuration change pushed with `--tags xfrmctl_config`, where the start task
is skipped and the reload handler must still run. The real systemd, the unit and its ExecReload:
integration/test_systemd_role.py in the lab guest.
Run with XFRMCTL_SLOW_TESTS=1 as root (ansible-playbook runs: tens of seconds).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the role writes root-owned files"),
    pytest.mark.skipif(
        os.environ.get("XFRMCTL_SLOW_TESTS") != "1", reason="slow (minutes): XFRMCTL_SLOW_TESTS=1"
    ),
]
pytest.importorskip("ansible", reason="ansible-core is in the dev extra")

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
PSK = "systemd double secret that must never be printed"
HEADER = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(?:[\w.]+ : )?(.+?)\] \**$")

# systemctl and systemd-tmpfiles as the role calls them: every call is logged, the unit's
# enabled and active states are files beside the log.
SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> "$FAKE_SYSTEMD/calls"
case "$1" in
show)
    if [ -e "$FAKE_SYSTEMD/active" ]; then state="active running"; else state="inactive dead"; fi
    set -- $state
    printf 'Id=xfrmctl.service\\nLoadState=loaded\\nActiveState=%s\\nSubState=%s\\n' "$1" "$2" ;;
is-enabled)
    if [ -e "$FAKE_SYSTEMD/enabled" ]; then echo enabled; else echo disabled; exit 1; fi ;;
enable) touch "$FAKE_SYSTEMD/enabled" ;;
start|restart) touch "$FAKE_SYSTEMD/active" ;;
esac
"""
TMPFILES = '#!/bin/sh\necho "systemd-tmpfiles $*" >> "$FAKE_SYSTEMD/calls"\n'


def changed_tasks(out: str) -> list[str]:
    names: list[str] = []
    current = ""
    for line in out.splitlines():
        header = HEADER.match(line)
        if header:
            current = header.group(1)
        elif line.startswith("changed:") and current not in names:
            names.append(current)
    return names


class Role:
    """The role for one local host whose systemctl is the double."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.state = tmp / "systemd"
        self.bin = tmp / "bin"
        for folder in (self.state, self.bin, tmp / "units", tmp / "tmpfiles.d"):
            folder.mkdir()
        for name, text in (("systemctl", SYSTEMCTL), ("systemd-tmpfiles", TMPFILES)):
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)
        self.config = tmp / "etc" / "xfrmctl.yaml"
        self.inventory = tmp / "inventory.yml"

    def write_inventory(self, options: dict[str, Any]) -> None:
        gw = {
            "ansible_connection": "local",
            "ansible_python_interpreter": str(BIN / "python"),
            "xfrmctl_address": "10.77.0.1",
        }
        group_vars = {
            "ansible_become": False,
            "xfrmctl_service_manager": "systemd",
            "xfrmctl_install": False,
            "xfrmctl_venv": str(BIN.parent),
            "xfrmctl_cli_link": "",
            "xfrmctl_bash_completion_dir": "",
            "xfrmctl_system_packages": [],
            "xfrmctl_config_dir": str(self.config.parent),
            "xfrmctl_unit_dir": str(self.tmp / "units"),
            "xfrmctl_tmpfiles_dir": str(self.tmp / "tmpfiles.d"),
            "xfrmctl_socket": "/run/xfrmctl-double/xfrmctl.sock",
            "xfrmctl_tunnels": [{"name": "gp", "ends": ["gw", "peer"], "psk": PSK, **options}],
        }
        hosts = {"gw": gw, "peer": {"xfrmctl_address": "10.77.0.2"}}
        inventory = {"xfrmctl": {"hosts": hosts, "vars": group_vars}}
        self.inventory.write_text(yaml.safe_dump(inventory))

    def playbook(self, *args: str) -> tuple[list[str], list[str]]:
        """Run site.yml for gw; returns the tasks that changed and the systemctl calls made."""
        calls = self.state / "calls"
        calls.unlink(missing_ok=True)
        home = self.tmp / "ansible-home"
        env = dict(
            os.environ,
            PATH=f"{self.bin}:{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            FAKE_SYSTEMD=str(self.state),
            ANSIBLE_CONFIG=str(REPO / "ansible" / "ansible.cfg"),
            ANSIBLE_HOME=str(home),
            ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
            ANSIBLE_REMOTE_TEMP=str(home / "remote-tmp"),
            ANSIBLE_NOCOLOR="1",
        )
        cmd = [str(BIN / "ansible-playbook"), "-i", str(self.inventory), "--limit", "gw"]
        cmd += ["-e", "xfrmctl_build_wheel=false", "--skip-tags", "xfrmctl_up", *args, "site.yml"]
        proc = subprocess.run(
            cmd, cwd=REPO / "ansible", env=env, capture_output=True, text=True, timeout=600
        )
        out = proc.stdout + proc.stderr
        assert PSK not in out, "the pre-shared key was printed"
        assert proc.returncode == 0, out
        made = calls.read_text().splitlines() if calls.exists() else []
        return changed_tasks(out), made


@pytest.mark.timeout(900)
def test_role_drives_systemd_and_reloads_on_a_tagged_change(tmp_path: Path) -> None:
    role = Role(tmp_path)
    role.write_inventory({})
    changed, calls = role.playbook()
    assert "Enable and start xfrmctl" in changed and "Apply tmpfiles" in changed, changed
    assert "systemctl daemon-reload" in calls and "systemctl enable xfrmctl.service" in calls
    assert "systemctl start xfrmctl.service" in calls, calls
    tmpfiles = f"systemd-tmpfiles --create {tmp_path}/tmpfiles.d/xfrmctl.conf"
    assert tmpfiles in calls, calls
    # Just started: no restart or reload on top of the start.
    assert not [c for c in calls if c.split()[1] in ("restart", "reload", "kill")], calls
    unit = (tmp_path / "units" / "xfrmctl.service").read_text()
    assert f"Environment=XFRMCTL_CONFIG={role.config}\n" in unit, unit

    changed, calls = role.playbook()
    assert changed == [], changed
    assert not [c for c in calls if c.split()[1] in ("start", "restart", "reload")], calls

    # A changed connection pushed with the configuration tag: the service tasks are skipped,
    # so the reload handler must not wait for the start task's result.
    role.write_inventory({"connection_options": {"dpd_delay": "30s"}})
    changed, calls = role.playbook("--tags", "xfrmctl_config")
    assert changed == ["Write the configuration", "Reload xfrmctl under systemd"], changed
    assert "systemctl reload xfrmctl.service" in calls, calls
    assert not [c for c in calls if c.split()[1] in ("start", "restart")], calls
    assert "dpd_delay: 30s" in role.config.read_text()
