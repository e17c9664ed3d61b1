"""kubestill.dev.ports: free port groups below the ephemeral and NodePort ranges."""

from __future__ import annotations

import socket

from kubestill.dev.ports import HIGH, LOW, _all_free, reserve_ports


def test_a_group_is_free_in_range_and_recorded() -> None:
    taken: set[int] = set()
    first = reserve_ports(taken, (0, 10000))
    second = reserve_ports(taken, (0, 10000))
    assert LOW <= first < first + 10000 < HIGH and LOW <= second < second + 10000 < HIGH
    assert taken == {first, first + 10000, second, second + 10000}  # four distinct ports
    assert _all_free(taken, "127.0.0.1")


def test_a_bound_port_is_not_free() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert not _all_free({port}, "127.0.0.1")
