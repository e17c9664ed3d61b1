"""The TraefikService through which Traefik mirrors a CanaryRollout's shadow step (spec.shadow.mirror:
TraefikService). Pure.

Traefik does not implement the Gateway API's RequestMirror filter: it answers 500 to every request of a rule that
carries one while the route still says Accepted (tests/integration/test_gateway.py). It mirrors through its own CRD
instead: a TraefikService (traefik.io/v1alpha1) whose `mirroring` sends each request to a main service, answers
with that service's response only, and sends a copy of `percent` % of the requests to each mirror. The HTTPRoute
rule names the TraefikService as a backendRef (group traefik.io, kind TraefikService) in the baseline's place
(builders/httproute.py). Flagger's Traefik provider mirrors the same way.

Sources: Traefik docs, "Routing > Providers > Kubernetes CRD > TraefikService" (weighted, mirroring: name, port,
mirrors[].percent) and "Kubernetes Gateway API" (backendRefs of kind TraefikService).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubestill.api.names import shadow_service_name
from kubestill.api.traefik import TRAEFIK_API_VERSION, TRAEFIK_SERVICE_KIND
from kubestill.api.v1alpha1.canaryrollout import BackendRef

from .meta import child_metadata


def build_traefik_mirror(
    rollout: Mapping[str, Any], baseline: BackendRef, candidate: BackendRef, percent: int
) -> dict[str, Any]:
    """The TraefikService `<rollout>-shadow` in the rollout's namespace: every request to `baseline` (whose answer
    the client gets), a copy of `percent` % (1-100) of them to `candidate`. Owned by the rollout (`rollout`: its
    manifest, with metadata.uid) so the garbage collector deletes it with the rollout; labelled managed-by
    kubestill.

    >>> rollout = {"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
    ...            "metadata": {"name": "r", "namespace": "ml", "uid": "u"}}
    >>> build_traefik_mirror(rollout, BackendRef(name="t", port=80), BackendRef(name="s", port=8000), 50)["spec"]
    {'mirroring': {'name': 't', 'port': 80, 'mirrors': [{'name': 's', 'port': 8000, 'percent': 50}]}}
    """
    name = rollout["metadata"]["name"]
    return {
        "apiVersion": TRAEFIK_API_VERSION,
        "kind": TRAEFIK_SERVICE_KIND,
        # Labelled managed-by only: a label value cannot hold a rollout name over 63 characters; the owner
        # reference names the rollout.
        "metadata": child_metadata(shadow_service_name(name), rollout, {}),
        "spec": {
            "mirroring": {
                "name": baseline.name,
                "port": baseline.port,
                "mirrors": [{"name": candidate.name, "port": candidate.port, "percent": percent}],
            }
        },
    }


def mirror_current(live: Mapping[str, Any] | None, want: Mapping[str, Any]) -> bool:
    """Whether the stored TraefikService `live` (None: absent) already says what `want` (build_traefik_mirror)
    says: its spec and its owner. Fields the API server or others add (defaults, other labels) do not count."""
    if live is None:
        return False
    owners = {o.get("uid") for o in (live.get("metadata") or {}).get("ownerReferences") or []}
    return _contains(live.get("spec"), want["spec"]) and want["metadata"]["ownerReferences"][0]["uid"] in owners


def _contains(live: Any, want: Any) -> bool:
    """`live` holds every field of `want` with the same value (lists: same length, item by item)."""
    if isinstance(want, Mapping):
        return isinstance(live, Mapping) and all(_contains(live.get(k), v) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(live, list) and len(live) == len(want) and all(map(_contains, live, want))
    return bool(live == want)
