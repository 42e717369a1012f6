"""The systemd unit and tmpfiles entry: valid for systemd, hardened, and the role's copy agrees."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

jinja2 = pytest.importorskip("jinja2", reason="Jinja2 comes with ansible-core (dev extra)")

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "packaging/xfrmctl.service"
TMPFILES = REPO / "packaging/xfrmctl.conf"
ROLE = REPO / "ansible/collections/ansible_collections/xfrmctl/ipsec/roles/xfrmctl"
XFRMCTL = REPO / ".venv/bin/xfrmctl"


def directives(text: str) -> list[tuple[str, str]]:
    return [
        tuple(line.split("=", 1))  # type: ignore[misc]
        for line in text.splitlines()
        if "=" in line and not line.startswith("#")
    ]


def render(template: str, **overrides: object) -> str:
    """Render a role template with the role's defaults, as Ansible would."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates"))
    env.filters["dirname"] = os.path.dirname
    env.filters["regex_replace"] = lambda value, pattern, repl: re.sub(pattern, repl, value)
    variables = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    variables.update(overrides)
    variables["ansible_managed"] = "Ansible managed"
    variables["xfrmctl_bin"] = f"{variables['xfrmctl_venv']}/bin/xfrmctl"
    variables["xfrmctl_config_file"] = f"{variables['xfrmctl_config_dir']}/xfrmctl.yaml"
    return env.get_template(template).render(**variables)


def verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    unit = tmp_path / "xfrmctl.service"
    unit.write_text(unit_text)
    return subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )


def test_packaged_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify also checks that ExecStart exists: point it at this checkout's CLI.
    text = UNIT.read_text().replace("/opt/xfrmctl/bin/xfrmctl", str(XFRMCTL))
    proc = verify(text, tmp_path)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    # The check above would be worthless if verify accepted anything.
    text = UNIT.read_text().replace("/opt/xfrmctl/bin/xfrmctl", str(XFRMCTL))
    proc = verify(text.replace("Type=notify", "Type=notiffy"), tmp_path)
    assert "notiffy" in proc.stderr, proc.stderr


def test_unit_is_a_hardened_notify_service() -> None:
    unit = dict(directives(UNIT.read_text()))
    assert unit["Type"] == "notify"
    assert unit["Restart"] == "on-failure"
    assert unit["RestartPreventExitStatus"] == "2"
    assert unit["CapabilityBoundingSet"].split() == ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"]
    assert unit["ProtectSystem"] == "strict" and unit["NoNewPrivileges"] == "yes"
    assert set(unit["RestrictAddressFamilies"].split()) == {
        "AF_UNIX",
        "AF_NETLINK",
        "AF_INET",
        "AF_INET6",
    }
    assert unit["RuntimeDirectory"] == "xfrmctl" and unit["RuntimeDirectoryMode"] == "0700"
    assert unit["ExecStart"].endswith("xfrmctl daemon")
    assert unit["ExecReload"].endswith("xfrmctl reload")
    env = dict(
        e.split("=", 1) for e in (v for k, v in directives(UNIT.read_text()) if k == "Environment")
    )
    assert env["XFRMCTL_SOCKET"] == "/run/xfrmctl/xfrmctl.sock"
    assert env["XFRMCTL_CONFIG"] == "/etc/xfrmctl/xfrmctl.yaml"


def test_restart_keeps_the_runtime_directory_and_the_role_asks_to_keep_tunnels() -> None:
    """The restart state file lives in the RuntimeDirectory: a restart must not empty it, and
    the role's restart handler sends SIGUSR2 (keep the tunnels) before it restarts."""
    unit = dict(directives(UNIT.read_text()))
    assert unit["RuntimeDirectoryPreserve"] == "restart"
    handlers = yaml.safe_load((ROLE / "handlers/main.yml").read_text())
    restart = [h for h in handlers if h.get("listen") == "Restart xfrmctl"]
    names = [h["name"] for h in restart]
    keep = names.index("Keep the tunnels over the restart under systemd")
    assert keep < names.index("Restart xfrmctl under systemd")  # handlers run in file order
    argv = restart[keep]["ansible.builtin.command"]["argv"]
    assert "--signal=SIGUSR2" in argv and "--kill-whom=main" in argv
    assert "xfrmctl_restart_keep_tunnels | bool" in restart[keep]["when"]
    plain = yaml.safe_load((ROLE / "tasks/daemon_restart.yml").read_text())
    assert "kill -USR2" in plain[0]["ansible.builtin.shell"]["cmd"]
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    assert defaults["xfrmctl_restart_keep_tunnels"] is True


def test_role_unit_with_defaults_is_the_packaged_unit() -> None:
    assert directives(render("xfrmctl.service.j2")) == directives(UNIT.read_text())
    assert directives(render("tmpfiles.conf.j2")) == directives(TMPFILES.read_text())
    role_tmpfiles = [ln for ln in render("tmpfiles.conf.j2").splitlines() if ln[:1] == "d"]
    assert role_tmpfiles == [ln for ln in TMPFILES.read_text().splitlines() if ln[:1] == "d"]


def test_role_unit_follows_the_role_variables(tmp_path: Path) -> None:
    venv = str(REPO / ".venv")
    text = render(
        "xfrmctl.service.j2",
        xfrmctl_venv=venv,
        xfrmctl_socket="/run/ipsec/ctl.sock",
        xfrmctl_config_dir="/srv/ipsec",
    )
    unit = directives(text)
    assert ("RuntimeDirectory", "ipsec") in unit
    assert ("Environment", "XFRMCTL_SOCKET=/run/ipsec/ctl.sock") in unit
    assert ("Environment", "XFRMCTL_CONFIG=/srv/ipsec/xfrmctl.yaml") in unit
    assert ("ExecStart", f"{venv}/bin/xfrmctl daemon") in unit
    proc = verify(text, tmp_path)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    assert "d /run/ipsec 0700 root root -" in render(
        "tmpfiles.conf.j2", xfrmctl_socket="/run/ipsec/ctl.sock"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-tmpfiles chowns to root")
def test_tmpfiles_entry_creates_a_private_runtime_directory(tmp_path: Path) -> None:
    if shutil.which("systemd-tmpfiles") is None:
        pytest.skip("systemd-tmpfiles not installed (Debian package systemd)")
    proc = subprocess.run(
        ["systemd-tmpfiles", "--create", f"--root={tmp_path}", str(TMPFILES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    made = (tmp_path / "run/xfrmctl").stat()
    assert stat.S_ISDIR(made.st_mode) and stat.S_IMODE(made.st_mode) == 0o700
    assert made.st_uid == 0
