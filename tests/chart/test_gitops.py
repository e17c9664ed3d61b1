"""The GitOps examples (deploy/gitops) fit the chart and the operator: their Helm values pass the chart's
schema, their paths and source references resolve, Argo CD ignores exactly the weights and the mirror a rollout
moves in the HTTPRoute (nothing else of it), and the example application is accepted by the real API server."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubestill.api.names import shadow_service_name, triton_name
from kubestill.api.v1alpha1.canaryrollout import BackendRef, ShadowMirror
from kubestill.builders.httproute import build_httproute_weights
from kubestill.clients.gateway import FIELD_MANAGER
from kubestill.clients.rollouts import TRITON_HTTP_PORT
from kubestill.dev.controlplane import Cluster

from .helm import REPO_ROOT, Helm, one

pytestmark = pytest.mark.integration

GITOPS = REPO_ROOT / "deploy" / "gitops"


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def _renders_with(helm: Helm, values: dict[str, Any], namespace: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(values, f)
        f.flush()
        objs = helm.manifests([Path(f.name)], namespace=namespace)
    image = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith(values["image"]["repository"] + ":")


def test_argocd_operator_application(helm: Helm) -> None:
    app = _load(GITOPS / "argocd" / "kubestill.yaml")
    assert app["kind"] == "Application" and app["apiVersion"] == "argoproj.io/v1alpha1"
    source, dest = app["spec"]["source"], app["spec"]["destination"]
    assert (REPO_ROOT / source["path"] / "Chart.yaml").exists()
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
    _renders_with(helm, source["helm"]["valuesObject"], dest["namespace"])


def _argocd_route_ignores() -> list[str]:
    app = _load(GITOPS / "argocd" / "sentiment-serving.yaml")
    routes = [d for d in app["spec"]["ignoreDifferences"] if d["kind"] == "HTTPRoute"]
    assert all(d["group"] == "gateway.networking.k8s.io" for d in routes)
    # Not by field manager: kubestill-canary owns all of .spec.rules during a rollout (the list is atomic), so
    # that would hide every diff in every rule.
    assert not any(d.get("managedFieldsManagers") for d in routes)
    return [e for d in routes for e in d.get("jqPathExpressions", [])]


def test_argocd_serving_application_ignores_only_the_canary_weights_and_mirror() -> None:
    app = _load(GITOPS / "argocd" / "sentiment-serving.yaml")
    assert (REPO_ROOT / app["spec"]["source"]["path"] / "kustomization.yaml").exists()
    assert "RespectIgnoreDifferences=true" in app["spec"]["syncPolicy"]["syncOptions"]
    rollout = _load(GITOPS / "apps" / "sentiment" / "canaryrollout.yaml")["spec"]
    candidate = triton_name(rollout["candidate"]["studentModel"])
    rule = rollout["route"].get("ruleIndex", 0)
    expressions = _argocd_route_ignores()
    assert any(f".spec.rules[{rule}].backendRefs[]" in e and rollout["baseline"]["name"] in e and candidate in e
               and e.endswith("| .weight") for e in expressions), expressions
    assert any("RequestMirror" in e and candidate in e for e in expressions), expressions


def test_argocd_ignores_hide_a_rollout_but_not_a_route_change(tmp_path: Path) -> None:
    """Argo CD deletes what each jq path expression selects from both sides before comparing; run them with jq
    on Git's route and on the route in the middle of a rollout (weights moved, shadow mirror added)."""
    jq = shutil.which("jq")
    if jq is None:
        pytest.skip("jq is not installed")
    git = _load(GITOPS / "apps" / "sentiment" / "httproute.yaml")
    rollout = _load(GITOPS / "apps" / "sentiment" / "canaryrollout.yaml")["spec"]
    baseline = BackendRef(**rollout["baseline"])
    candidate = BackendRef(name=triton_name(rollout["candidate"]["studentModel"]), port=TRITON_HTTP_PORT)
    live = copy.deepcopy(git)
    live["metadata"].update(namespace="sentiment", resourceVersion="1")
    during = build_httproute_weights(live, 0, baseline, candidate, 25, mirror_percent=100)
    changed = copy.deepcopy(git)
    changed["spec"]["rules"][0]["matches"][0]["path"]["value"] = "/v3/models/"
    program = "".join(f"del({e}) | " for e in _argocd_route_ignores()) + ".spec.rules"

    def normalized(obj: dict[str, Any]) -> Any:
        out = subprocess.run([jq, "-c", program], input=json.dumps(obj), text=True, capture_output=True, check=True)
        return json.loads(out.stdout)

    assert normalized({"spec": during["spec"]}) == normalized(git)
    assert normalized(changed) != normalized(git)
    # A rule with filters of its own: only kubestill's mirror is hidden, a change of theirs is not.
    header = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x", "value": "1"}]}}
    for route in (git, live):
        route["spec"]["rules"][0]["filters"] = [header]
    during = build_httproute_weights(live, 0, baseline, candidate, 0, mirror_percent=50)
    assert len(during["spec"]["rules"][0]["filters"]) == 2
    assert normalized({"spec": during["spec"]}) == normalized(git)
    changed = copy.deepcopy(git)
    changed["spec"]["rules"][0]["filters"][0]["requestHeaderModifier"]["set"][0]["value"] = "2"
    assert normalized(changed) != normalized(git)
    # A shadow step mirrored through Traefik: our TraefikService in the baseline's place is hidden too.
    traefik = build_httproute_weights(live, 0, baseline, candidate, 0, mirror_percent=50,
                                      mirror=ShadowMirror.TRAEFIK_SERVICE,
                                      traefik_service=shadow_service_name("sentiment-rollout"))
    assert any(r.get("kind") == "TraefikService" for r in traefik["spec"]["rules"][0]["backendRefs"])
    assert normalized({"spec": traefik["spec"]}) == normalized(git)


def test_flux_helmrelease_and_sources(helm: Helm) -> None:
    release = _load(GITOPS / "flux" / "helmrelease.yaml")
    source = _load(GITOPS / "flux" / "source.yaml")
    chart = release["spec"]["chart"]["spec"]
    assert (REPO_ROOT / chart["chart"] / "Chart.yaml").exists()
    ref = chart["sourceRef"]
    assert (ref["kind"], ref["name"], ref["namespace"]) == (
        source["kind"],
        source["metadata"]["name"],
        source["metadata"]["namespace"],
    )
    _renders_with(helm, release["spec"]["values"], release["metadata"]["namespace"])
    serving = _load(GITOPS / "flux" / "sentiment-serving.yaml")
    assert (REPO_ROOT / serving["spec"]["path"] / "kustomization.yaml").exists()
    assert serving["spec"]["sourceRef"]["name"] == source["metadata"]["name"]


def test_flux_leaves_the_route_to_the_canary() -> None:
    route = _load(GITOPS / "apps" / "sentiment" / "httproute.yaml")
    assert route["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/ssa"] == "IfNotPresent"


def test_example_application_is_accepted_by_the_api_server(cluster: Cluster, namespace: str) -> None:
    rendered = cluster.kubectl("kustomize", str(GITOPS / "apps" / "sentiment")).stdout
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(rendered) if doc)
    assert kinds == ["CanaryRollout", "HTTPRoute", "StudentModel"]
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=rendered)
    # The operator's weight write (same field manager as clients/gateway.py) then takes over the weights.
    patch = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "sentiment"},
        "spec": _load(GITOPS / "apps" / "sentiment" / "httproute.yaml")["spec"],
    }
    patch["spec"]["rules"][0]["backendRefs"][0]["weight"] = 95
    patch["spec"]["rules"][0]["backendRefs"][1]["weight"] = 5
    cluster.kubectl(
        "apply",
        "--server-side",
        f"--field-manager={FIELD_MANAGER}",
        "--force-conflicts",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(patch),
    )
    route = yaml.safe_load(
        cluster.kubectl("get", "httproute", "sentiment", "-n", namespace, "-o", "yaml", "--show-managed-fields").stdout
    )
    managers = {m["manager"] for m in route["metadata"]["managedFields"]}
    assert FIELD_MANAGER in managers
    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [95, 5]
