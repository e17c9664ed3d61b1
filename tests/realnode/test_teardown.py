"""Stopping the real node leaves nothing on the host: no process, mount, cgroup, link, route, iptables rule or
directory of its own, and every sysctl it changed is back. Runs after every other real-node test (conftest)."""

from __future__ import annotations

import pytest

from kubestill.dev import host, realnode

from .conftest import NodeSession

pytestmark = [pytest.mark.realnode, pytest.mark.realnode_teardown]


def test_teardown_leaves_nothing_behind(node_session: NodeSession) -> None:
    node = node_session.node
    during = host.Footprint.take(node.bin_dir, node.state_dir)
    changed = node_session.before.diff(during)
    # Sanity: the footprint sees the node while it runs (else the check below would prove nothing).
    assert any(realnode.NODE_LINK in link for link in changed["links"]["added"]), changed.get("links")
    assert changed["processes"]["added"] and changed["cgroups"]["added"] and changed["rules"]["added"]

    node_session.stopped = True
    realnode.stop(node, remove_state=False)
    after = host.Footprint.take(node.bin_dir, node.state_dir)
    assert node_session.before.diff(after) == {}
