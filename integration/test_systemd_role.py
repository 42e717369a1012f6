"""The Ansible role's systemd path and the shipped unit under a real systemd.

The lab guest's init is not systemd, so systemd_ns.py starts one as PID 1 of private PID, mount
and network namespaces; ansible-playbook runs inside them through nsenter with a local
connection. Everything the role and the test write goes to the private /run (unit, tmpfiles entry,
configuration, secrets), so nothing outlives the test.

Checks what only a real systemd shows: the unit starts (Type=notify readiness from the daemon),
runs confined (capability bounding set, no_new_privs), `systemctl reload` applies a changed
configuration through ExecReload without a restart,
`systemctl restart` is a restart stop whose state file the next daemon reads (the tunnels it
keeps: test_restart_strongswan.py), and `systemctl stop` leaves no XFRM state or policy
behind. Each Ansible module run costs seconds under TCG, so the role runs once; its idempotency,
check mode and reload handler are proven on the host (tests/ansible/test_role_netns.py and
test_role_systemd.py, the latter against a systemctl double).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from playbook_run import ANSIBLE, BIN, run_playbook
from systemd_ns import SystemdNamespace, refusal

PSK = "systemd lab secret that must never be printed"
ETC = "/run/xfrmctl-lab-etc"
SOCKET = "/run/xfrmctl/xfrmctl.sock"
# CAP_NET_BIND_SERVICE (10) and CAP_NET_ADMIN (12): the unit's CapabilityBoundingSet.
CAP_BOUNDING = 1 << 10 | 1 << 12
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else str(BIN / "python")

# Outside the lab guest (`lab.py direct` on a real host) a second systemd is refused unless
# allowed, and these tests skip saying why. Inside the lab they must run: a guest without
# systemd is a broken lab, and fails here instead of skipping silently.
IN_LAB = os.environ.get("XFRMCTL_IN_LAB") == "1"
pytestmark = pytest.mark.skipif(not IN_LAB and refusal() is not None, reason=str(refusal()))


@pytest.fixture(autouse=True)
def systemd_available() -> None:
    reason = refusal()
    assert reason is None, f"the lab guest cannot run systemd: {reason}"


def write_inventory(path: Path, options: dict[str, Any]) -> None:
    gw: dict[str, Any] = {
        "ansible_connection": "local",
        # The modules need only the standard library; the system Python starts faster than
        # the checkout's virtualenv, and pipelining saves each module's temporary files.
        "ansible_python_interpreter": PYTHON,
        "ansible_pipelining": True,
        "xfrmctl_address": "10.77.0.1",
    }
    group_vars = {
        "ansible_become": False,
        "xfrmctl_service_manager": "systemd",
        "xfrmctl_install": False,  # no network in the guest: this checkout's virtualenv
        "xfrmctl_venv": str(BIN.parent),
        "xfrmctl_cli_link": "",
        "xfrmctl_bash_completion_dir": "",
        "xfrmctl_system_packages": [],
        "xfrmctl_config_dir": ETC,
        "xfrmctl_unit_dir": "/run/systemd/system",
        "xfrmctl_tmpfiles_dir": "/run/tmpfiles.d",
        "xfrmctl_socket": SOCKET,
        "xfrmctl_tunnels": [{"name": "gp", "ends": ["gw", "peer"], "psk": PSK, **options}],
    }
    hosts = {"gw": gw, "peer": {"xfrmctl_address": "10.77.0.2"}}
    path.write_text(yaml.safe_dump({"xfrmctl": {"hosts": hosts, "vars": group_vars}}))


@pytest.fixture
def systemd(lab_out: Path) -> Iterator[SystemdNamespace]:
    ns = SystemdNamespace().start()
    try:
        ns.run("mkdir", "-p", "/run/tmpfiles.d", "/run/systemd/system/xfrmctl.service.d")
        # Lab-only drop-in. The checkout's virtualenv may point at an interpreter under /root
        # (pyenv), which the unit's ProtectHome=yes hides (exit 203/EXEC), or lie under /tmp (a
        # clone made with mktemp -d), which its PrivateTmp=yes hides; a venv the role creates
        # lives in /opt and uses /usr/bin/python3. And Python starts slowly under TCG.
        dropin = "[Service]\nProtectHome=read-only\nTimeoutStartSec=900\n"
        if BIN.resolve().is_relative_to("/tmp"):
            dropin += "PrivateTmp=no\n"
        ns.run(
            "sh",
            "-c",
            f"printf '{dropin}' > /run/systemd/system/xfrmctl.service.d/lab.conf",
        )
        yield ns
    finally:
        journal = ns.run("journalctl", "-u", "xfrmctl", "--no-pager", check=False).stdout
        (lab_out / "systemd-xfrmctl-journal.log").write_text(journal)
        ns.run("systemctl", "stop", "xfrmctl", check=False)
        ns.stop()


def write_configuration(ns: SystemdNamespace, tmp: Path) -> None:
    """What the role's configuration tasks write for write_inventory's gw, in the private /run
    of the systemd namespace."""
    gp = {
        "local_addrs": ["10.77.0.1"],
        "remote_addrs": ["10.77.0.2"],
        "local": {"id": "gw", "auth": "psk"},
        "remote": {"id": "peer", "auth": "psk"},
        "psk_file": f"{ETC}/secrets/gp.psk",
        "children": {"net": {"local_ts": ["dynamic"], "remote_ts": ["dynamic"]}},
    }
    config = {"settings": {"socket": SOCKET}, "connections": {"gp": gp}}
    (tmp / "xfrmctl.yaml").write_text(yaml.safe_dump(config))
    (tmp / "gp.psk").write_text(PSK + "\n")
    ns.run("install", "-d", "-m", "0700", f"{ETC}/secrets")
    ns.run("install", "-m", "0640", str(tmp / "xfrmctl.yaml"), f"{ETC}/xfrmctl.yaml")
    ns.run("install", "-m", "0600", str(tmp / "gp.psk"), f"{ETC}/secrets/gp.psk")


def main_pid(ns: SystemdNamespace) -> int:
    props = ns.show("xfrmctl.service", "ActiveState", "SubState", "MainPID", "Type")
    assert props["ActiveState"] == "active" and props["SubState"] == "running", props
    assert props["Type"] == "notify", props
    return int(props["MainPID"])


def proc_status(ns: SystemdNamespace, pid: int) -> dict[str, str]:
    text = ns.run("cat", f"/proc/{pid}/status").stdout
    return {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines())}


@pytest.mark.long
@pytest.mark.timeout(3000)
def test_role_runs_the_hardened_unit_under_systemd(
    systemd: SystemdNamespace, lab_out: Path, tmp_path: Path
) -> None:
    inventory = tmp_path / "inventory.yml"
    home = tmp_path / "ansible-home"
    workdir = lab_out / "systemd-role"
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = tuple(systemd.prefix(wd=ANSIBLE))
    # The role's configuration tasks are the netns playbook test's (and the host's, whose
    # systemctl double shows the reload they notify): five module runs, minutes of emulated
    # CPU, nothing of systemd. Here the configuration they would write is written directly.
    args = ("--limit", "gw", "--skip-tags", "xfrmctl_up,xfrmctl_config")
    write_configuration(systemd, tmp_path)

    # 1. The role's systemd part: unit and tmpfiles entry installed, enabled and started.
    write_inventory(inventory, {})
    recap, out = run_playbook(inventory, workdir / "playbook.log", home, PSK, *args, prefix=prefix)
    assert recap["gw"]["changed"] > 0, out
    pid = main_pid(systemd)
    assert systemd.run("systemctl", "is-enabled", "xfrmctl").stdout.strip() == "enabled"
    status = proc_status(systemd, pid)
    assert int(status["CapBnd"], 16) == CAP_BOUNDING, status["CapBnd"]
    assert status["NoNewPrivs"] == "1"
    report = systemd.run(str(BIN / "xfrmctl"), "--socket", SOCKET, "status", "--json").stdout
    assert yaml.safe_load(report)["ike_sas"] == []  # configured, not started (start_action none)
    journal = systemd.run("journalctl", "-u", "xfrmctl", "--no-pager").stdout
    assert "xfrmctl daemon ready: 1 connections" in journal, journal

    # 2. A changed configuration and `systemctl reload`: the unit's ExecReload applies it in
    # the same process. (The role's reload handler, also when pushed with --tags
    # xfrmctl_config, is tests/ansible/test_role_systemd.py: a second playbook run here costs
    # minutes of emulated CPU and shows nothing more of systemd.)
    config = yaml.safe_load(systemd.run("cat", f"{ETC}/xfrmctl.yaml").stdout)
    config["connections"]["gp"]["dpd_delay"] = "30s"
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(config))
    systemd.run("cp", str(tmp_path / "changed.yaml"), f"{ETC}/xfrmctl.yaml")
    systemd.run("systemctl", "reload", "xfrmctl")
    assert main_pid(systemd) == pid, "the daemon was restarted instead of reloaded"
    journal = systemd.run("journalctl", "-u", "xfrmctl", "--no-pager").stdout
    assert "changed: gp" in journal and "configuration reloaded" in journal, journal
    assert systemd.show("xfrmctl.service", "NRestarts")["NRestarts"] == "0"

    # 3. `systemctl restart` is a restart stop: the daemon sees its unit's restart job (asked
    # of PID 1 under the unit's hardening), hands its IKE SAs over in the runtime directory,
    # which systemd keeps (RuntimeDirectoryPreserve=restart), and the new daemon reads it.
    systemd.run("systemctl", "restart", "xfrmctl")
    assert main_pid(systemd) != pid
    journal = systemd.run("journalctl", "-u", "xfrmctl", "--no-pager").stdout
    assert "restart stop: 0 IKE SA(s) with 0 Child SA(s) handed over" in journal, journal
    assert "restart: adopted 0 IKE SA(s)" in journal, journal
    assert "shutting down: deleting SAs" not in journal, journal

    # 4. Stop: a plain stop, the daemon exits cleanly and leaves nothing in the kernel.
    systemd.run("systemctl", "stop", "xfrmctl")
    props = systemd.show("xfrmctl.service", "ActiveState", "Result")
    assert props == {"ActiveState": "inactive", "Result": "success"}, props
    journal = systemd.run("journalctl", "-u", "xfrmctl", "--no-pager").stdout
    assert "shutting down: deleting SAs and removing kernel state" in journal, journal
    assert systemd.run("ip", "xfrm", "state").stdout.strip() == ""
    assert systemd.run("ip", "xfrm", "policy").stdout.strip() == ""
