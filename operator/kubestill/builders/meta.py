"""Labels, names and owner references shared by every child object the operator builds. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubestill.api.names import MANAGED_BY, MANAGER, PVC_ROOT


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """A controller ownerReference to `owner` (a manifest with apiVersion, kind, metadata.name/uid), so the
    garbage collector deletes the child with its owner."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(
    name: str, owner: Mapping[str, Any], labels: Mapping[str, str], extra_labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """metadata of a child: same namespace as the owner, owned by it, labelled as managed by kubestill."""
    return {
        "name": name,
        "namespace": owner["metadata"]["namespace"],
        "labels": {**(extra_labels or {}), MANAGED_BY: MANAGER, **labels},
        "ownerReferences": [owner_reference(owner)],
    }


def build_cluster_ip_service(name: str, owner: Mapping[str, Any], labels: Mapping[str, str],
                             extra_labels: Mapping[str, str] | None, ports: list[tuple[str, int]]) -> dict[str, Any]:
    """A ClusterIP Service `name` owned by `owner`, selecting the Pods labelled app.kubernetes.io/instance=`name`,
    one TCP port per (name, port) of `ports`, each to the container port of the same name."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(name, owner, labels, extra_labels),
        "spec": {
            "selector": {"app.kubernetes.io/instance": name},
            "ports": [{"name": n, "port": port, "targetPort": n, "protocol": "TCP"} for n, port in ports],
        },
    }


def pvc_claims(uris: list[str | None]) -> list[str]:
    """Claim names of the pvc:// URIs among `uris`, in first-seen order, without duplicates."""
    claims: list[str] = []
    for uri in uris:
        if uri and uri.startswith("pvc://"):
            claim = uri[len("pvc://"):].split("/", 1)[0]
            if claim and claim not in claims:
                claims.append(claim)
    return claims


def local_path(uri: str) -> str | None:
    """Where a URI's directory is visible inside a Pod: pvc:// under PVC_ROOT, file:// as is; None for
    pkg:// (resolved by the process that imports the package)."""
    if uri.startswith("pvc://"):
        return f"{PVC_ROOT}/{uri[len('pvc://'):]}".rstrip("/")
    if uri.startswith("file://"):
        return uri[len("file://"):].rstrip("/") or "/"
    return None


def join_uri(uri: str, *parts: str) -> str:
    """`uri` with path parts appended: join_uri("pvc://c/run/", "export") == "pvc://c/run/export"."""
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


def pvc_volumes(claims: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and their mounts for each claim, mounted at PVC_ROOT/<claim>."""
    volumes = [{"name": f"pvc-{c}"[:63], "persistentVolumeClaim": {"claimName": c}} for c in claims]
    mounts = [{"name": f"pvc-{c}"[:63], "mountPath": f"{PVC_ROOT}/{c}"} for c in claims]
    return volumes, mounts


# What a manager that gives everything back keeps owning when it is the object's only manager: metadata.name, which
# never changes, so it can never conflict with anyone.
PLACEHOLDER_FIELDS: dict[str, Any] = {"f:metadata": {"f:name": {}}}


def build_field_manager_release(obj: Mapping[str, Any], manager: str) -> dict[str, Any] | None:
    """A merge patch that gives back every field `manager` owns by server-side apply, leaving the values as they
    are: `metadata.managedFields` without `manager`'s entries, conditioned on the object's resourceVersion (a write
    in between fails with 409 instead of being undone). None when `manager` owns nothing.

    Why not an empty apply as `manager`: for a field it alone owns, an apply that omits it deletes the field.
    When `manager` is the only manager, its entry is shrunk to PLACEHOLDER_FIELDS instead of dropped: an object
    without managedFields makes the next apply see a "before-first-apply" manager owning every field, so it would
    conflict on all of them (tests/integration/test_route_ownership.py shows both on the real API server).
    """
    meta = obj.get("metadata") or {}
    entries = list(meta.get("managedFields") or [])
    ours = [e for e in entries if e.get("manager") == manager]
    keep = [e for e in entries if e.get("manager") != manager]
    if not ours:
        return None
    if not keep:
        if [e.get("fieldsV1") for e in ours] == [PLACEHOLDER_FIELDS]:
            return None
        keep = [{**ours[0], "fieldsV1": PLACEHOLDER_FIELDS}]
    patch: dict[str, Any] = {"managedFields": keep}
    if meta.get("resourceVersion"):
        patch["resourceVersion"] = meta["resourceVersion"]
    return {"metadata": patch}


# The fields a container's securityContext shares with the Pod's (core/v1 SecurityContext vs PodSecurityContext).
_CONTAINER_LEVEL = ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile", "seLinuxOptions", "appArmorProfile",
                    "windowsOptions")


def container_security(pod_security: Mapping[str, Any] | None, security: Mapping[str, Any] | None) -> dict[str, Any]:
    """One container's securityContext carrying the pod-level settings it can (user, non-root, seccomp, ...) and
    then `security`, which wins: for a container that must be restricted in a Pod whose own context is not ours
    (the artifact download in the Triton Pod). Empty when both are."""
    pod = pod_security or {}
    return {**{k: pod[k] for k in _CONTAINER_LEVEL if k in pod}, **(security or {})}


def writable_tmp(security: Mapping[str, Any] | None, volume: str = "tmp") -> tuple[
    list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]
]:
    """(volumes, mounts, env) giving a container with a read-only root filesystem an emptyDir at /tmp as HOME
    (Python, boto3 and torch write caches and temporary files there); nothing when the root is writable."""
    if not (security or {}).get("readOnlyRootFilesystem"):
        return [], [], []
    return ([{"name": volume, "emptyDir": {}}], [{"name": volume, "mountPath": "/tmp"}],
            [{"name": "HOME", "value": "/tmp"}])
