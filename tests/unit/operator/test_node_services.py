"""The local node's Service endpoints: which ready replica a Service selects, and the local URL of each port."""

from __future__ import annotations

from typing import Any

import pytest

from kubestill.dev.node_deployments import Replica, selected_replica, service_urls

TRITON = Replica("sm-a-1", "h", {"app": "sm-a", "tier": "triton"}, ports={"http": 41000, "grpc": 41001},
                 by_number={8000: 41000, 8001: 41001, 8002: 41002}, ready=True)
OTHER = Replica("sm-b-1", "h", {"app": "sm-b"}, ports={"http": 42000}, by_number={8000: 42000}, ready=True)
READY = [("ns1", OTHER), ("ns1", TRITON), ("ns2", TRITON)]


@pytest.mark.parametrize(
    ("namespace", "selector", "expected"),
    [
        ("ns1", {"app": "sm-a"}, TRITON),
        ("ns1", {"app": "sm-a", "tier": "triton"}, TRITON),  # every selector label must match
        ("ns1", {"app": "sm-a", "tier": "cpu"}, None),
        ("ns1", {"app": "sm-b"}, OTHER),
        ("ns2", {"app": "sm-b"}, None),  # a Service selects Pods of its own namespace only
        ("ns1", {}, None),  # no selector: no Pods (the Service's endpoints are managed by hand)
        ("ns3", {"app": "sm-a"}, None),
    ],
)
def test_selected_replica(namespace: str, selector: dict[str, str], expected: Replica | None) -> None:
    assert selected_replica(namespace, selector, READY) is expected


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        # Triton's Service: targetPort by name; gRPC gets no scheme (clients dial host:port).
        ([{"name": "http", "port": 8000, "targetPort": "http"}, {"name": "grpc", "port": 8001, "targetPort": "grpc"}],
         {"http": "http://127.0.0.1:41000", "grpc": "127.0.0.1:41001"}),
        # targetPort by number; without one, the port number itself.
        ([{"name": "metrics", "port": 9102, "targetPort": 8002}, {"port": 8000}],
         {"metrics": "http://127.0.0.1:41002", "8000": "http://127.0.0.1:41000"}),
        # Ports the replica does not expose are left out.
        ([{"name": "admin", "port": 9000, "targetPort": "admin"}, {"name": "x", "port": 7000}], {}),
        ([], {}),
    ],
)
def test_service_urls(ports: list[dict[str, Any]], expected: dict[str, str]) -> None:
    assert service_urls(ports, TRITON) == expected
