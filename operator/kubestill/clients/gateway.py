"""HTTPRoute reads, the server-side apply of the rollout's weights (field manager `kubestill-canary`), and giving
the route back.

The apply carries the route's resourceVersion (see builders/httproute.py for why the whole `spec.rules`
travels): when anyone changed the route since we read it, the API server answers 409 and we re-read. Because
`spec.rules` is atomic, `kubestill-canary` owns all of it while a rollout runs; `give_back_fields` hands that
ownership back when the rollout ends (builders/meta.py `build_field_manager_release`), so GitOps tools apply
the route again without conflicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from .kube import ApiError, KubeClient

FIELD_MANAGER = "kubestill-canary"
GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_VERSION = "v1"


def route_path(namespace: str, name: str) -> str:
    return f"/apis/{GATEWAY_GROUP}/{GATEWAY_VERSION}/namespaces/{quote(namespace)}/httproutes/{quote(name)}"


async def get_route(client: KubeClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The HTTPRoute, or None when it does not exist."""
    try:
        return await client.request("GET", route_path(namespace, name))
    except ApiError as err:
        if err.status == 404:
            return None
        raise


async def apply_route(client: KubeClient, body: Mapping[str, Any]) -> dict[str, Any]:
    """Server-side apply of `body` (from build_httproute_weights) as `kubestill-canary`, forcing ownership
    of the fields it carries; a stale resourceVersion raises ApiError 409."""
    meta = body["metadata"]
    return await client.request(
        "PATCH",
        route_path(meta["namespace"], meta["name"]),
        body=body,
        params={"fieldManager": FIELD_MANAGER, "force": "true"},
        content_type="application/apply-patch+yaml",
    )


async def give_back_fields(client: KubeClient, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
    """Send a managedFields merge patch (builders.meta.build_field_manager_release): `kubestill-canary` stops
    owning the route's fields, their values stay. A stale resourceVersion raises ApiError 409."""
    return await client.request(
        "PATCH", route_path(namespace, name), body=patch, content_type="application/merge-patch+json"
    )
