"""Object keys and the small pure helpers every controller uses to find an object and its owner."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Key = tuple[str, str]  # (namespace, name)


def key_of(body: Mapping[str, Any]) -> Key:
    """(namespace, name) of a Kubernetes object body."""
    meta = body["metadata"]
    return meta["namespace"], meta["name"]


def first_indexed(indexes: Mapping[str, Any], index_name: str, key: Key) -> Any:
    """The first value a kopf index holds for `key`, or None (kopf indexes map keys to collections)."""
    store = indexes.get(index_name)
    if store is None or key not in store:
        return None
    return next(iter(store[key]), None)


def owner_key(body: Mapping[str, Any], owner_label: str) -> Key | None:
    """The (namespace, name) of the object a child belongs to, from the child's owner label."""
    owner = (body["metadata"].get("labels") or {}).get(owner_label)
    return (body["metadata"]["namespace"], owner) if owner else None


def newer(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    """Of two versions of one object, the one with the higher resourceVersion (etcd revisions are
    monotonic integers in practice; when they are not numbers, prefer `a`, the watched one)."""
    if a is None or b is None:
        return a or b
    try:
        ra = int(a["metadata"]["resourceVersion"])
        rb = int(b["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return a
    return a if ra >= rb else b
