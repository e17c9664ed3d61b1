"""CanaryRollout reads and status writes (the status subresource, conditioned on resourceVersion)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from kubestill.api.v1alpha1 import API_VERSION
from kubestill.api.v1alpha1.canaryrollout import PLURAL, CanaryRolloutStatus

from .kube import ApiError, KubeClient

# The HTTP port of a StudentModel's Triton Service (contracts: http 8000, grpc 8001, metrics 8002).
TRITON_HTTP_PORT = 8000


def rollout_path(namespace: str, name: str, subresource: str | None = None) -> str:
    path = f"/apis/{API_VERSION}/namespaces/{quote(namespace)}/{PLURAL}/{quote(name)}"
    return f"{path}/{subresource}" if subresource else path


async def get(api: KubeClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return await api.request("GET", rollout_path(namespace, name))
    except ApiError as err:
        if err.status == 404:
            return None
        raise


async def patch_status(
    api: KubeClient, namespace: str, name: str, resource_version: str | None, status: CanaryRolloutStatus
) -> dict[str, Any]:
    """Replace the status (a merge patch with every field, nulls included, so cleared fields go away);
    with `resource_version` the write fails with 409 when the object changed since it was read."""
    patch: dict[str, Any] = {"status": status.model_dump(by_alias=True, mode="json")}
    if resource_version:
        patch["metadata"] = {"resourceVersion": resource_version}
    return await api.request(
        "PATCH", rollout_path(namespace, name, "status"), body=patch, content_type="application/merge-patch+json"
    )


async def list_in(api: KubeClient, namespace: str, selector: str) -> list[dict[str, Any]]:
    """The CanaryRollouts of a namespace that match a label selector."""
    path = f"/apis/{API_VERSION}/namespaces/{quote(namespace)}/{PLURAL}"
    found = await api.request("LIST", path, params={"labelSelector": selector})
    return list(found.get("items") or [])


async def patch_metadata(
    api: KubeClient, namespace: str, name: str, resource_version: str | None, metadata: dict[str, Any]
) -> dict[str, Any]:
    """Merge-patch finalizers and annotations of a rollout (lists are replaced whole, so `metadata` carries the
    full finalizer list); with `resource_version` the write fails with 409 when the object changed since read."""
    patch = {**metadata, **({"resourceVersion": resource_version} if resource_version else {})}
    return await api.request(
        "PATCH", rollout_path(namespace, name), body={"metadata": patch}, content_type="application/merge-patch+json"
    )
