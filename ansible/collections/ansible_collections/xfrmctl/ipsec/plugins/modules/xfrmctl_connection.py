#!/usr/bin/python
# Copyright: xfrmctl developers
# Apache License 2.0 (see the repository's LICENSE)
"""Ansible module: bring an xfrmctl connection (or one child) up or down via the CLI's JSON."""

from __future__ import annotations

DOCUMENTATION = r"""
module: xfrmctl_connection
short_description: Bring an xfrmctl IKEv2 connection up or down
version_added: "0.1.0"
description:
  - Reads C(xfrmctl status NAME --json) and runs C(xfrmctl up) or C(xfrmctl down) only when the
    connection (or the named child) is not already in the requested state.
  - Talks to the running daemon through its control socket; the daemon must be running.
options:
  name:
    description: Connection name, as in the daemon's configuration.
    type: str
    required: true
  child:
    description:
      - One child of the connection. Without it, C(up) means the IKE SA and every configured
        child are up, and C(down) means no IKE SA exists for the connection.
    type: str
  state:
    description: Whether the connection should be up (negotiated, SAs installed) or down.
    type: str
    choices: [up, down]
    default: up
  socket:
    description: The daemon's control socket.
    type: path
    default: /run/xfrmctl/xfrmctl.sock
  executable:
    description: Path of the C(xfrmctl) CLI; by default looked up in PATH and /opt/xfrmctl/bin.
    type: path
  timeout:
    description: Seconds to wait for each message from the daemon (negotiation included).
    type: int
    default: 120
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author: xfrmctl developers
"""

EXAMPLES = r"""
- name: Bring the tunnel to the branch office up
  xfrmctl.ipsec.xfrmctl_connection:
    name: site-b
    state: up

- name: Tear down one child only
  xfrmctl.ipsec.xfrmctl_connection:
    name: site-b
    child: lan
    state: down
"""

RETURN = r"""
state:
  description: The state after the task (C(up) or C(down)).
  returned: success
  type: str
  sample: up
ike_sa:
  description: The connection's IKE SA as C(xfrmctl status --json) reports it, or null.
  returned: success
  type: dict
command:
  description: The xfrmctl command that was run (or would have been in check mode), or null.
  returned: success
  type: list
  elements: str
  sample: [xfrmctl, --socket, /run/xfrmctl/xfrmctl.sock, up, site-b]
"""

import json
from typing import Any

from ansible.module_utils.basic import AnsibleModule

# SA states in which the SA carries (or is about to carry on) traffic: a rekey is not "down".
IKE_UP = {"ESTABLISHED", "REKEYING", "REKEYED"}
CHILD_UP = {"INSTALLED", "REKEYING", "REKEYED"}
EXIT_NO_DAEMON = 3


class Cli:
    """The xfrmctl CLI as this module uses it: status as JSON, up and down."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        exe = module.params["executable"] or module.get_bin_path(
            "xfrmctl", required=False, opt_dirs=["/opt/xfrmctl/bin"]
        )
        if not exe:
            module.fail_json(
                msg="xfrmctl CLI not found in PATH or /opt/xfrmctl/bin; set executable"
            )
        self.base = [
            exe,
            "--socket",
            module.params["socket"],
            "--timeout",
            str(module.params["timeout"]),
        ]

    def run(self, *args: str) -> tuple[int, str, str]:
        rc, out, err = self.module.run_command([*self.base, *args])
        if rc == EXIT_NO_DAEMON:
            self.module.fail_json(
                msg=f"the xfrmctl daemon is not running (socket {self.module.params['socket']}): "
                + err.strip(),
                rc=rc,
            )
        return rc, out, err

    def status(self, name: str) -> dict[str, Any] | None:
        """The status report for `name`, or None when the daemon does not know the connection."""
        rc, out, err = self.run("status", name, "--json")
        if rc != 0:
            if "NO_SUCH_CONNECTION" in err:
                return None
            self.module.fail_json(msg=f"xfrmctl status {name} failed: {err.strip()}", rc=rc)
        report: Any = None
        try:
            report = json.loads(out)
        except ValueError as exc:
            self.module.fail_json(msg=f"xfrmctl status --json printed invalid JSON: {exc}")
        if not isinstance(report, dict):
            self.module.fail_json(msg="xfrmctl status --json did not print a JSON object")
        return dict(report)


def find_ike_sa(report: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The connection's usable IKE SA (one being deleted does not count)."""
    for sa in report.get("ike_sas") or []:
        if sa.get("name") == name and sa.get("state") in IKE_UP:
            return dict(sa)
    return None


def configured_children(report: dict[str, Any], name: str) -> list[str]:
    for conn in report.get("connections") or []:
        if conn.get("name") == name:
            return [c.get("name") for c in conn.get("children") or []]
    return []


def installed_children(sa: dict[str, Any] | None) -> list[str]:
    if sa is None:
        return []
    return sorted({c.get("name") for c in sa.get("children") or [] if c.get("state") in CHILD_UP})


def is_up(report: dict[str, Any], name: str, child: str | None) -> bool:
    sa = find_ike_sa(report, name)
    if sa is None:
        return False
    wanted = [child] if child else configured_children(report, name)
    return set(wanted) <= set(installed_children(sa))


def is_down(report: dict[str, Any], name: str, child: str | None) -> bool:
    sa = find_ike_sa(report, name)
    if child is None:
        return not any(s.get("name") == name for s in report.get("ike_sas") or [])
    return child not in installed_children(sa)


def snapshot(report: dict[str, Any] | None, name: str, child: str | None) -> dict[str, Any]:
    """What --diff shows: up or down, and which children carry traffic."""
    if report is None:
        return {"name": name, "configured": False, "state": "down", "children": []}
    up = is_up(report, name, child)
    return {
        "name": name,
        "configured": True,
        "state": "up" if up else "down",
        "children": installed_children(find_ike_sa(report, name)),
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "child": {"type": "str"},
            "state": {"type": "str", "choices": ["up", "down"], "default": "up"},
            "socket": {"type": "path", "default": "/run/xfrmctl/xfrmctl.sock"},
            "executable": {"type": "path"},
            "timeout": {"type": "int", "default": 120},
        },
        supports_check_mode=True,
    )
    name: str = module.params["name"]
    child: str | None = module.params["child"]
    want: str = module.params["state"]
    target = f"{name}/{child}" if child else name
    cli = Cli(module)

    report = cli.status(name)
    if report is None:
        if want == "up":
            module.fail_json(
                msg=f"connection {name!r} is not in the daemon's configuration "
                "(NO_SUCH_CONNECTION): add it to the configuration and reload"
            )
        module.exit_json(changed=False, state="down", ike_sa=None, command=None)
        return
    if child and child not in configured_children(report, name):
        module.fail_json(msg=f"connection {name!r} has no child {child!r} in the configuration")

    done = is_up(report, name, child) if want == "up" else is_down(report, name, child)
    before = snapshot(report, name, child)
    command = [*cli.base, want, target]
    if done:
        module.exit_json(changed=False, state=want, ike_sa=find_ike_sa(report, name), command=None)

    after_guess = dict(before, state=want)
    if module.check_mode:
        module.exit_json(
            changed=True,
            state=want,
            ike_sa=find_ike_sa(report, name),
            command=command,
            diff={"before": before, "after": after_guess},
        )

    rc, out, err = cli.run(want, target)
    if rc != 0:
        # The CLI already says "xfrmctl: up NAME failed: CODE: message"; keep it as it is.
        reason = err.strip() or out.strip() or f"xfrmctl {want} {target} exited {rc}"
        module.fail_json(
            msg=reason[len("xfrmctl: ") :] if reason.startswith("xfrmctl: ") else reason,
            rc=rc,
            stdout=out,
            stderr=err,
        )
    after_report = cli.status(name) or {}
    module.exit_json(
        changed=True,
        state=want,
        ike_sa=find_ike_sa(after_report, name),
        command=command,
        stdout=out,
        diff={"before": before, "after": snapshot(after_report, name, child)},
    )


if __name__ == "__main__":
    main()
