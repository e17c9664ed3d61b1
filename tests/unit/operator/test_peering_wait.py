"""peering_paths: which peering objects a replica waits for before kopf starts (kopf's own choice of kind)."""

from __future__ import annotations

import asyncio
import socket

import kopf
import pytest

from kubestill.clients.kube import KubeClient
from kubestill.handlers.peering_wait import peering_paths, wait_for_peering


@pytest.mark.parametrize(("namespaces", "expected"), [
    ([], ["/apis/kopf.dev/v1/clusterkopfpeerings/kubestill"]),  # cluster-wide: the ClusterKopfPeering
    (["team-a"], ["/apis/kopf.dev/v1/namespaces/team-a/kopfpeerings/kubestill"]),
    (["a", "b"], ["/apis/kopf.dev/v1/namespaces/a/kopfpeerings/kubestill",
                  "/apis/kopf.dev/v1/namespaces/b/kopfpeerings/kubestill"]),
    (["team-*", "b"], ["/apis/kopf.dev/v1/namespaces/b/kopfpeerings/kubestill"]),  # a pattern names no object yet
    (["!kube-system"], []),
])
def test_peering_paths(namespaces: list[str], expected: list[str]) -> None:
    assert peering_paths("kubestill", namespaces) == expected


def test_an_unreachable_api_server_is_retried_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    """A replica that starts before the API server answers keeps waiting (kopf retries too), saying why."""
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def attempt() -> None:
        client = KubeClient(kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}"))
        try:
            await asyncio.wait_for(wait_for_peering(client, peering_paths("kubestill", []), every=0.05), 0.5)
        finally:
            await client.close()

    with pytest.raises(TimeoutError):
        asyncio.run(attempt())
    assert "cannot reach the API server" in caplog.text
