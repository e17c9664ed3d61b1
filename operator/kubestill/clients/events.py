"""Kubernetes Events on our objects, so `kubectl describe` tells the story of each transition."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .kube import KubeClient


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def post_event(client: KubeClient, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """A core/v1 Event about `obj` (reported by component kubestill-operator)."""
    meta = obj["metadata"]
    now = _now()
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "kubestill-operator"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    await client.create(body)
