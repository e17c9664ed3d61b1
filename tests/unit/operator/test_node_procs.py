"""The local node's container mapping: mount paths to host dirs, the trainer command, termination text."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kubestill.dev.node_deployments import ENDPOINTS_ANNOTATION
from kubestill.dev.node_procs import (
    Mounts,
    container_argv,
    local_service_hosts,
    materialize_volumes,
    rewrite_service_hosts,
    termination_text,
)

MOUNTS = Mounts({"/etc/kubestill": "/h/cfg", "/etc/kubestill/triton": "/h/triton", "/models": "/h/models"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/etc/kubestill/config.yaml", "/h/cfg/config.yaml"),
        ("cp /etc/kubestill/triton/config.pbtxt /models/m/config.pbtxt",
         "cp /h/triton/config.pbtxt /h/models/m/config.pbtxt"),
        ("--model-repository=/models", "--model-repository=/h/models"),
        ("/data/models/x", "/data/models/x"),  # only whole path components at a path start
        ("/etc/kubestillx/a", "/etc/kubestillx/a"),
    ],
)
def test_rewrite(text: str, expected: str) -> None:
    assert MOUNTS.rewrite(text) == expected


def test_trainer_runs_on_this_interpreter() -> None:
    argv = container_argv({"command": ["python", "-m", "kubestill_trainer", "train", "--config",
                                       "/etc/kubestill/config.yaml"]}, MOUNTS)
    assert argv == [sys.executable, "-m", "kubestill_trainer", "train", "--config", "/h/cfg/config.yaml"]


def test_config_maps_and_claims_materialize(tmp_path: Path) -> None:
    pod_spec = {
        "volumes": [{"name": "cfg", "configMap": {"name": "c"}},
                    {"name": "pvc-art", "persistentVolumeClaim": {"claimName": "art"}},
                    {"name": "tmp", "emptyDir": {}}],
        "containers": [{"name": "x", "volumeMounts": [{"name": "pvc-art", "mountPath": "/mnt/kubestill/pvc/art"}]}],
    }
    data = {"config.pbtxt": 'parameters { key: "artifact_dir" value: { string_value: "/mnt/kubestill/pvc/art/m" } }'}
    volumes = materialize_volumes(pod_spec, tmp_path / "pod", tmp_path / "pvc", lambda name: data)
    assert Path(volumes["pvc-art"]) == tmp_path / "pvc" / "art"
    text = (Path(volumes["cfg"]) / "config.pbtxt").read_text()
    assert f'"{tmp_path}/pvc/art/m"' in text  # the claim's host path, as the Pod would see it mounted
    assert Path(volumes["tmp"]).is_dir()


@pytest.mark.parametrize(
    ("term", "log", "policy", "code", "expected"),
    [
        ("bad field\n", "", "File", 2, "bad field"),
        ("", "a\nb\nTraceback: boom", "FallbackToLogsOnError", 1, "a\nb\nTraceback: boom"),
        ("", "a\nb", "File", 1, ""),
        ("", "all good", "FallbackToLogsOnError", 0, ""),
    ],
)
def test_termination_text(tmp_path: Path, term: str, log: str, policy: str, code: int, expected: str) -> None:
    (tmp_path / "t").write_text(term)
    (tmp_path / "l").write_text(log)
    assert termination_text(tmp_path / "t", tmp_path / "l", policy, code) == expected


META = {"name": "p", "namespace": "ml", "uid": "u1", "labels": {"b": "2", "a": "1"},
        "annotations": {"kubestill.io/config": '{"kind": "DistillationJob"}'}}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("metadata.name", "p"),
        ("metadata.namespace", "ml"),
        ("metadata.uid", "u1"),
        ("metadata.annotations['kubestill.io/config']", '{"kind": "DistillationJob"}'),
        ("metadata.labels['a']", "1"),
        ("metadata.labels['missing']", ""),
        ("metadata.labels", 'a="1"\nb="2"'),
    ],
)
def test_downward_values(path: str, value: str) -> None:
    from kubestill.dev.node_procs import downward_value

    assert downward_value(META, path) == value


def test_downward_api_volume(tmp_path: Path) -> None:
    pod_spec = {"volumes": [{"name": "config", "downwardAPI": {"items": [
        {"path": "config.yaml", "fieldRef": {"fieldPath": "metadata.annotations['kubestill.io/config']"}}]}}]}
    volumes = materialize_volumes(pod_spec, tmp_path / "pod", tmp_path / "pvc", lambda name: None, META)
    assert (Path(volumes["config"]) / "config.yaml").read_text() == '{"kind": "DistillationJob"}'
    with pytest.raises(ValueError, match="not supported"):
        materialize_volumes({"volumes": [{"name": "c", "downwardAPI": {"items": [
            {"path": "x", "fieldRef": {"fieldPath": "spec.nodeName"}}]}}]}, tmp_path / "p2", tmp_path,
            lambda n: None, META)


def test_a_mount_at_tmp_does_not_rewrite_host_paths_it_put_in() -> None:
    """The trainer's /tmp emptyDir (read-only root) beside a config mount whose host dir lives under /tmp."""
    mounts = Mounts({"/etc/kubestill": "/tmp/node/pods/p/volumes/config", "/tmp": "/tmp/node/pods/p/volumes/tmp"})
    assert mounts.rewrite("--config /etc/kubestill/config.yaml --out /tmp/x") == (
        "--config /tmp/node/pods/p/volumes/config/config.yaml --out /tmp/node/pods/p/volumes/tmp/x")


def test_a_tmp_volume_stays_the_hosts_tmp(tmp_path: Path) -> None:
    """On the process node a container's /tmp emptyDir is the host's /tmp: file:// paths there keep working."""
    from kubestill.dev.node_procs import container_mounts

    container = {"name": "trainer", "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                                                     {"name": "config", "mountPath": "/etc/kubestill"}]}
    mounts = container_mounts(container, {"tmp": str(tmp_path / "tmp"), "config": str(tmp_path / "c")}, tmp_path)
    assert mounts.rewrite("--workdir file:///tmp/run --config /etc/kubestill/x") == (
        f"--workdir file:///tmp/run --config {tmp_path}/c/x")


def test_in_cluster_service_addresses_reach_the_local_replica() -> None:
    """A Job's container is given the StudentModel's Service URL (the serving check); on the local node it must
    reach the tritonserver's loopback port, in both DNS forms, and nothing else is touched."""
    svc = {"metadata": {"name": "m-triton", "namespace": "ml", "annotations": {
        ENDPOINTS_ANNOTATION: '{"http": "http://127.0.0.1:41000", "grpc": "127.0.0.1:41001"}'}},
        "spec": {"ports": [{"name": "http", "port": 8000}, {"name": "grpc", "port": 8001},
                           {"name": "metrics", "port": 8002}]}}
    unpublished = {"metadata": {"name": "other", "namespace": "ml"}, "spec": {"ports": [{"port": 80}]}}
    hosts = local_service_hosts([svc, unpublished], ENDPOINTS_ANNOTATION)
    assert hosts == {"m-triton.ml.svc:8000": "127.0.0.1:41000", "m-triton.ml.svc.cluster.local:8000": "127.0.0.1:41000",
                     "m-triton.ml.svc:8001": "127.0.0.1:41001", "m-triton.ml.svc.cluster.local:8001": "127.0.0.1:41001"}
    env = {"A": "http://m-triton.ml.svc.cluster.local:8000/v2", "B": "m-triton.ml.svc:8001",
           "C": "http://m-triton.ml.svc:8002", "D": "http://m-triton.other.svc:8000"}
    assert rewrite_service_hosts(env, hosts) == {"A": "http://127.0.0.1:41000/v2", "B": "127.0.0.1:41001",
                                                 "C": "http://m-triton.ml.svc:8002", "D": "http://m-triton.other.svc:8000"}
