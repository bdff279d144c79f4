"""Whether this process runs in a network of its own.

Ray binds its services to the machine's own interface address, never to
loopback, even when told 127.0.0.1. The Ray tests and the Ray bench
therefore run in a network namespace whose only interface is loopback
(``scripts/private-network.sh``, used by ``make test``), where that address
is 127.0.0.1 and no traffic can leave the namespace.
"""

from __future__ import annotations

import socket

HOW = "run it in a private network namespace: scripts/private-network.sh COMMAND (as root; make test does)"


def private_network() -> bool:
    """True when loopback is this process's only network interface."""
    return {name for _, name in socket.if_nameindex()} <= {"lo"}
