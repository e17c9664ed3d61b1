"""A tiny synchronous Kubernetes REST client for the local node (dev only; the operator has its own).

One persistent HTTPS connection, credentials read from the kubeconfig by kopf's dependency-free reader.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import kopf


class KubeError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text[:500]}")
        self.status = status


class KubeAPI:
    """GET/LIST/POST/PATCH/DELETE raw JSON against one API server."""

    def __init__(self, kubeconfig: Path | str | None = None) -> None:
        saved = os.environ.get("KUBECONFIG")
        if kubeconfig is not None:
            os.environ["KUBECONFIG"] = str(kubeconfig)
        try:
            info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
        finally:
            if saved is None:
                os.environ.pop("KUBECONFIG", None)
            else:
                os.environ["KUBECONFIG"] = saved
        if info is None:
            raise RuntimeError("no kubeconfig: set KUBECONFIG")
        self.info = info
        parts = urlsplit(info.server)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 443
        self._ssl = info.as_ssl_context()
        self._headers = info.as_http_headers()
        self._conn: http.client.HTTPSConnection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(self._host, self._port, context=self._ssl, timeout=30)
        return self._conn

    def request(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None,
                content_type: str = "application/json") -> dict[str, Any]:
        url = path + ("?" + urlencode(params) if params else "")
        data = None if body is None else json.dumps(body).encode()
        headers = {**self._headers, "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        with self._lock:
            for attempt in (1, 2):  # one reconnect when the server closed an idle connection
                conn = self._connection()
                try:
                    conn.request(method, url, body=data, headers=headers)
                    resp = conn.getresponse()
                    text = resp.read().decode()
                    break
                except (ConnectionError, http.client.HTTPException, OSError):
                    conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise
        if resp.status >= 400:
            raise KubeError(resp.status, text)
        return json.loads(text) if text else {}

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path)
        except KubeError as err:
            if err.status == 404:
                return None
            raise

    def list(self, path: str, selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": selector} if selector else None
        return list(self.request("GET", path, params=params).get("items") or [])

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", path, body)

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def delete(self, path: str) -> None:
        try:
            self.request("DELETE", path)
        except KubeError as err:
            if err.status != 404:
                raise
