"""Applying the child objects the operator builds (builders/*): one way for every kind that owns some."""

from __future__ import annotations

from typing import Any

from kubestill.clients.kube import KubeClient


async def apply_child(api: KubeClient, body: dict[str, Any]) -> None:
    """Create, or merge-patch labels and spec/data onto the existing object (ours by name)."""
    if await api.create(body):
        return
    meta = body["metadata"]
    patch: dict[str, Any] = {"metadata": {"labels": meta["labels"]}}
    for field in ("spec", "data"):
        if field in body:
            patch[field] = body[field]
    if body["kind"] == "Service":  # clusterIP and friends are immutable or server-assigned
        patch["spec"] = {"selector": body["spec"]["selector"], "ports": body["spec"]["ports"]}
    await api.merge_patch(body["apiVersion"], body["kind"], meta["namespace"], meta["name"], patch)
