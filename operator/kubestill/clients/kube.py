"""The only code that talks to the Kubernetes API for DistillationJobs and StudentModels.

Why aiohttp directly: kopf already runs on aiohttp and logs in through our `on.login` handler with its own
dependency-free kubeconfig / service-account readers; reusing those credentials in one shared aiohttp
session keeps everything on kopf's event loop (no thread pool per call as with the sync `kubernetes`
client) and avoids importing the generated `kubernetes` models, whose import alone costs ~40 MB of RSS.
Every request is counted by verb and resource (`kubestill_api_requests_total`), so the scale benchmark
can report API requests per reconcile.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf
import yaml
from prometheus_client import Counter, Histogram

API_REQUESTS = Counter(
    "kubestill_api_requests_total", "Kubernetes API requests made by kubestill's handlers", ["verb", "resource"]
)
API_SECONDS = Histogram("kubestill_api_request_seconds", "Latency of Kubernetes API requests", ["verb"])


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


_PLURALS = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("v1", "Pod"): "pods",
    ("v1", "Secret"): "secrets",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("v1", "Event"): "events",
    ("batch/v1", "Job"): "jobs",
    ("apps/v1", "Deployment"): "deployments",
    ("kubestill.io/v1alpha1", "DistillationJob"): "distillationjobs",
    ("kubestill.io/v1alpha1", "StudentModel"): "studentmodels",
    ("kubestill.io/v1alpha1", "CanaryRollout"): "canaryrollouts",
}


def resource_path(api_version: str, kind: str, namespace: str | None, name: str | None = None,
                  subresource: str | None = None) -> str:
    """/api/v1/namespaces/ns/configmaps[/name[/sub]] or /apis/group/version/... for the kinds we use;
    namespace None: the collection across every namespace (/apis/group/version/plural)."""
    plural = _PLURALS[(api_version, kind)]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/{plural}" if namespace is None else f"{prefix}/namespaces/{quote(namespace)}/{plural}"
    if name is not None:
        path += f"/{quote(name)}"
    if subresource is not None:
        path += f"/{subresource}"
    return path


# Each TLS connection holds a 256 KiB read buffer (asyncio's SSL protocol), so 64 of them cost 16 MB under a
# burst; 32 in flight keep the API server busy (it is CPU-bound well before that).
CONNECTIONS = 32


class KubeClient:
    """A small async REST client on one aiohttp session, built from kopf's ConnectionInfo."""

    def __init__(self, info: kopf.ConnectionInfo) -> None:
        self.info = info
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=CONNECTIONS, ssl=self.info.as_ssl_context()),
                headers={**self.info.as_http_headers(), "User-Agent": "kubestill-operator"},
                timeout=aiohttp.ClientTimeout(total=30),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, verb: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None,
                      content_type: str = "application/json", parse: bool = True) -> dict[str, Any]:
        resource = path.rstrip("/").split("/")[-1 if verb in ("POST", "LIST") else -2]
        if path.endswith("/status"):
            resource = path.split("/")[-3] + "/status"
        API_REQUESTS.labels(verb=verb, resource=resource).inc()
        method = "GET" if verb == "LIST" else verb
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        with API_SECONDS.labels(verb=verb).time():
            return await self._send(method, path, data, params, headers, parse)

    async def _send(self, method: str, path: str, data: str | None, params: Mapping[str, str] | None,
                    headers: Mapping[str, str], parse: bool = True) -> dict[str, Any]:
        async with self._get_session().request(method, self.info.server.rstrip("/") + path, data=data,
                                               params=params, headers=headers) as resp:
            text = await resp.text()
            if resp.status < 400 and not parse:
                return {}
            try:
                payload: Any = json.loads(text) if text else {}
            except ValueError:  # not the API server's JSON: a proxy's HTML page, a plain-text 404 ...
                payload = None
            if resp.status >= 400 or not isinstance(payload, dict):
                known = payload if isinstance(payload, dict) else {}
                detail = " ".join(text[:300].split()) or "empty body"
                reason = str(known.get("reason", resp.reason))
                if resp.status < 400:
                    reason, detail = "NotKubernetes", f"the answer is not a Kubernetes object: {detail}"
                raise ApiError(resp.status, reason, str(known.get("message", detail)))
            return payload

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self.request("GET", resource_path(api_version, kind, namespace, name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    async def list(self, api_version: str, kind: str, namespace: str | None,
                   selector: str | None = None) -> list[dict[str, Any]]:
        """The objects of a namespace (None: of every namespace), optionally filtered by a label selector."""
        path = resource_path(api_version, kind, namespace)
        found = await self.request("LIST", path, params={"labelSelector": selector} if selector else None)
        return list(found.get("items") or [])

    async def create(self, body: Mapping[str, Any]) -> bool:
        """Create `body`; False when an object of that name already exists (idempotent replay)."""
        meta = body["metadata"]
        path = resource_path(body["apiVersion"], body["kind"], meta["namespace"])
        try:
            # The created object comes back whole (a Job: kilobytes); nothing reads it, so it is not parsed.
            await self.request("POST", path, body=body, parse=False)
        except ApiError as err:
            if err.status == 409:
                return False
            raise
        return True

    async def merge_patch(self, api_version: str, kind: str, namespace: str, name: str, patch: Mapping[str, Any],
                          subresource: str | None = None) -> dict[str, Any]:
        path = resource_path(api_version, kind, namespace, name, subresource)
        return await self.request("PATCH", path, body=patch, content_type="application/merge-patch+json")

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            await self.request("DELETE", resource_path(api_version, kind, namespace, name),
                               body={"propagationPolicy": "Background"})
        except ApiError as err:
            if err.status != 404:
                raise


class NoCluster(Exception):
    """No credentials to reach a cluster with (no kubeconfig and not in a Pod), or a kubeconfig that cannot be
    read; the message says which, in one line."""


def _via_client_library() -> kopf.ConnectionInfo:
    """$KUBECONFIG (else ~/.kube/config) read by the `kubernetes` client library, which runs `exec` credential
    plugins and auth-providers; the credentials it ends with, as kopf's ConnectionInfo."""
    from kubernetes import client, config

    configuration = client.Configuration()
    # The file is named here: the library fixes its default ($KUBECONFIG) when it is first imported.
    path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    config.load_kube_config(config_file=path, client_configuration=configuration)
    # kubernetes >= 36.0.1 keeps the bearer token under BearerToken, older versions under authorization.
    header = (configuration.get_api_key_with_prefix("BearerToken")
              or configuration.get_api_key_with_prefix("authorization") or "")
    scheme, _, token = header.rpartition(" ")
    if not configuration.host or not (token or configuration.cert_file or configuration.username):
        raise kopf.LoginError("the client library found no server or no credentials")
    return kopf.ConnectionInfo(
        server=configuration.host, ca_path=configuration.ssl_ca_cert, insecure=not configuration.verify_ssl,
        username=configuration.username or None, password=configuration.password or None,
        scheme=scheme or None, token=token or None,
        certificate_path=configuration.cert_file, private_key_path=configuration.key_file,
    )


def connect() -> kopf.ConnectionInfo:
    """Credentials for a command-line client (`kubestill status`, `kubestill rollout`).

    First through the `kubernetes` client library, which runs a kubeconfig's
    `exec` credential plugins and auth-providers, as users' kubeconfigs for EKS, GKE or AKS need; where that
    finds nothing, kopf's own dependency-free readers: $KUBECONFIG (else ~/.kube/config), else the Pod's service
    account, whose errors say precisely what is wrong with the file. Raises NoCluster."""
    settings = kopf.OperatorSettings()
    try:
        return _via_client_library()
    except Exception:  # any failure there is explained by the plain readers below
        pass
    try:
        info = kopf.login_with_kubeconfig(settings=settings) or kopf.login_with_service_account(settings=settings)
    except (OSError, KeyError, TypeError, ValueError, AttributeError, yaml.YAMLError, kopf.LoginError) as err:
        detail = " ".join(str(err).split())  # one line: YAML errors span several
        raise NoCluster(f"cannot read the kubeconfig ({os.environ.get('KUBECONFIG') or '~/.kube/config'}): "
                        f"{type(err).__name__}: {detail}") from err
    if info is None:
        raise NoCluster("no cluster to talk to: set KUBECONFIG (e.g. `kubestill dev up` prints one) or run "
                        "inside a Pod")
    if not info.server:
        raise NoCluster(f"the kubeconfig ({os.environ.get('KUBECONFIG') or '~/.kube/config'}) names no server "
                        "for its current context")
    return info


class Connection:
    """The operator's KubeClient, (re)built by kopf's login handler: kopf logs in after the start-up handlers
    and again whenever the API server refuses its credentials, so the controllers hold this object and call it
    for the current client. Owned by the Operator built at start-up (handlers/operator.py), never a global."""

    def __init__(self, client: KubeClient | None = None) -> None:
        self._client = client  # given: already logged in (tests, tools); else set by login()

    def login(self, settings: kopf.OperatorSettings, **kwargs: Any) -> kopf.ConnectionInfo:
        """kopf's own minimal readers: the in-cluster service account first, else $KUBECONFIG. The same
        credentials serve kopf's watches and our client. Raises kopf.LoginError when there are none."""
        info = kopf.login_with_service_account(settings=settings, **kwargs) or kopf.login_with_kubeconfig(
            settings=settings, **kwargs
        )
        if info is None:
            raise kopf.LoginError("no service account and no kubeconfig: set KUBECONFIG")
        self._client = KubeClient(info)
        return info

    def __call__(self) -> KubeClient:
        """The client of the latest login; RuntimeError before the first (kopf logs in before any handler)."""
        if self._client is None:
            raise RuntimeError("kopf has not logged in yet (Connection.login has not run)")
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
