"""Our CRDs on a real kube-apiserver: examples apply, invalid objects are rejected naming the field,
`kubectl explain` shows the descriptions, printer columns show, and status writes leave generation alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kubestill.dev.controlplane import Cluster
from tests.invalid_objects import ACCEPTED, CASES, EXAMPLES, HELD_ROLLOUT, TRANSITIONS, Case, Transition

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("path", sorted(Path(EXAMPLES).glob("*.yaml")), ids=lambda p: p.name)
def test_example_applies(cluster: Cluster, namespace: str, path: Path) -> None:
    out = cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", str(path))
    assert "serverside-applied" in out.stdout


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_invalid_object_rejected(cluster: Cluster, namespace: str, case: Case) -> None:
    obj = case.build()
    result = cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False)
    assert result.returncode != 0, f"{case.id} was accepted:\n{result.stdout}"
    assert case.field in result.stderr, f"{case.id}: {case.field!r} not named in:\n{result.stderr}"
    assert case.words in result.stderr, f"{case.id}: {case.words!r} not in:\n{result.stderr}"
    # Nothing half-applied: the object does not exist.
    kind = obj["kind"].lower()
    got = cluster.kubectl("get", kind, obj["metadata"]["name"], "-n", namespace, check=False)
    assert got.returncode != 0 and "NotFound" in got.stderr


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.id for c in ACCEPTED])
def test_boundary_value_accepted(cluster: Cluster, namespace: str, case: Case) -> None:
    obj = case.build("ok")
    result = cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False)
    assert result.returncode == 0, f"{case.id} was rejected:\n{result.stderr}"


def test_explain_shows_descriptions(cluster: Cluster) -> None:
    out = cluster.kubectl("explain", "distillationjob.spec.loss").stdout
    assert "Weighted registered losses" in out
    terms = cluster.kubectl("explain", "dj.spec.loss.terms.temperature").stdout
    assert "scaled by T^2" in terms
    steps = cluster.kubectl("explain", "canary.spec.steps").stdout
    assert "strictly increasing" in steps


def test_get_shows_printer_columns(cluster: Cluster, namespace: str) -> None:
    for name in ("distillationjob-classification.yaml", "studentmodel.yaml", "canaryrollout.yaml"):
        cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", str(Path(EXAMPLES) / name))
    out = cluster.kubectl("get", "dj,sm,canary", "-n", namespace).stdout
    for column in ("TASK", "PHASE", "PROGRESS", "QUALITY", "SPEEDUP", "FORMAT", "STEP", "WEIGHT", "AGE"):
        assert column in out, out
    category = cluster.kubectl("get", "kubestill", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(category) == [
        "canaryrollout.kubestill.io/sentiment-rollout",
        "distillationjob.kubestill.io/bbc-topics",
        "studentmodel.kubestill.io/sentiment-student",
    ]


def test_status_subresource_does_not_bump_generation(cluster: Cluster, namespace: str) -> None:
    path = Path(EXAMPLES) / "distillationjob-classification.yaml"
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", str(path))
    name = yaml.safe_load(path.read_text())["metadata"]["name"]

    def get() -> dict[str, object]:
        out = cluster.kubectl("get", "dj", name, "-n", namespace, "-o", "json").stdout
        doc: dict[str, object] = json.loads(out)
        return doc

    before = get()
    patch = json.dumps({"status": {"phase": "Training", "progress": {"percent": 42.0, "step": 10}}})
    cluster.kubectl("patch", "dj", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", patch)
    after = get()
    assert after["metadata"]["generation"] == before["metadata"]["generation"]  # type: ignore[index]
    assert after["status"]["progress"]["percent"] == 42.0  # type: ignore[index]
    # Status written through the main resource is ignored, the spec through the status subresource too.
    cluster.kubectl("patch", "dj", name, "-n", namespace, "--type=merge", "-p", '{"status":{"phase":"Failed"}}')
    assert get()["status"]["phase"] == "Training"  # type: ignore[index]
    out = cluster.kubectl("get", "dj", name, "-n", namespace, "-o", "wide").stdout
    assert "Training" in out and "42" in out


def test_defaults_are_applied_by_the_api_server(cluster: Cluster, namespace: str) -> None:
    path = Path(EXAMPLES) / "distillationjob-embedding.yaml"
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", str(path))
    spec = json.loads(cluster.kubectl("get", "dj", "minilm-embeddings", "-n", namespace, "-o", "json").stdout)["spec"]
    assert spec["evaluation"]["minQualityRatio"] == 0.97
    assert spec["training"]["warmupRatio"] == 0.06
    assert spec["data"]["splits"] == {"train": 0.8, "validation": 0.1, "test": 0.1}
    assert spec["run"]["backoffLimit"] == 1


@pytest.mark.parametrize("case", TRANSITIONS, ids=[t.id for t in TRANSITIONS])
def test_what_a_rollout_holds_in_its_route_is_immutable(cluster: Cluster, namespace: str, case: Transition) -> None:
    """A rollout moved to another route, rule, baseline or candidate mid-step would leave the old one carrying
    traffic nobody manages: the API server refuses the edit (a CEL transition rule); steps stay editable."""
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(HELD_ROLLOUT))
    refused = cluster.kubectl("patch", "canaryrollout", "held", "-n", namespace, "--type=merge",
                              "-p", json.dumps({"spec": case.spec_patch}), check=False)
    assert refused.returncode != 0
    assert case.field in refused.stderr and case.words in refused.stderr, refused.stderr
    cluster.kubectl("patch", "canaryrollout", "held", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"steps": [{"weight": 20, "pause": "2h"}]}}))
