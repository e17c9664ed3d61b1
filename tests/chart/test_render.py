"""The chart renders every ci/ scenario into what it promises: lint-clean, hardened Pods, the right RBAC shape
per watch mode, peering objects, CRDs identical to the models, and values rejected with the key named."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubestill.api.crd import all_crds
from kubestill.cli import build_parser

from .helm import CHART, SCENARIOS, Helm, find, one

pytestmark = pytest.mark.integration

IDS = [p.stem.removesuffix("-values") for p in SCENARIOS]
# The operator container's command: `kubestill operator` with a peering priority unique to each replica.
RUN = 'exec kubestill operator --priority="$(date +%s%N)" "$@"'


def _container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(objs, "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    container: dict[str, Any] = containers[0]
    return container


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"] if "valueFrom" not in e}


@pytest.mark.parametrize("values", SCENARIOS, ids=IDS)
def test_scenario_lints_and_renders(helm: Helm, values: Path) -> None:
    lint = helm.run("lint", "--strict", str(CHART), "-f", str(values), f"--kube-version={'1.36.3'}")
    assert "0 chart(s) failed" in lint.stdout
    objs = helm.manifests([values])
    assert find(objs, "Deployment"), "no operator Deployment rendered"


@pytest.mark.parametrize("values", SCENARIOS, ids=IDS)
def test_scenario_is_hardened(helm: Helm, values: Path) -> None:
    objs = helm.manifests([values])
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    container = _container(objs)
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc.get("privileged", False) is False
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    # Probes hit kopf's liveness endpoint on the port the command line opens, and kopf accepts every flag.
    health = next(p for p in container["ports"] if p["name"] == "health")["containerPort"]
    assert container["command"] == ["/bin/sh", "-c", RUN, "kubestill"]
    assert f"--liveness=http://0.0.0.0:{health}/healthz" in container["args"]
    parsed = build_parser().parse_args(["operator", *container["args"]])  # argparse exits on unknown flags
    assert parsed.liveness == f"http://0.0.0.0:{health}/healthz"
    assert parsed.priority is None  # the wrapper's --priority comes first and is the only one
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    # Least privilege holds in every scenario: no rule anywhere names Secrets or uses wildcards.
    for role in find(objs, "ClusterRole") + find(objs, "Role"):
        for rule in role["rules"]:
            assert "secrets" not in rule["resources"], role["metadata"]["name"]
            assert "*" not in rule["resources"] + rule["verbs"] + rule["apiGroups"], rule
    for obj in objs:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kubestill", obj["kind"]


# Kinds rendered per scenario: the shape of each mode at a glance.
SHAPES: list[tuple[str, dict[str, int]]] = [
    (
        "default",
        {
            "CustomResourceDefinition": 3,
            "ClusterRole": 2,  # the operator's, and the trainer's (bound nowhere: trainer.namespaces is empty)
            "ClusterRoleBinding": 1,
            "Role": 0,
            "RoleBinding": 0,
            "ClusterKopfPeering": 1,
            "KopfPeering": 0,
            "Service": 1,
            "PodDisruptionBudget": 1,
            "ServiceMonitor": 0,
            "PrometheusRule": 0,
            "NetworkPolicy": 0,
            "ServiceAccount": 1,
        },
    ),
    (
        "namespaced",
        {
            "CustomResourceDefinition": 3,
            "ClusterRole": 2,  # discovery only (CRDs and namespace names), and the trainer's
            "ClusterRoleBinding": 1,
            "Role": 2,
            "RoleBinding": 2,
            "ClusterKopfPeering": 0,
            "KopfPeering": 2,
        },
    ),
    ("no-crds", {"CustomResourceDefinition": 0, "ClusterRole": 2, "Deployment": 1}),
    ("standalone", {"ClusterKopfPeering": 0, "KopfPeering": 0, "PodDisruptionBudget": 0, "Service": 0}),
    ("monitoring", {"ServiceMonitor": 1, "PrometheusRule": 1}),
    ("network-policy", {"NetworkPolicy": 1}),
    ("private-registry", {"ServiceAccount": 0, "ClusterRoleBinding": 1}),
    ("ha", {"PodDisruptionBudget": 1, "ClusterKopfPeering": 1}),
]


@pytest.mark.parametrize(("scenario", "kinds"), SHAPES, ids=[s for s, _ in SHAPES])
def test_scenario_shape(helm: Helm, scenario: str, kinds: dict[str, int]) -> None:
    objs = helm.manifests([CHART / "ci" / f"{scenario}-values.yaml"])
    counts = Counter(o["kind"] for o in objs)
    assert {k: counts[k] for k in kinds} == kinds


# Operator arguments and settings env (operator/kubestill/settings.py) per scenario.
COMMANDS: list[tuple[str, list[str], dict[str, str]]] = [
    (
        "default",
        ["--all-namespaces", "--peering=ks-kubestill", "--log-format=json"],
        {
            "KUBESTILL_NAMESPACES": "",
            "KUBESTILL_PEERING": "ks-kubestill",
            "KUBESTILL_METRICS_PORT": "9090",
            "KUBESTILL_TRAINER_IMAGE": "kubestill-trainer:0.1.0",
        },
    ),
    (
        "namespaced",
        ["--namespace=team-a", "--namespace=team-b", "--peering=ks-kubestill"],
        {"KUBESTILL_NAMESPACES": "team-a,team-b", "KUBESTILL_PEERING": "ks-kubestill"},
    ),
    ("standalone", ["--all-namespaces", "--standalone"], {"KUBESTILL_PEERING": "", "KUBESTILL_METRICS_PORT": "0"}),
    ("ha", ["--peering=kubestill-prod"], {"KUBESTILL_PEERING": "kubestill-prod"}),
    (
        "private-registry",
        ["--verbose", "--log-format=plain"],
        {
            "KUBESTILL_IMAGE_PULL_SECRETS": "registry-credentials",
            "KUBESTILL_IMAGE_PULL_POLICY": "Always",
            "KUBESTILL_EXTRA_LABELS": "cost-center=ml-platform,team=search",
            "KUBESTILL_TRITON_IMAGE": "registry.example.com/ml/kubestill-serving:0.1.0",
        },
    ),
]


@pytest.mark.parametrize(("scenario", "args", "env"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_scenario_command_and_env(helm: Helm, scenario: str, args: list[str], env: dict[str, str]) -> None:
    container = _container(helm.manifests([CHART / "ci" / f"{scenario}-values.yaml"]))
    for arg in args:
        assert arg in container["args"]
    got = _env(container)
    assert {k: got.get(k) for k in env} == env


def test_namespaced_mode_binds_the_release_service_account_in_each_namespace(helm: Helm) -> None:
    objs = helm.manifests([CHART / "ci" / "namespaced-values.yaml"], namespace="ops")
    assert sorted(r["metadata"]["namespace"] for r in find(objs, "Role")) == ["team-a", "team-b"]
    for binding in find(objs, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ks-kubestill", "namespace": "ops"}]
    assert sorted(p["metadata"]["namespace"] for p in find(objs, "KopfPeering")) == ["team-a", "team-b"]
    discovery = one(objs, "ClusterRole", "ks-kubestill-discovery")
    assert {r for rule in discovery["rules"] for r in rule["resources"]} == {"customresourcedefinitions", "namespaces"}
    assert {v for rule in discovery["rules"] for v in rule["verbs"]} <= {"get", "list", "watch"}
    strict = helm.manifests(
        [CHART / "ci" / "namespaced-values.yaml"], sets=["rbac.namespacedDiscovery=false"], namespace="ops"
    )
    # No cluster-wide rights at all: the trainer's ClusterRole is only ever bound per namespace.
    assert [r["metadata"]["name"] for r in find(strict, "ClusterRole")] == ["ks-kubestill-trainer"]
    assert find(strict, "ClusterRoleBinding") == []
    # Default namespaced mode: the release namespace alone.
    alone = helm.manifests(sets=["watch.mode=namespaced"], namespace="ops")
    assert [r["metadata"]["namespace"] for r in find(alone, "Role")] == ["ops"]


def test_trainer_service_account_and_role_binding_in_each_listed_namespace(helm: Helm) -> None:
    objs = helm.manifests(sets=["trainer.namespaces={team-a,team-b}"], namespace="ops")
    # The report channel and nothing more: stage Pods create and patch their <job>-report ConfigMap.
    role = one(objs, "ClusterRole", "ks-kubestill-trainer")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch"]}]
    accounts = find(objs, "ServiceAccount", "kubestill-trainer")
    assert sorted(a["metadata"]["namespace"] for a in accounts) == ["team-a", "team-b"]
    bindings = find(objs, "RoleBinding", "ks-kubestill-trainer")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        ns = binding["metadata"]["namespace"]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "ks-kubestill-trainer",
        }
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kubestill-trainer", "namespace": ns}]
    # The operator's own account and bindings are untouched.
    assert [a["metadata"]["namespace"] for a in find(objs, "ServiceAccount", "ks-kubestill")] == ["ops"]
    assert one(objs, "ClusterRoleBinding")["roleRef"]["name"] == "ks-kubestill"
    assert _env(_container(objs))["KUBESTILL_TRAINER_SERVICE_ACCOUNT"] == "kubestill-trainer"
    renamed = helm.manifests(sets=["trainer.namespaces={team-a}", "trainer.serviceAccountName=distill"])
    assert one(renamed, "RoleBinding")["subjects"][0]["name"] == "distill"
    assert one(renamed, "ServiceAccount", "distill")["metadata"]["namespace"] == "team-a"
    assert _env(_container(renamed))["KUBESTILL_TRAINER_SERVICE_ACCOUNT"] == "distill"


def test_trainer_defaults_render_only_the_cluster_role(helm: Helm) -> None:
    objs = helm.manifests()
    assert one(objs, "ClusterRole", "ks-kubestill-trainer")["rules"][0]["resources"] == ["configmaps"]
    assert find(objs, "ServiceAccount", "kubestill-trainer") == []
    assert find(objs, "RoleBinding") == []
    assert "KUBESTILL_TRAINER_SERVICE_ACCOUNT" not in _env(_container(objs))
    # Without rbac.create the listed namespaces still get the account the operator names in stage Jobs.
    manual = helm.manifests(sets=["rbac.create=false", "trainer.namespaces={team-a}"])
    assert find(manual, "ClusterRole") == [] and find(manual, "RoleBinding") == []
    assert one(manual, "ServiceAccount", "kubestill-trainer")["metadata"]["namespace"] == "team-a"


def test_private_registry_pins_the_digest(helm: Helm) -> None:
    container = _container(helm.manifests([CHART / "ci" / "private-registry-values.yaml"]))
    assert container["image"] == ("registry.example.com/ml/kubestill-operator:0.1.0@sha256:" + "0123456789abcdef" * 4)


@pytest.mark.parametrize("keep", [True, False])
def test_crd_templates_render_exactly_the_models(helm: Helm, keep: bool) -> None:
    objs = helm.manifests(sets=[f"crds.keep={str(keep).lower()}"])
    rendered = {o["metadata"]["name"]: o for o in find(objs, "CustomResourceDefinition")}
    expected = {crd["metadata"]["name"]: crd for crd in all_crds().values()}
    assert sorted(rendered) == sorted(expected)
    for name, crd in expected.items():
        assert rendered[name]["spec"] == crd["spec"], f"{name}: chart template differs from the models"
        annotations = rendered[name]["metadata"].get("annotations") or {}
        assert (annotations.get("helm.sh/resource-policy") == "keep") is keep


@pytest.mark.parametrize(("sets", "want"), [
    ([], {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"}),
    (["metrics.port=9100"], {"prometheus.io/scrape": "true", "prometheus.io/port": "9100"}),
    (["metrics.scrapeAnnotations=false"], {}),
    (["metrics.enabled=false"], {}),
])
def test_operator_pods_carry_the_scrape_annotations(helm: Helm, sets: list[str], want: dict[str, str]) -> None:
    """What Prometheus' Kubernetes pod discovery keeps targets by (tests/realnode discovers the Pods so)."""
    annotations = one(helm.manifests(sets=sets), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert {k: v for k, v in annotations.items() if k.startswith("prometheus.io/")} == want


def test_prometheus_placeholders_survive_templating(helm: Helm) -> None:
    # The CanaryRollout CRD documents {{candidate}} placeholders; Helm must print them, not evaluate them.
    crd = one(helm.manifests(), "CustomResourceDefinition", "canaryrollouts.kubestill.io")
    assert "{{candidate}}" in yaml.safe_dump(crd, width=10_000)


# (--set arguments, the key the error must name, words of the message)
INVALID: list[tuple[list[str], str, str]] = [
    (["watch.mode=everywhere"], "/watch/mode", "must be one of"),
    (["replicas=2"], "'replicas' not allowed", "additional properties"),
    (["operator.trainerImge=x"], "'trainerImge' not allowed", "additional properties"),
    (["crds.keep=maybe"], "/crds/keep", "want boolean"),
    (["image.pullPolicy=Sometimes"], "/image/pullPolicy", "must be one of"),
    (["image.digest=abc"], "/image/digest", "does not match pattern"),
    (["metrics.port=0"], "/metrics/port", "minimum"),
    (["probes.port=70000"], "/probes/port", "maximum"),
    (["replicaCount=-1"], "/replicaCount", "minimum"),
    (["watch.mode=namespaced", "watch.namespaces={Team_A}"], "/watch/namespaces/0", "does not match pattern"),
    (["trainer.namespaces={Team_A}"], "/trainer/namespaces/0", "does not match pattern"),
    (["trainer.serviceAccountName=Trainer"], "/trainer/serviceAccountName", "does not match pattern"),
    (["resources.requests.cpu=lots"], "/resources/requests/cpu", "does not match pattern"),
    (["operator.logLevel=warning"], "/operator/logLevel", "must be one of"),
    (["metrics.serviceMonitor.interval=often"], "/metrics/serviceMonitor/interval", "does not match pattern"),
    (["securityContext.runAsRoot=true"], "'runAsRoot' not allowed", "additional properties"),
    (["tolerations[0].effect=Sometimes"], "/tolerations/0/effect", "must be one of"),
    (["operator.extraEnv[0].value=x"], "/operator/extraEnv/0", "missing property 'name'"),
    # Rules across keys, from the templates.
    (["peering.enabled=false"], "replicaCount=2 needs peering.enabled=true", "every replica"),
    (["watch.namespaces={a}"], "watch.namespaces is only used with watch.mode=namespaced", "watch.mode"),
    (["serviceAccount.create=false"], "serviceAccount.name is required", "serviceAccount.create"),
]


@pytest.mark.parametrize(("sets", "key", "words"), INVALID, ids=[c[1] for c in INVALID])
def test_invalid_values_rejected_naming_the_key(helm: Helm, sets: list[str], key: str, words: str) -> None:
    result = helm.template(sets=sets, check=False)
    assert result.returncode != 0, f"{sets} was accepted"
    assert key in result.stderr and words in result.stderr, result.stderr


def _schema_nodes(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        found += _schema_nodes(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        found += _schema_nodes(node["items"], f"{path}[]")
    return found


def test_schema_closes_every_object_and_describes_every_key() -> None:
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    for path, node in _schema_nodes(schema, "values"):
        if "properties" in node:
            assert node.get("additionalProperties") is False, f"{path}: additionalProperties must be false"
        if path != "values":
            assert node.get("description") or path.endswith("[]"), f"{path}: no description"


def _value_keys(values: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in values.items():
        keys.append(prefix + key)
        if isinstance(value, dict) and value:
            keys += _value_keys(value, f"{prefix}{key}.")
    return keys


# Values holding a whole Kubernetes object: documented at their key, not field by field.
OPAQUE = {"podSecurityContext", "securityContext", "resources"}


def test_every_value_is_in_the_schema() -> None:
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    for dotted in _value_keys(yaml.safe_load((CHART / "values.yaml").read_text())):
        if any(part in OPAQUE for part in dotted.split(".")[:-1]):
            continue
        node = schema
        for part in dotted.split("."):
            assert part in node.get("properties", {}), f"{dotted} is not in values.schema.json"
            node = node["properties"][part]


def test_every_value_has_a_comment() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    undocumented = []
    for i, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w-]*):(.*)$", line)
        if not match:
            continue  # comments, blank lines, list items
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [key for _, key in stack] + [match.group(2)]
        stack.append((indent, match.group(2)))
        if any(part in OPAQUE for part in path[:-1]):
            continue
        following = next((x for x in lines[i + 1 :] if x.strip() and not x.lstrip().startswith("#")), "")
        nested_keys = re.match(rf"^ {{{indent + 1},}}[A-Za-z]", following) is not None
        if match.group(3).strip() == "" and nested_keys and path[-1] not in OPAQUE:
            continue  # a section: its keys carry the documentation
        if not lines[i - 1].strip().startswith("#"):
            undocumented.append(".".join(path))
    assert undocumented == []
