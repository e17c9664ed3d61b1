"""Service name -> local URL on the local node (tests, the demo and the canary need to reach Services that
have no cluster network here). The node writes the URLs of a Service's first ready Pod into the Service's
annotation `kubestill.io/local-endpoints` ({"http": "http://127.0.0.1:P", "grpc": "127.0.0.1:P", ...})."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .kubeapi import KubeAPI
from .node_deployments import ENDPOINTS_ANNOTATION


def local_endpoints(namespace: str, name: str, kubeconfig: Path | str | None = None,
                    api: KubeAPI | None = None) -> dict[str, str]:
    """The local URLs of Service `namespace/name` by port name; empty until a Pod behind it is ready."""
    api = api or KubeAPI(kubeconfig)
    svc = api.get(f"/api/v1/namespaces/{namespace}/services/{name}")
    if svc is None:
        return {}
    text = (svc["metadata"].get("annotations") or {}).get(ENDPOINTS_ANNOTATION)
    return dict(json.loads(text)) if text else {}


def service_url(namespace: str, name: str, port: str = "http", kubeconfig: Path | str | None = None,
                timeout: float = 0.0) -> str:
    """One port's local URL, waiting up to `timeout` seconds for the node to publish it."""
    api = KubeAPI(kubeconfig)
    deadline = time.monotonic() + timeout
    while True:
        urls = local_endpoints(namespace, name, api=api)
        if port in urls:
            return urls[port]
        if time.monotonic() >= deadline:
            raise LookupError(f"service {namespace}/{name} has no local {port!r} endpoint (is the node running?)")
        time.sleep(0.5)
