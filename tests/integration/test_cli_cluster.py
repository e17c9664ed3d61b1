"""`kubestill status` and `kubestill rollout` on a real kube-apiserver, through the operator's client
(kubestill.clients.kube): they list, annotate and read, and an API error is the API server's one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kubestill.cli import main
from kubestill.dev.controlplane import Cluster
from tests.invalid_objects import EXAMPLES

pytestmark = pytest.mark.integration


def _apply(cluster: Cluster, namespace: str, *names: str) -> None:
    for name in names:
        cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", str(Path(EXAMPLES) / name))


def test_status_lists_jobs_and_models(cluster: Cluster, namespace: str, capsys: pytest.CaptureFixture[str]) -> None:
    _apply(cluster, namespace, "distillationjob-classification.yaml", "studentmodel.yaml")
    assert main(["status", "-n", namespace]) == 0
    out = capsys.readouterr().out
    assert "bbc-topics" in out and "Pending" in out and "sentiment-student" in out
    assert main(["status", "-A"]) == 0
    assert f"{namespace}  bbc-topics" in capsys.readouterr().out


def test_rollout_controls_and_status(cluster: Cluster, namespace: str, capsys: pytest.CaptureFixture[str]) -> None:
    _apply(cluster, namespace, "canaryrollout.yaml")
    assert main(["rollout", "pause", "sentiment-rollout", "-n", namespace]) == 0
    got = json.loads(cluster.kubectl("get", "canaryrollout", "sentiment-rollout", "-n", namespace,
                                     "-o", "json").stdout)
    assert "kubestill.io/pause" in got["metadata"]["annotations"]
    assert main(["rollout", "status", "sentiment-rollout", "-n", namespace]) == 0
    assert f"Name:     {namespace}/sentiment-rollout" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["rollout", "promote", "missing"], 'kubestill rollout: canaryrollouts.kubestill.io "missing" not found '
                                            "(HTTP 404)"),
        (["rollout", "status", "missing"], "kubestill rollout: canaryrollout {ns}/missing not found (HTTP 404)"),
    ],
    ids=["promote", "status"],
)
def test_missing_rollout_is_one_line(cluster: Cluster, namespace: str, capsys: pytest.CaptureFixture[str],
                                     argv: list[str], line: str) -> None:
    assert main([*argv, "-n", namespace]) == 1
    err = capsys.readouterr().err
    assert err == line.format(ns=namespace) + "\n"


def test_exec_credential_plugin_kubeconfig(cluster: Cluster, namespace: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A kubeconfig whose user is an `exec` credential plugin (how EKS, GKE and AKS kubeconfigs authenticate):
    the CLI runs the plugin and uses the token it prints. kopf's plain kubeconfig reader sees no credentials
    there, so without the client library every call would be anonymous and refused."""
    _apply(cluster, namespace, "distillationjob-classification.yaml")
    plugin = tmp_path / "credential-plugin.py"
    credential = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": cluster.token}}
    plugin.write_text(f"import json\nprint(json.dumps({credential!r}))\n")
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "exec",
        "clusters": [{"name": "c", "cluster": {"server": cluster.server,
                                               "certificate-authority": str(cluster.ca_file)}}],
        "users": [{"name": "exec-user", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable, "args": [str(plugin)],
            "interactiveMode": "Never"}}}],
        "contexts": [{"name": "exec", "context": {"cluster": "c", "user": "exec-user"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert main(["status", "-n", namespace]) == 0, capsys.readouterr().err
    assert "bbc-topics" in capsys.readouterr().out
