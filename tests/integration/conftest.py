"""Fixtures of the tests that send real traffic through Traefik: this machine's address for the backends, one
Traefik per test module, and a keep-alive client of the test's namespace (tests/integration/http_backends.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from kubestill.dev.controlplane import Cluster
from kubestill.dev.gateway import Gateway, start_gateway

from .http_backends import Client, host_address


@pytest.fixture(scope="module")
def address() -> str:
    found = host_address()
    if found is None:
        pytest.skip("no non-loopback IPv4 address: the API server refuses 127.0.0.1 in EndpointSlices")
    return found


@pytest.fixture(scope="module")
def gateway(cluster: Cluster) -> Iterator[Gateway]:
    """One Traefik for the module, with a GatewayClass and a Gateway of its own."""
    with start_gateway(cluster.kubeconfig, name=f"gw-{uuid.uuid4().hex[:8]}") as running:
        yield running


@pytest.fixture
def client(gateway: Gateway, namespace: str) -> Iterator[Client]:
    c = Client(gateway, namespace)
    try:
        yield c
    finally:
        c.close()
