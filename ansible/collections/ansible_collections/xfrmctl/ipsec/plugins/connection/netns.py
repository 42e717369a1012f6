# Copyright: xfrmctl developers
# Apache License 2.0 (see the repository's LICENSE)
"""Connection plugin: run tasks on this machine inside a named network namespace.

The project's lab hosts are network namespaces of one machine (integration/netlab.py). This is
the local connection with every command wrapped in ``ip netns exec NS``; files are shared, so
file transfer is the local connection's. Not for production: there, use ssh.
"""

from __future__ import annotations

DOCUMENTATION = """
name: netns
short_description: Run tasks on the controller inside a network namespace
description:
  - The C(ansible.builtin.local) connection, with each command run under C(ip netns exec NAME).
  - The namespaces share the controller's filesystem, so hosts must use distinct paths
    (configuration directory, socket, virtualenv) when that matters.
author: xfrmctl developers
version_added: "0.1.0"
options:
  netns:
    description: Name of the network namespace, as C(ip netns list) shows it.
    type: str
    required: true
    vars:
      - name: ansible_netns
  become_success_timeout:
    type: int
    default: 10
    description: As for the local connection.
    vars:
      - name: ansible_local_become_success_timeout
  become_strip_preamble:
    type: bool
    default: true
    description: As for the local connection.
    vars:
      - name: ansible_local_become_strip_preamble
extends_documentation_fragment:
  - connection_pipelining
"""

import os
import shlex

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.connection.local import Connection as LocalConnection


class Connection(LocalConnection):
    """Local connection inside ``ip netns exec``."""

    transport = "xfrmctl.ipsec.netns"

    def _connect(self) -> Connection:
        netns = self.get_option("netns")
        if not netns or not os.path.exists(f"/run/netns/{netns}"):
            raise AnsibleConnectionFailure(
                f"network namespace {netns!r} does not exist (no /run/netns/{netns})"
            )
        super()._connect()
        return self

    def exec_command(
        self, cmd: str, in_data: bytes | None = None, sudoable: bool = True
    ) -> tuple[int, bytes, bytes]:
        if not isinstance(cmd, str):
            cmd = " ".join(shlex.quote(str(part)) for part in cmd)
        netns = shlex.quote(self.get_option("netns"))
        wrapped = f"ip netns exec {netns} /bin/sh -c {shlex.quote(cmd)}"
        return super().exec_command(wrapped, in_data=in_data, sudoable=sudoable)
