"""`interface` (route-based IPsec): its keys reach every child's kernel options, and bad
values name the key."""

from __future__ import annotations

from config_helpers import PSK_CONN, Write, errors_of

from xfrmctl.config import load_config
from xfrmctl.daemon.specs import build_specs
from xfrmctl.ike.spec import InterfaceOptions

INTERFACE = """\
interface:
  name: xfrm-siteb
  if_id: 42
  mtu: 1400
  addresses: [169.254.0.1/30]
  routes: [10.2.0.0/16, fd00:2::/48]
"""


def _conn(write: Write, extra: str, child_extra: str = "") -> str:
    write("site-b.psk", "s3cret-s3cret\n", 0o600)
    lines = "".join(f"    {line}\n" for line in extra.splitlines())
    text = PSK_CONN.replace("    psk_file: site-b.psk\n", "    psk_file: site-b.psk\n" + lines)
    if child_extra:
        anchor = "        remote_ts: [10.2.0.0/16]\n"
        text = text.replace(anchor, anchor + child_extra, 1)
    return text


def test_every_child_gets_the_interface_and_its_if_id(write: Write) -> None:
    (spec,) = build_specs(load_config(write("xfrmctl.yaml", _conn(write, INTERFACE))))
    want = InterfaceOptions(
        "xfrm-siteb", 42, 1400, ("169.254.0.1/30",), ("10.2.0.0/16", "fd00:2::/48")
    )
    assert spec.children
    for child in spec.children:
        assert child.kernel.interface == want
        assert (child.kernel.if_id_in, child.kernel.if_id_out) == (42, 42)


def test_without_an_interface_children_have_none(write: Write) -> None:
    (spec,) = build_specs(load_config(write("xfrmctl.yaml", _conn(write, ""))))
    assert all(c.kernel.interface is None and c.kernel.if_id_in == 0 for c in spec.children)


def test_a_childs_own_if_id_must_agree_with_the_interface(write: Write) -> None:
    text = _conn(write, INTERFACE, "        if_id_out: 7\n")
    errors = errors_of(write("xfrmctl.yaml", text))
    assert any("if_id_out is 7, but interface.if_id is 42" in e for e in errors), errors
    same = _conn(write, INTERFACE, "        if_id_in: 42\n")
    assert build_specs(load_config(write("b.yaml", same)))


def _interface(**keys: str) -> str:
    values = {"name": "xfrm-siteb", "if_id": "42", **keys}
    return "interface:\n" + "".join(f"  {k}: {v}\n" for k, v in values.items() if v)


def test_bad_interface_values_name_the_key(write: Write) -> None:
    cases = {  # key: (bad value, or "" to leave the key out)
        "name": ["this-name-is-far-too-long", "'a/b'", ""],
        "if_id": ["0", ""],
        "routes": ["[10.2.0.1/16]", "[nowhere]"],
        "addresses": ["[not-an-address/30]"],
        "mtu": ["20"],
    }
    for key, values in cases.items():
        for value in values:
            path = write(f"{key}.yaml", _conn(write, _interface(**{key: value})))
            errors = errors_of(path)
            assert any(f"connections.site-b.interface.{key}" in e for e in errors), (value, errors)
    bare = _conn(write, _interface(addresses="[169.254.0.1]"))  # an address alone is a /32
    assert errors_of(write("bare.yaml", bare)) == []
