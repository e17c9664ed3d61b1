"""The TraefikService of a CanaryRollout's shadow step (builders/traefikservice.py): read, server-side apply as
field manager `kubestill-canary`, delete.

Traefik's CRDs are not kubestill's: on a cluster without them every request here answers 404 for the resource
type itself; `apply_traefik_service` turns that into MirrorUnavailable, which the rollout reports as its
RouteReady condition instead of retrying blindly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from kubestill.api.traefik import TRAEFIK_API_VERSION, TRAEFIK_SERVICE_PLURAL

from .gateway import FIELD_MANAGER
from .kube import ApiError, KubeClient


class MirrorUnavailable(Exception):
    """The cluster serves no TraefikService (Traefik's CRDs are not installed)."""


def traefik_service_path(namespace: str, name: str) -> str:
    return f"/apis/{TRAEFIK_API_VERSION}/namespaces/{quote(namespace)}/{TRAEFIK_SERVICE_PLURAL}/{quote(name)}"


async def get_traefik_service(client: KubeClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The TraefikService, or None when it (or its CRD) does not exist."""
    try:
        return await client.request("GET", traefik_service_path(namespace, name))
    except ApiError as err:
        if err.status == 404:
            return None
        raise


async def apply_traefik_service(client: KubeClient, body: Mapping[str, Any]) -> dict[str, Any]:
    """Server-side apply of `body` as `kubestill-canary` (forced: the object is the rollout's alone). An apply
    creates a missing object, so a 404 means the resource type is unknown: MirrorUnavailable. Other refusals
    raise ApiError."""
    meta = body["metadata"]
    try:
        return await client.request(
            "PATCH", traefik_service_path(meta["namespace"], meta["name"]), body=body,
            params={"fieldManager": FIELD_MANAGER, "force": "true"}, content_type="application/apply-patch+yaml",
        )
    except ApiError as err:
        if err.status == 404:
            raise MirrorUnavailable(str(err)) from err
        raise


async def delete_traefik_service(client: KubeClient, namespace: str, name: str) -> None:
    """Delete the TraefikService; one that is gone (or a cluster without the CRD) is fine."""
    try:
        await client.request("DELETE", traefik_service_path(namespace, name))
    except ApiError as err:
        if err.status != 404:
            raise
