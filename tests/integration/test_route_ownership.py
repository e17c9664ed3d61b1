"""kubestill's writes to an HTTPRoute and a GitOps tool's server-side apply, on the real kube-apiserver.

Gateway API declares `spec.rules` atomic, so any write that changes a weight makes its writer the owner of the
whole `.spec.rules` (server-side apply or a plain patch alike). During a rollout a GitOps apply of the Git manifest
therefore conflicts with `kubestill-canary` unless forced, and a forced one is re-weighted by kubestill from the
route it left (its other changes kept). When the rollout ends kubestill gives ownership back by dropping its
managedFields entry (builders.meta.build_field_manager_release): the values stay, and the next GitOps apply goes
through without force. The alternatives are checked here too, to show why they were not taken.

The second field manager is kubectl itself (`--field-manager=argocd`), as Argo CD and Flux apply.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import kopf
import pytest
import yaml

from kubestill.api.v1alpha1.canaryrollout import BackendRef
from kubestill.builders.httproute import build_httproute_weights, observe_route
from kubestill.builders.meta import PLACEHOLDER_FIELDS, build_field_manager_release
from kubestill.clients import gateway
from kubestill.clients.kube import ApiError, KubeClient
from kubestill.dev.controlplane import Cluster

pytestmark = pytest.mark.integration

BASE = BackendRef(name="base", port=80)
CAND = BackendRef(name="cand", port=80)
T = TypeVar("T")


def manifest(namespace: str, path: str = "/a") -> dict[str, Any]:
    """The route as Git has it (shared/cases 00-common-route.yaml)."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": path}}],
                       "backendRefs": [{"name": "base", "port": 80, "weight": 100}]}],
        },
    }


def gitops_apply(cluster: Cluster, namespace: str, path: str = "/a", force: bool = False) -> tuple[int, str]:
    args = ["apply", "--server-side", "--field-manager=argocd", "-f", "-"]
    if force:
        args.append("--force-conflicts")
    out = cluster.kubectl(*args, input=yaml.safe_dump(manifest(namespace, path)), check=False)
    return out.returncode, out.stderr


def api(cluster: Cluster, fn: Callable[[KubeClient], Awaitable[T]]) -> T:
    """Run `fn` with the operator's own API client, logged in as the operator logs in."""

    async def main() -> T:
        info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
        assert info is not None
        client = KubeClient(info)
        try:
            return await fn(client)
        finally:
            await client.close()

    return asyncio.run(main())


def route(cluster: Cluster, namespace: str) -> dict[str, Any]:
    got = api(cluster, lambda c: gateway.get_route(c, namespace, "r"))
    assert got is not None
    return got


def owners(obj: dict[str, Any]) -> dict[str, list[str]]:
    """Manager -> the top-level spec fields it owns (f:rules, f:parentRefs ...)."""
    out: dict[str, list[str]] = {}
    for entry in obj["metadata"].get("managedFields") or []:
        spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        out.setdefault(entry["manager"], []).extend(sorted(k for k in spec if k.startswith("f:")))
    return out


def kubestill_sets(cluster: Cluster, namespace: str, weight: int, keep_baseline: bool = True) -> dict[str, Any]:
    """What the operator does for a step: read the route, rebuild its rules with the weights, forced apply."""
    live = route(cluster, namespace)
    body = build_httproute_weights(live, 0, BASE, CAND, weight, None, keep_baseline)
    return api(cluster, lambda c: gateway.apply_route(c, body))


def kubestill_gives_back(cluster: Cluster, namespace: str) -> dict[str, Any] | None:
    patch = build_field_manager_release(route(cluster, namespace), gateway.FIELD_MANAGER)
    if patch is None:
        return None
    return api(cluster, lambda c: gateway.give_back_fields(c, namespace, "r", patch))


def test_gitops_applies_before_during_and_after_a_rollout(cluster: Cluster, namespace: str) -> None:
    # Before: GitOps creates the route and owns all of it.
    assert gitops_apply(cluster, namespace) == (0, "")
    assert owners(route(cluster, namespace)) == {"argocd": ["f:parentRefs", "f:rules"]}

    # During: a weight write takes .spec.rules (atomic) from argocd.
    kubestill_sets(cluster, namespace, 10)
    live = route(cluster, namespace)
    assert owners(live) == {"argocd": ["f:parentRefs"], "kubestill-canary": ["f:rules"]}
    # The unchanged Git manifest conflicts: applying it would put all traffic back on the baseline.
    code, err = gitops_apply(cluster, namespace)
    assert code != 0 and 'conflict with "kubestill-canary"' in err and ".spec.rules" in err, err
    # So does a change to the path match alone (the rules list is one field).
    code, err = gitops_apply(cluster, namespace, path="/b")
    assert code != 0 and ".spec.rules" in err, err
    # Forced, GitOps wins: its path and its weights; kubestill then re-asserts only the weights.
    assert gitops_apply(cluster, namespace, path="/b", force=True)[0] == 0
    forced = route(cluster, namespace)
    assert forced["spec"]["rules"][0]["backendRefs"] == [{"group": "", "kind": "Service", "name": "base", "port": 80,
                                                          "weight": 100}]
    kubestill_sets(cluster, namespace, 10)
    rule = route(cluster, namespace)["spec"]["rules"][0]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/b"}}]
    assert observe_route(route(cluster, namespace), 0, BASE, CAND).candidate_weight == 10

    # Promoted, baseline released: the last write.
    kubestill_sets(cluster, namespace, 100)
    kubestill_sets(cluster, namespace, 100, keep_baseline=False)
    final = route(cluster, namespace)
    # The rollout ends: ownership given back, the data stays exactly as it was.
    kubestill_gives_back(cluster, namespace)
    released = route(cluster, namespace)
    assert released["spec"] == final["spec"]
    assert "kubestill-canary" not in owners(released)
    assert kubestill_gives_back(cluster, namespace) is None  # replayed: nothing left to give back

    # After: GitOps applies without force (here the promoted route, as Git now says).
    promoted = manifest(namespace, "/b")
    promoted["spec"]["rules"][0]["backendRefs"] = [{"name": "cand", "port": 80, "weight": 100}]
    out = cluster.kubectl("apply", "--server-side", "--field-manager=argocd", "-f", "-",
                          input=yaml.safe_dump(promoted), check=False)
    assert out.returncode == 0, out.stderr
    assert owners(route(cluster, namespace)) == {"argocd": ["f:parentRefs", "f:rules"]}
    # ... and later changes of Git too.
    assert gitops_apply(cluster, namespace, path="/c") == (0, "")


def test_give_back_when_kubestill_is_the_only_manager(cluster: Cluster, namespace: str) -> None:
    """When kubestill-canary is the route's only manager (everyone else's fields taken by its forced applies, or
    managedFields reset by someone), dropping its entry would leave none, and an object without managedFields
    makes the next apply conflict with "before-first-apply" on every field. Its entry is shrunk instead."""
    cluster.kubectl("create", "-f", "-", input=json.dumps(manifest(namespace)))
    kubestill_sets(cluster, namespace, 30)
    live = route(cluster, namespace)
    only_ours = [e for e in live["metadata"]["managedFields"] if e["manager"] == "kubestill-canary"]
    alone = {"metadata": {"managedFields": only_ours, "resourceVersion": live["metadata"]["resourceVersion"]}}
    api(cluster, lambda c: gateway.give_back_fields(c, namespace, "r", alone))
    assert list(owners(route(cluster, namespace))) == ["kubestill-canary"]

    kubestill_gives_back(cluster, namespace)
    released = route(cluster, namespace)
    assert released["spec"] == live["spec"]
    assert [e["fieldsV1"] for e in released["metadata"]["managedFields"]] == [PLACEHOLDER_FIELDS]
    assert kubestill_gives_back(cluster, namespace) is None
    assert gitops_apply(cluster, namespace, path="/b") == (0, "")  # nobody owns the rules: no conflict


def test_an_object_without_managed_fields_conflicts_on_everything(cluster: Cluster, namespace: str) -> None:
    """Why the entry is not simply stripped when alone (`managedFields: [{}]` clears them all)."""
    assert gitops_apply(cluster, namespace) == (0, "")
    live = route(cluster, namespace)
    strip = {"metadata": {"managedFields": [{}], "resourceVersion": live["metadata"]["resourceVersion"]}}
    api(cluster, lambda c: gateway.give_back_fields(c, namespace, "r", strip))
    assert not route(cluster, namespace)["metadata"].get("managedFields")
    code, err = gitops_apply(cluster, namespace, path="/b")
    assert code != 0 and 'conflicts with "before-first-apply"' in err and ".spec.rules" in err, err


def test_why_not_the_alternatives(cluster: Cluster, namespace: str) -> None:
    assert gitops_apply(cluster, namespace) == (0, "")
    kubestill_sets(cluster, namespace, 30)
    live = route(cluster, namespace)
    rv = live["metadata"]["resourceVersion"]

    # An empty list is ignored: the API server keeps the managedFields (clients unaware of them cannot erase them).
    empty = {"metadata": {"managedFields": [], "resourceVersion": rv}}
    api(cluster, lambda c: gateway.give_back_fields(c, namespace, "r", empty))
    assert "kubestill-canary" in owners(route(cluster, namespace))

    # A give-back based on a stale read fails instead of undoing someone else's ownership change.
    stale = build_field_manager_release(live, gateway.FIELD_MANAGER)
    assert stale is not None
    kubestill_sets(cluster, namespace, 40)
    with pytest.raises(ApiError) as err:
        api(cluster, lambda c: gateway.give_back_fields(c, namespace, "r", stale))
    assert err.value.status == 409

    # A plain (non-apply) patch of one weight also takes the whole atomic list: no write can own one weight.
    cluster.kubectl("patch", "httproute", "r", "-n", namespace, "--type=json", "--field-manager=weights-by-patch",
                    "-p", json.dumps([{"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 50}]))
    assert owners(route(cluster, namespace)).get("weights-by-patch") == ["f:rules"]
    code, err_text = gitops_apply(cluster, namespace)
    assert code != 0 and 'conflict with "weights-by-patch"' in err_text, err_text

    # An empty apply by the sole owner of .spec.rules deletes it: the CRD's default rule (match everything,
    # no backend) replaces the user's, which is why kubestill never gives ownership back that way.
    kubestill_sets(cluster, namespace, 20)
    assert owners(route(cluster, namespace)) == {"argocd": ["f:parentRefs"], "kubestill-canary": ["f:rules"]}
    empty_apply = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                   "metadata": {"name": "r", "namespace": namespace}}
    api(cluster, lambda c: gateway.apply_route(c, empty_apply))
    rules = route(cluster, namespace)["spec"].get("rules")
    assert rules == [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}], rules
