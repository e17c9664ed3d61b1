"""A fake Kubernetes client for the runtime's tests: records every request, answers from an in-memory store of
objects by path, bumps resourceVersion on each write, and fails requests on demand."""

from __future__ import annotations

import builtins
import copy
from collections.abc import Mapping
from typing import Any

from kubestill.clients.kube import ApiError, resource_path


class FakeKube:
    """Objects by their path (no /status); `fail[(verb, path)]` lists statuses the next such requests get."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.fail: dict[tuple[str, str], list[int]] = {}
        self.revision = 100

    def put(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.revision += 1
        stored = copy.deepcopy(body)
        stored.setdefault("metadata", {})["resourceVersion"] = str(self.revision)
        self.objects[path] = stored
        return copy.deepcopy(stored)

    def _maybe_fail(self, verb: str, path: str) -> None:
        pending = self.fail.get((verb, path))
        if pending:
            raise ApiError(pending.pop(0), "Injected", f"{verb} {path}")

    async def request(self, verb: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None,
                      content_type: str = "application/json", parse: bool = True) -> dict[str, Any]:
        self.requests.append((verb, path, copy.deepcopy(body)))
        self._maybe_fail(verb, path)
        target = path.removesuffix("/status")
        if verb == "GET":
            if target not in self.objects:
                raise ApiError(404, "NotFound", path)
            return copy.deepcopy(self.objects[target])
        if verb == "PATCH":
            return self._patch(target, body)
        if verb == "POST":
            name = body["metadata"]["name"]
            if f"{path}/{name}" in self.objects:
                raise ApiError(409, "AlreadyExists", name)
            return self.put(f"{path}/{name}", body)
        raise AssertionError(f"unexpected {verb} {path}")

    def _patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if path not in self.objects:
            raise ApiError(404, "NotFound", path)
        current = self.objects[path]
        want = (body.get("metadata") or {}).get("resourceVersion")
        if want is not None and want != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        merged = copy.deepcopy(current)
        for field, value in body.items():
            if field != "metadata":
                merged[field] = _merge(merged.get(field), value)
        return self.put(path, merged)

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", resource_path(api_version, kind, namespace, name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    async def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.requests.append(("LIST", resource_path(api_version, kind, namespace), selector))
        return []

    async def create(self, body: Mapping[str, Any]) -> bool:
        meta = body["metadata"]
        try:
            await self.request("POST", resource_path(body["apiVersion"], body["kind"], meta["namespace"]),
                               body=dict(body))
        except ApiError as err:
            if err.status == 409:
                return False
            raise
        return True

    async def merge_patch(self, api_version: str, kind: str, namespace: str, name: str, patch: Mapping[str, Any],
                          subresource: str | None = None) -> dict[str, Any]:
        path = resource_path(api_version, kind, namespace, name, subresource)
        return await self.request("PATCH", path, body=dict(patch))

    async def close(self) -> None:
        self.closed = True

    def writes(self, verb: str = "PATCH") -> builtins.list[tuple[str, str, Any]]:
        return [r for r in self.requests if r[0] == verb]


def _merge(old: Any, new: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(new, dict):
        return new
    out = dict(old) if isinstance(old, dict) else {}
    for key, value in new.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out
