"""peering_paths: which peering objects a replica waits for before kopf starts (kopf's own choice of kind)."""

from __future__ import annotations

import pytest

from kubestill.handlers.peering_wait import peering_paths


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
