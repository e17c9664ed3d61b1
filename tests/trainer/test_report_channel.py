"""The report channel writes progress.json / metrics.json into a ConfigMap on the real API server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubestill_trainer.report import ReportChannel

pytestmark = pytest.mark.integration


def _data(cluster: Any, namespace: str, name: str) -> dict[str, str]:
    out = cluster.kubectl("get", "configmap", name, "-n", namespace, "-o", "json")
    return dict(json.loads(out.stdout).get("data") or {})


def test_creates_then_merges_keys(cluster: Any, namespace: str) -> None:
    channel = ReportChannel("job-report", namespace)
    assert channel.publish("progress.json", json.dumps({"percent": 10.0}))
    assert channel.publish("metrics.json", json.dumps({"qualityRatio": 0.98}))
    assert channel.publish("progress.json", json.dumps({"percent": 100.0}))
    data = _data(cluster, namespace, "job-report")
    assert json.loads(data["progress.json"]) == {"percent": 100.0}
    assert json.loads(data["metrics.json"]) == {"qualityRatio": 0.98}


def test_disabled_without_env_and_never_raises(cluster: Any, namespace: str) -> None:
    assert not ReportChannel.from_env({}).enabled
    assert not ReportChannel.from_env({"KUBESTILL_REPORT_CONFIGMAP": "x"}).publish("k", "v")
    # A namespace that does not exist: reported as a warning, the stage goes on.
    assert ReportChannel("job-report", "no-such-namespace-kubestill").publish("k", "v") is False


def test_created_with_the_operators_labels_and_owner(cluster: Any, namespace: str) -> None:
    """The operator hands the metadata over in KUBESTILL_REPORT_METADATA: its watch label, and the
    DistillationJob as owner so the garbage collector deletes the report with the job."""
    owner = json.loads(cluster.kubectl("create", "configmap", "owner", "-n", namespace, "-o", "json").stdout)
    metadata = {"labels": {"kubestill.io/report": "true", "kubestill.io/distillationjob": "bbc"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                                     "uid": owner["metadata"]["uid"], "controller": True}]}
    channel = ReportChannel.from_env({"KUBESTILL_REPORT_CONFIGMAP": "bbc-report", "KUBESTILL_NAMESPACE": namespace,
                                      "KUBESTILL_REPORT_METADATA": json.dumps(metadata)})
    assert channel.publish("progress.json", "{}")
    created = json.loads(cluster.kubectl("get", "configmap", "bbc-report", "-n", namespace, "-o", "json").stdout)
    assert created["metadata"]["labels"] == {**metadata["labels"], "app.kubernetes.io/managed-by": "kubestill"}
    assert created["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]


def test_a_refused_identity_stops_the_stage_saying_what_rbac_it_needs(cluster: Any, namespace: str,
                                                                      tmp_path: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A ServiceAccount without rights on ConfigMaps (the chart's trainer.namespaces left out): the first report
    raises, naming the ConfigMap and the rights, instead of a warning and a job that fails much later with
    "metrics.json never reached the report ConfigMap"."""
    from kubestill_trainer.report import ReportForbidden

    cluster.kubectl("create", "serviceaccount", "bare", "-n", namespace)
    token = cluster.kubectl("create", "token", "bare", "-n", namespace).stdout.strip()
    kubeconfig = tmp_path / "bare.kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": cluster.server,
                                               "certificate-authority": str(cluster.ca_file)}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    with pytest.raises(ReportForbidden, match=rf"{namespace}/job-report \(403 Forbidden\).*get, create and patch "
                                              r"on configmaps.*trainer\.namespaces"):
        ReportChannel("job-report", namespace).publish("progress.json", "{}")
