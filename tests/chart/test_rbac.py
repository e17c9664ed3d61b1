"""Least privilege, proven on the real API server's RBAC authorizer: the chart's ServiceAccount may do what the
operator needs and is denied the rest (Secrets anywhere, CRD changes, other namespaces in namespaced mode ...).

`kubectl auth can-i --as=<the ServiceAccount>` asks the authorizer; the second half makes real API calls with a
token of the ServiceAccount itself (TokenRequest), so no admin credential is involved."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubestill.dev.controlplane import Cluster
from kubestill.dev.gateway import CRDS_FILE, ensure_traefik, install_traefik_crds
from kubestill.dev.kubeapi import KubeAPI

from .helm import Helm
from .releases import Release, installed, service_account_kubeconfig, unique

pytestmark = pytest.mark.integration

# Namespace placeholders: OWN = the release's namespace, ANY = some other namespace, WATCHED = a namespace
# served in namespaced mode, ALL = --all-namespaces, CLUSTER = a cluster-scoped resource.
OWN, ANY, WATCHED, ALL, CLUSTER = "own", "any", "watched", "all", "cluster"

# (verb, resource, where, allowed) in cluster mode.
CLUSTER_MODE: list[tuple[str, str, str, bool]] = [
    # What the operator's requests need (operator/kubestill/clients, handlers) and kopf's watches.
    ("watch", "distillationjobs.kubestill.io", ALL, True),
    ("watch", "canaryrollouts.kubestill.io", ALL, True),
    ("get", "canaryrollouts.kubestill.io", ANY, True),
    ("patch", "canaryrollouts.kubestill.io", ANY, True),  # the route-restore finalizer
    ("patch", "distillationjobs.kubestill.io/status", ANY, True),
    ("patch", "studentmodels.kubestill.io/status", ANY, True),
    ("patch", "canaryrollouts.kubestill.io/status", ANY, True),
    ("create", "studentmodels.kubestill.io", ANY, True),
    ("patch", "studentmodels.kubestill.io", ANY, True),
    ("create", "jobs.batch", ANY, True),
    ("watch", "jobs.batch", ALL, True),
    ("list", "pods", ANY, True),
    ("create", "configmaps", ANY, True),
    ("patch", "configmaps", ANY, True),
    ("watch", "configmaps", ALL, True),
    ("create", "deployments.apps", ANY, True),
    ("watch", "deployments.apps", ALL, True),
    ("create", "services", ANY, True),
    ("patch", "services", ANY, True),
    ("get", "persistentvolumeclaims", ANY, True),
    ("get", "httproutes.gateway.networking.k8s.io", ANY, True),
    ("patch", "httproutes.gateway.networking.k8s.io", ANY, True),
    ("get", "traefikservices.traefik.io", ANY, True),  # a shadow step mirrored through Traefik
    ("create", "traefikservices.traefik.io", ANY, True),
    ("patch", "traefikservices.traefik.io", ANY, True),
    ("delete", "traefikservices.traefik.io", ANY, True),  # when the shadow step ends
    ("create", "events", ANY, True),
    ("create", "events.events.k8s.io", ANY, True),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", CLUSTER, True),
    ("patch", "clusterkopfpeerings.kopf.dev", CLUSTER, True),
    # Never Secrets, not even its own namespace's.
    ("get", "secrets", OWN, False),
    ("get", "secrets", ANY, False),
    ("list", "secrets", ALL, False),
    ("watch", "secrets", ALL, False),
    ("create", "secrets", ANY, False),
    # Nothing it does not need: no spec edits of the user's objects, no deletes, no Pods, no RBAC.
    ("patch", "distillationjobs.kubestill.io", ANY, False),
    ("update", "canaryrollouts.kubestill.io", ANY, False),
    ("delete", "distillationjobs.kubestill.io", ANY, False),
    ("delete", "studentmodels.kubestill.io", ANY, False),
    ("delete", "jobs.batch", ANY, False),
    ("delete", "deployments.apps", ANY, False),
    ("delete", "configmaps", ANY, False),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io", CLUSTER, False),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", CLUSTER, False),
    ("update", "customresourcedefinitions.apiextensions.k8s.io", CLUSTER, False),
    ("create", "httproutes.gateway.networking.k8s.io", ANY, False),
    ("delete", "httproutes.gateway.networking.k8s.io", ANY, False),
    ("patch", "gateways.gateway.networking.k8s.io", ANY, False),
    ("delete", "ingressroutes.traefik.io", ANY, False),  # of Traefik's CRDs, only TraefikServices
    ("create", "pods", ANY, False),
    ("create", "pods/exec", ANY, False),
    ("get", "pods/log", ANY, False),
    ("patch", "pods/status", ANY, False),
    ("patch", "persistentvolumeclaims", ANY, False),
    ("create", "serviceaccounts/token", ANY, False),
    ("create", "rolebindings.rbac.authorization.k8s.io", ANY, False),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", CLUSTER, False),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", CLUSTER, False),
    ("impersonate", "serviceaccounts", ANY, False),
    ("list", "nodes", CLUSTER, False),
    ("delete", "namespaces", CLUSTER, False),
    ("create", "clusterkopfpeerings.kopf.dev", CLUSTER, False),
    ("patch", "kopfpeerings.kopf.dev", ANY, False),
]

# (verb, resource, where, allowed) in namespaced mode (watching two namespaces).
NAMESPACED_MODE: list[tuple[str, str, str, bool]] = [
    ("watch", "distillationjobs.kubestill.io", WATCHED, True),
    ("create", "jobs.batch", WATCHED, True),
    ("patch", "httproutes.gateway.networking.k8s.io", WATCHED, True),
    ("patch", "kopfpeerings.kopf.dev", WATCHED, True),
    ("patch", "canaryrollouts.kubestill.io/status", WATCHED, True),
    ("patch", "traefikservices.traefik.io", WATCHED, True),
    ("delete", "traefikservices.traefik.io", ANY, False),
    ("get", "secrets", WATCHED, False),
    ("create", "jobs.batch", ANY, False),
    ("create", "jobs.batch", OWN, False),
    ("watch", "distillationjobs.kubestill.io", ANY, False),
    ("watch", "distillationjobs.kubestill.io", ALL, False),
    ("patch", "clusterkopfpeerings.kopf.dev", CLUSTER, False),
    ("list", "secrets", ALL, False),
    ("list", "pods", ALL, False),
    ("list", "configmaps", ALL, False),
    # Discovery (rbac.namespacedDiscovery): names of CRDs and namespaces, read-only.
    ("list", "customresourcedefinitions.apiextensions.k8s.io", CLUSTER, True),
    ("watch", "namespaces", CLUSTER, True),
    ("get", "namespaces", CLUSTER, False),
    ("delete", "namespaces", CLUSTER, False),
    ("update", "customresourcedefinitions.apiextensions.k8s.io", CLUSTER, False),
]


@pytest.fixture(scope="module", autouse=True)
def traefik_crds(cluster: Cluster) -> None:
    """Traefik's CRDs, served: kubectl resolves `traefikservices.traefik.io` through discovery (without them
    every question about it is answered "no")."""
    install_traefik_crds(KubeAPI(cluster.kubeconfig), ensure_traefik().parent / CRDS_FILE)


def _can_i(cluster: Cluster, release: Release, verb: str, resource: str, where: str) -> bool:
    scope = {
        OWN: ["-n", release.namespace],
        ANY: ["-n", "default"],
        WATCHED: ["-n", release.watched[0] if release.watched else "default"],
        ALL: ["--all-namespaces"],
        CLUSTER: [],
    }[where]
    # kubectl reads "pods/log" as plain "pods": subresources must go through --subresource.
    resource, _, sub = resource.partition("/")
    extra = [f"--subresource={sub}"] if sub else []
    result = cluster.kubectl("auth", "can-i", verb, resource, *extra, *scope, f"--as={release.user}", check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), result.stderr
    return answer == "yes"


@pytest.mark.parametrize(
    ("verb", "resource", "where", "allowed"), CLUSTER_MODE, ids=[f"{v}-{r}-{w}" for v, r, w, _ in CLUSTER_MODE]
)
def test_cluster_mode_permissions(
    cluster: Cluster, cluster_release: Release, verb: str, resource: str, where: str, allowed: bool
) -> None:
    assert _can_i(cluster, cluster_release, verb, resource, where) is allowed


@pytest.mark.parametrize(
    ("verb", "resource", "where", "allowed"), NAMESPACED_MODE, ids=[f"{v}-{r}-{w}" for v, r, w, _ in NAMESPACED_MODE]
)
def test_namespaced_mode_permissions(
    cluster: Cluster, namespaced_release: Release, verb: str, resource: str, where: str, allowed: bool
) -> None:
    assert _can_i(cluster, namespaced_release, verb, resource, where) is allowed


def _route(name: str, weight: int) -> str:
    return json.dumps(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": name},
            "spec": {
                "parentRefs": [{"name": "gateway"}],
                "rules": [
                    {
                        "backendRefs": [
                            {"name": "teacher", "port": 8000, "weight": 100 - weight},
                            {"name": "student-triton", "port": 8000, "weight": weight},
                        ]
                    }
                ],
            },
        }
    )


def test_real_calls_with_the_service_account_token(
    cluster: Cluster, cluster_release: Release, namespace: str, tmp_path: Path
) -> None:
    kubeconfig = service_account_kubeconfig(cluster, cluster_release, tmp_path / "operator.kubeconfig")

    def as_operator(*args: str, input: str | None = None) -> tuple[int, str]:
        result = cluster.kubectl(f"--kubeconfig={kubeconfig}", *args, input=input, check=False)
        return result.returncode, result.stdout + result.stderr

    cluster.kubectl("create", "secret", "generic", "teacher-api-key", "-n", namespace, "--from-literal=k=v")
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=_route("traffic", 0))
    # Allowed: what the operator does for a DistillationJob and a CanaryRollout.
    code, out = as_operator("create", "job", "dj-label", "-n", namespace, "--image=trainer", "--", "true")
    assert code == 0, out
    code, out = as_operator("create", "configmap", "dj-report", "-n", namespace, "--from-literal=a=b")
    assert code == 0, out
    code, out = as_operator(
        "apply",
        "--server-side",
        "--field-manager=kubestill-canary",
        "--force-conflicts",
        "-n",
        namespace,
        "-f",
        "-",
        input=_route("traffic", 25),
    )
    assert code == 0, out
    weights = cluster.kubectl(
        "get", "httproute", "traffic", "-n", namespace, "-o", "jsonpath={.spec.rules[0].backendRefs[*].weight}"
    ).stdout
    assert weights == "75 25"
    # Denied: Secrets (also the one its Jobs reference), CRDs, new routes.
    for args in (
        ("get", "secret", "teacher-api-key", "-n", namespace),
        ("get", "secrets", "-n", cluster_release.namespace),
        ("delete", "crd", "distillationjobs.kubestill.io"),
    ):
        code, out = as_operator(*args)
        assert code != 0 and "forbidden" in out.lower(), f"{args}: {out}"
    code, out = as_operator("create", "-n", namespace, "-f", "-", input=_route("other", 0))
    assert code != 0 and "forbidden" in out.lower(), out


def test_namespaced_token_is_confined_to_the_watched_namespaces(
    cluster: Cluster, namespaced_release: Release, namespace: str, tmp_path: Path
) -> None:
    kubeconfig = service_account_kubeconfig(cluster, namespaced_release, tmp_path / "operator.kubeconfig")
    watched = namespaced_release.watched[1]
    ok = cluster.kubectl(
        f"--kubeconfig={kubeconfig}", "create", "job", "j", "-n", watched, "--image=t", "--", "true", check=False
    )
    assert ok.returncode == 0, ok.stderr
    for ns in (namespace, namespaced_release.namespace):
        denied = cluster.kubectl(
            f"--kubeconfig={kubeconfig}", "create", "job", "j", "-n", ns, "--image=t", "--", "true", check=False
        )
        assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), ns
    listing = cluster.kubectl(f"--kubeconfig={kubeconfig}", "get", "dj", "-A", check=False)
    assert listing.returncode != 0 and "forbidden" in listing.stderr.lower()


@pytest.fixture(scope="module")
def trainer_release(cluster: Cluster, cluster_helm: Helm) -> Iterator[Release]:
    """Cluster mode with a trainer ServiceAccount in two namespaces of its own (CRDs managed elsewhere)."""
    listed = (unique("train-a"), unique("train-b"))
    sets = ["crds.enabled=false", f"trainer.namespaces={{{','.join(listed)}}}"]
    with installed(cluster_helm, cluster, sets=sets, watched=listed) as release:
        yield release


def _trainer(namespace: str) -> str:
    return f"system:serviceaccount:{namespace}:kubestill-trainer"


# (verb, resource, allowed) for the trainer ServiceAccount in its own (listed) namespace: the report channel.
TRAINER: list[tuple[str, str, bool]] = [
    ("get", "configmaps", True),
    ("create", "configmaps", True),
    ("patch", "configmaps", True),
    ("list", "configmaps", False),
    ("watch", "configmaps", False),
    ("update", "configmaps", False),
    ("delete", "configmaps", False),
    ("get", "secrets", False),
    ("list", "secrets", False),
    ("create", "pods", False),
    ("create", "jobs.batch", False),
    ("get", "distillationjobs.kubestill.io", False),
    ("patch", "distillationjobs.kubestill.io/status", False),
]


@pytest.mark.parametrize(("verb", "resource", "allowed"), TRAINER, ids=[f"{v}-{r}" for v, r, _ in TRAINER])
def test_trainer_permissions(
    cluster: Cluster, trainer_release: Release, verb: str, resource: str, allowed: bool
) -> None:
    ns = trainer_release.watched[0]
    resource, _, sub = resource.partition("/")
    extra = [f"--subresource={sub}"] if sub else []
    result = cluster.kubectl("auth", "can-i", verb, resource, *extra, "-n", ns, f"--as={_trainer(ns)}", check=False)
    assert result.stdout.strip() == ("yes" if allowed else "no"), result.stderr


def test_trainer_writes_the_report_only_in_its_namespace(
    cluster: Cluster, trainer_release: Release, namespace: str
) -> None:
    ns, other = trainer_release.watched

    def as_trainer(*args: str) -> tuple[int, str]:
        result = cluster.kubectl(*args, f"--as={_trainer(ns)}", check=False)
        return result.returncode, result.stdout + result.stderr

    cluster.kubectl("create", "secret", "generic", "teacher-api-key", "-n", ns, "--from-literal=k=v")
    # Allowed: what kubestill_trainer's report channel does (create on the first report, merge patches after).
    code, out = as_trainer("create", "configmap", "dj-report", "-n", ns, "--from-literal=progress.json={}")
    assert code == 0, out
    code, out = as_trainer(
        "patch", "configmap", "dj-report", "-n", ns, "--type=merge", "-p", '{"data": {"metrics.json": "{}"}}'
    )
    assert code == 0, out
    data = cluster.kubectl("get", "configmap", "dj-report", "-n", ns, "-o", "jsonpath={.data}").stdout
    assert json.loads(data) == {"progress.json": "{}", "metrics.json": "{}"}
    # Denied: Secrets (even its own namespace's), and ConfigMaps anywhere else (each account is bound at home).
    for args in (
        ("get", "secret", "teacher-api-key", "-n", ns),
        ("create", "configmap", "dj-report", "-n", other, "--from-literal=a=b"),
        ("create", "configmap", "dj-report", "-n", namespace, "--from-literal=a=b"),
        ("create", "configmap", "dj-report", "-n", trainer_release.namespace, "--from-literal=a=b"),
        ("delete", "configmap", "dj-report", "-n", ns),
    ):
        code, out = as_trainer(*args)
        assert code != 0 and "forbidden" in out.lower(), f"{args}: {out}"
    # The operator's Deployment hands the account to stage Jobs that name none.
    deployment = f"deployment/{trainer_release.service_account}"
    jsonpath = "jsonpath={.spec.template.spec.containers[0].env}"
    env = json.loads(cluster.kubectl("get", deployment, "-n", trainer_release.namespace, "-o", jsonpath).stdout)
    assert {"name": "KUBESTILL_TRAINER_SERVICE_ACCOUNT", "value": "kubestill-trainer"} in env
