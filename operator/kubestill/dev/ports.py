"""Free loopback ports for the local servers (SeaweedFS, Traefik) that cannot be told to pick their own."""

from __future__ import annotations

import contextlib
import secrets
import socket
from collections.abc import Sequence

# Below Linux's ephemeral range (32768-60999), where a port picked with bind(0) and released can be taken by any
# outgoing connection before the server binds it (under load weed then failed to start), and below the NodePort
# range (30000-32767), which the real node's kube-proxy intercepts.
LOW, HIGH = 10000, 30000


def reserve_ports(taken: set[int], offsets: Sequence[int] = (0,), host: str = "127.0.0.1") -> int:
    """A port p such that every p + offset (offset >= 0) is free on `host`, in [10000, 30000) and not in `taken`;
    adds them all to `taken` and returns p.

    Raises RuntimeError after 500 random tries (no such group free)."""
    rng = secrets.SystemRandom()
    span = max(offsets)
    for _ in range(500):
        port = rng.randrange(LOW, HIGH - span)
        group = {port + offset for offset in offsets}
        if group & taken or not _all_free(group, host):
            continue
        taken.update(group)
        return port
    raise RuntimeError(f"no free port group p+{list(offsets)} on {host} in [{LOW}, {HIGH})")


def _all_free(ports: set[int], host: str) -> bool:
    with contextlib.ExitStack() as stack:
        for port in ports:
            sock = stack.enter_context(socket.socket())
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True
