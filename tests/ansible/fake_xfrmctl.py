"""A stand-in for the `xfrmctl` CLI: answers from a recorded status report and a state file.

State (JSON, path in $FAKE_XFRMCTL_STATE): `daemon` (running or not), `ike` (IKE SA exists),
`children` (installed child names), `calls` (argv of every up/down, appended), `fail_up`
(stderr of a failing `up`, or null). The status report is data/status_up.json with the IKE SA
and children filtered by that state.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"


def report(state: dict[str, Any]) -> dict[str, Any]:
    recorded = json.loads((DATA / "status_up.json").read_text())
    sas = []
    if state["ike"]:
        for sa in recorded["ike_sas"]:
            sa["children"] = [c for c in sa["children"] if c["name"] in state["children"]]
            sas.append(sa)
    recorded["ike_sas"] = sas
    for conn in recorded["connections"]:
        conn["active"] = bool(sas)
    return recorded


def main(argv: list[str]) -> int:
    path = Path(os.environ["FAKE_XFRMCTL_STATE"])
    state = json.loads(path.read_text())
    while argv and argv[0] in ("--socket", "--timeout"):
        argv = argv[2:]
    if not state["daemon"]:
        print("xfrmctl: daemon not running (no socket /run/xfrmctl/xfrmctl.sock)", file=sys.stderr)
        return 3
    command, name = argv[0], argv[1]
    conn, _, child = name.partition("/")
    known = {c["name"] for c in report(state)["connections"]}
    if conn not in known:
        print(
            f"xfrmctl: {command} {conn} failed: NO_SUCH_CONNECTION: no connection {conn!r}",
            file=sys.stderr,
        )
        return 1
    if command == "status":
        print(state.get("status_text") or json.dumps(report(state), indent=2))
        return 0
    state["calls"].append(argv)
    if command == "up":
        if state.get("fail_up"):
            path.write_text(json.dumps(state))
            print(state["fail_up"], file=sys.stderr)
            return 1
        state["ike"] = True
        state["children"] = sorted(set(state["children"]) | {child or "net"})
        print(f"initiating {name}")
    elif command == "down":
        if child:
            state["children"] = [c for c in state["children"] if c != child]
        else:
            state["ike"], state["children"] = False, []
        print(f"{name}: deleted")
    path.write_text(json.dumps(state))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
