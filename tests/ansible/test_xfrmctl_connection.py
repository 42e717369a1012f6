"""The xfrmctl_connection module against a fake CLI that answers with recorded status JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ansible", reason="ansible-core is in the dev extra")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MODULE = (
    REPO
    / "ansible/collections/ansible_collections/xfrmctl/ipsec/plugins/modules/xfrmctl_connection.py"
)


class Fake:
    def __init__(self, tmp: Path) -> None:
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.exe = self.bin / "xfrmctl"
        self.exe.write_text(f'#!/bin/sh\nexec {sys.executable} {HERE / "fake_xfrmctl.py"} "$@"\n')
        self.exe.chmod(0o755)
        self.state_file = tmp / "state.json"
        self.set(daemon=True, ike=False, children=[], calls=[], fail_up=None)

    def set(self, **changes: Any) -> None:
        state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        state.update(changes)
        self.state_file.write_text(json.dumps(state))

    @property
    def state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text())  # type: ignore[no-any-return]

    def run(
        self, check: bool = False, diff: bool = False, on_path: bool = False, **args: Any
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"_ansible_check_mode": check, "_ansible_diff": diff, **args}
        env = dict(os.environ, FAKE_XFRMCTL_STATE=str(self.state_file))
        if on_path:
            env["PATH"] = f"{self.bin}:{env['PATH']}"
        else:
            params["executable"] = str(self.exe)
        proc = subprocess.run(
            [sys.executable, str(MODULE), json.dumps({"ANSIBLE_MODULE_ARGS": params})],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        try:
            result: dict[str, Any] = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"module printed no JSON:\n{proc.stdout}\n{proc.stderr}") from None
        return result


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    return Fake(tmp_path)


def test_up_when_down_runs_up_and_reports_the_sa(fake: Fake) -> None:
    result = fake.run(name="left-right", state="up", diff=True)
    assert result["changed"] is True and not result.get("failed"), result
    assert [c[:2] for c in fake.state["calls"]] == [["up", "left-right"]]
    assert result["ike_sa"]["state"] == "ESTABLISHED"
    assert result["ike_sa"]["children"][0]["name"] == "net"
    assert result["diff"]["before"]["state"] == "down"
    assert result["diff"]["after"] == {
        "name": "left-right",
        "configured": True,
        "state": "up",
        "children": ["net"],
    }


def test_up_when_up_changes_nothing(fake: Fake) -> None:
    fake.set(ike=True, children=["net"])
    result = fake.run(name="left-right", state="up")
    assert result["changed"] is False, result
    assert fake.state["calls"] == []
    assert result["ike_sa"]["remote_addr"] == "10.99.0.2"


def test_up_in_check_mode_predicts_change_without_running_up(fake: Fake) -> None:
    result = fake.run(name="left-right", state="up", check=True, diff=True)
    assert result["changed"] is True, result
    assert fake.state["calls"] == [] and fake.state["ike"] is False
    assert result["diff"]["before"]["state"] == "down"
    assert result["diff"]["after"]["state"] == "up"
    assert result["command"][-2:] == ["up", "left-right"]


def test_ike_sa_without_its_child_is_not_up(fake: Fake) -> None:
    fake.set(ike=True, children=[])
    result = fake.run(name="left-right", child="net", state="up")
    assert result["changed"] is True, result
    assert fake.state["calls"][0][:2] == ["up", "left-right/net"]


def test_down_when_up_runs_down(fake: Fake) -> None:
    fake.set(ike=True, children=["net"])
    result = fake.run(name="left-right", state="down", diff=True)
    assert result["changed"] is True, result
    assert fake.state["calls"][0][:2] == ["down", "left-right"]
    assert fake.state["ike"] is False
    assert result["ike_sa"] is None
    assert result["diff"]["before"]["state"] == "up"
    assert result["diff"]["after"]["state"] == "down"


def test_down_when_down_changes_nothing(fake: Fake) -> None:
    result = fake.run(name="left-right", state="down")
    assert result["changed"] is False and fake.state["calls"] == [], result


def test_down_in_check_mode_does_not_run_down(fake: Fake) -> None:
    fake.set(ike=True, children=["net"])
    result = fake.run(name="left-right", state="down", check=True)
    assert result["changed"] is True, result
    assert fake.state["calls"] == [] and fake.state["ike"] is True


def test_down_of_one_child_keeps_the_ike_sa(fake: Fake) -> None:
    fake.set(ike=True, children=["net"])
    result = fake.run(name="left-right", child="net", state="down")
    assert result["changed"] is True, result
    assert fake.state["calls"][0][:2] == ["down", "left-right/net"]
    assert fake.state["ike"] is True and fake.state["children"] == []


def test_absent_connection_cannot_be_brought_up(fake: Fake) -> None:
    result = fake.run(name="nowhere", state="up")
    assert result.get("failed") is True
    assert "not in the daemon's configuration" in result["msg"], result
    assert fake.state["calls"] == []


def test_absent_connection_is_down(fake: Fake) -> None:
    result = fake.run(name="nowhere", state="down")
    assert result["changed"] is False and not result.get("failed"), result


def test_unknown_child_is_an_error(fake: Fake) -> None:
    result = fake.run(name="left-right", child="dmz", state="up")
    assert result.get("failed") is True and "no child 'dmz'" in result["msg"], result


def test_no_daemon_is_a_clear_error(fake: Fake) -> None:
    fake.set(daemon=False)
    result = fake.run(name="left-right", state="up")
    assert result.get("failed") is True and "not running" in result["msg"], result
    assert result["rc"] == 3


def test_failed_up_reports_the_daemons_reason(fake: Fake) -> None:
    fake.set(fail_up="xfrmctl: up left-right failed: AUTHENTICATION_FAILED: bad PSK")
    result = fake.run(name="left-right", state="up")
    assert result.get("failed") is True and result["rc"] == 1
    assert "AUTHENTICATION_FAILED" in result["msg"], result


def test_invalid_status_json_is_a_clear_error(fake: Fake) -> None:
    fake.set(status_text="not json {")
    result = fake.run(name="left-right", state="up")
    assert result.get("failed") is True and "invalid JSON" in result["msg"], result


def test_cli_is_found_on_path(fake: Fake) -> None:
    fake.set(ike=True, children=["net"])
    result = fake.run(name="left-right", state="up", on_path=True)
    assert result["changed"] is False and not result.get("failed"), result
    assert result["ike_sa"]["name"] == "left-right"


def test_bad_state_value_is_rejected(fake: Fake) -> None:
    result = fake.run(name="left-right", state="sideways")
    assert result.get("failed") is True and "state" in result["msg"], result
