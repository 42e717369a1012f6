"""The role installs the xfrmctl of the checkout it ships in.

site.yml builds this checkout's wheel and the role pins `xfrmctl==<xfrmctl_version>`: a
version bump that leaves the role's default behind makes every `vagrant up` fail to install
(test_role_netns.py proves the install itself, offline, on this host).
"""

from __future__ import annotations

from pathlib import Path

import yaml

import xfrmctl

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "ansible/collections/ansible_collections/xfrmctl/ipsec/roles/xfrmctl"


def test_role_default_version_is_the_checkout_version() -> None:
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    assert defaults["xfrmctl_version"] == xfrmctl.__version__


def test_role_argument_spec_documents_the_same_default() -> None:
    specs = yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert options["xfrmctl_version"]["default"] == xfrmctl.__version__
