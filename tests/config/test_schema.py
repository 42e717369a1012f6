"""The published JSON Schema is valid and accepts the shipped examples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from xfrmctl.config import json_schema

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_documents() -> list[tuple[str, Any]]:
    return [(p.name, yaml.safe_load(p.read_text())) for p in sorted(EXAMPLES.rglob("*.yaml"))]


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        node = schema["$defs"][name]
    return node


def _covered(schema: dict[str, Any], node: dict[str, Any], value: Any, where: str) -> None:
    """Every key in the document must be a property the schema declares (recursively)."""
    node = _resolve(schema, node)
    for option in node.get("anyOf", []):
        option = _resolve(schema, option)
        if option.get("type") == "object" and isinstance(value, dict):
            node = option
        if option.get("type") == "array" and isinstance(value, list):
            node = option
    if isinstance(value, dict):
        props = node.get("properties")
        if props is None:
            extra = node.get("additionalProperties")
            assert isinstance(extra, dict), f"{where}: schema has no shape for a mapping"
            for key, item in value.items():
                _covered(schema, extra, item, f"{where}.{key}")
            return
        assert node.get("additionalProperties") is False, f"{where}: unknown keys not rejected"
        for key, item in value.items():
            assert key in props, f"{where}.{key} missing from the schema"
            _covered(schema, props[key], item, f"{where}.{key}")
    elif isinstance(value, list) and "items" in node:
        for index, item in enumerate(value):
            _covered(schema, node["items"], item, f"{where}[{index}]")


def test_schema_is_json_and_declares_draft() -> None:
    schema = json.loads(json.dumps(json_schema()))
    assert schema["$schema"].endswith("2020-12/schema")
    assert set(schema["properties"]) == {"settings", "connections"}
    for name, definition in schema["$defs"].items():
        assert "description" in definition, f"{name} has no description for editors"


@pytest.mark.parametrize(("name", "document"), example_documents())
def test_schema_covers_examples(name: str, document: Any) -> None:
    schema = json_schema()
    _covered(schema, schema, document, name)


@pytest.mark.parametrize(("name", "document"), example_documents())
def test_examples_validate_with_jsonschema(name: str, document: Any) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(document)
    bad = {"connections": {"x": {"children": {"y": {"mode": "tunel"}}}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(bad)


def test_examples_pass_check_once_secrets_exist(tmp_path: Path) -> None:
    """The example tree, completed with the files it names, loads without errors."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from xfrmctl.config import check_config

    tree = tmp_path / "etc"
    shutil.copytree(EXAMPLES, tree)
    (tree / "secrets").mkdir()
    psk = tree / "secrets" / "site-b.psk"
    psk.write_text("0sAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n")
    psk.chmod(0o600)
    (tree / "pki").mkdir()
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tree / "pki" / "gw-a.key").write_bytes(pem)
    (tree / "pki" / "gw-a.key").chmod(0o600)
    for cert in ("gw-a.crt", "ca.crt"):
        (tree / "pki" / cert).write_text("certificate placeholder\n")
    loaded, issues = check_config(tree / "xfrmctl.yaml")
    assert [str(i) for i in issues if not i.warning] == []
    assert loaded is not None
    assert sorted(loaded.connections) == ["host-c", "site-b"]
    assert loaded.psk_bytes("site-b") == bytes(range(32))
    assert loaded.private_key_bytes("host-c") == pem


def test_schema_fields_carry_their_attribute_docstrings() -> None:
    schema = json_schema()
    connection = schema["$defs"]["Connection"]["properties"]
    undocumented = [key for key, node in connection.items() if "description" not in node]
    assert not undocumented, f"Connection keys without a description: {undocumented}"
    assert "Daemon-wide settings" in schema["properties"]["settings"]["description"]
