"""What serves a StudentModel: config ConfigMap, Deployment and Service (contract ports and names)."""

from __future__ import annotations

from typing import Any

import pytest

from kubestill.api.v1alpha1.studentmodel import StudentModelSpec
from kubestill.builders.triton import (
    build_triton_config_map,
    build_triton_deployment,
    build_triton_service,
    config_hash,
    endpoint,
)


def _sm(**spec: Any) -> dict[str, Any]:
    base = {"artifactUri": "pvc://runs/bbc/export", "task": "classification", "labels": ["a", "b"]}
    return {"apiVersion": "kubestill.io/v1alpha1", "kind": "StudentModel",
            "metadata": {"name": "bbc-student", "namespace": "ml", "uid": "u2"}, "spec": {**base, **spec}}


def test_config_map_renders_the_shared_config() -> None:
    sm = _sm()
    cm = build_triton_config_map(sm, StudentModelSpec.model_validate(sm["spec"]))
    text = cm["data"]["config.pbtxt"]
    assert cm["metadata"]["name"] == "bbc-student-triton"
    assert 'name: "bbc-student"' in text and 'backend: "python"' in text
    assert 'string_value: "/mnt/kubestill/pvc/runs/bbc/export/model"' in text
    assert 'key: "runtime" value: { string_value: "auto" }' in text


def test_config_map_forces_torch() -> None:
    sm = _sm(serving={"runtime": "torch"})
    text = build_triton_config_map(sm, StudentModelSpec.model_validate(sm["spec"]))["data"]["config.pbtxt"]
    assert 'key: "runtime" value: { string_value: "torch" }' in text


@pytest.mark.parametrize(("serving", "count", "threads", "spinning"), [
    ({}, 1, "0", "0"),  # one instance, ONNX Runtime's own thread count; spinning off (measured: bench/serving.py)
    ({"resources": {"cpu": "500m"}}, 1, "1", "0"),  # under one core: one instance, one thread
    ({"resources": {"cpu": "2"}}, 2, "1", "0"),  # an instance per core
    ({"resources": {"cpu": "16", "memory": "3Gi"}}, 3, "5", "0"),  # an instance per GiB at most
    ({"resources": {"cpu": "64"}}, 8, "8", "0"),  # at most 8 by default
    ({"resources": {"cpu": "4", "gpus": 1}}, 1, "4", "0"),  # KIND_GPU: one instance per GPU
    ({"resources": {"cpu": "7"}, "instanceGroup": {"count": 3}}, 3, "2", "0"),  # 7 cores shared by 3 instances
    ({"resources": {"cpu": "1"}, "instanceGroup": {"count": 4}}, 4, "1", "0"),
    ({"resources": {"cpu": "8"}, "onnxRuntime": {"intraOpThreads": 3, "allowSpinning": True}}, 2, "3", "1"),
    ({"resources": {"cpu": "4"}, "runtime": "torch"}, 1, "4", "0"),  # torch: one instance, every core its threads
    ({"resources": {"cpu": "8", "gpus": 2}, "instanceGroup": {"count": 2}}, 2, "2", "0"),  # 2 on each GPU
], ids=["defaults", "half-a-core", "two-cores", "memory-bound", "capped", "gpu", "shared",
        "more-instances-than-cores", "explicit-threads", "torch", "per-gpu"])
def test_config_map_renders_instances_and_threads(serving: dict[str, Any], count: int, threads: str,
                                                  spinning: str) -> None:
    sm = _sm(serving=serving)
    text = build_triton_config_map(sm, StudentModelSpec.model_validate(sm["spec"]))["data"]["config.pbtxt"]
    assert f" count: {count} }} ]" in text
    assert f'key: "intra_op_threads" value: {{ string_value: "{threads}" }}' in text
    assert f'key: "allow_spinning" value: {{ string_value: "{spinning}" }}' in text
    # The same as the container's environment, for a model.py exported before those parameters.
    dep = build_triton_deployment(sm, StudentModelSpec.model_validate(sm["spec"]), default_image="t",
                                  config_digest="abc")
    env = {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env["KUBESTILL_INTRA_OP_THREADS"], env["KUBESTILL_ALLOW_SPINNING"]) == (threads, spinning)
    # The tokenizer's rayon pool: off with one thread an instance, as wide as the instance's threads with more.
    assert env.get("TOKENIZERS_PARALLELISM") == ("false" if threads == "1" else None)
    assert env.get("RAYON_NUM_THREADS") == (threads if int(threads) > 1 else None)


def test_deployment_and_service() -> None:
    sm = _sm(serving={"replicas": 2, "resources": {"gpus": 1}, "instanceGroup": {"kind": "KIND_GPU"},
                      "image": "triton:custom"})
    spec = StudentModelSpec.model_validate(sm["spec"])
    dep = build_triton_deployment(sm, spec, default_image="triton:default", config_digest="abc")
    assert dep["metadata"]["name"] == "bbc-student-triton" and dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["image"] == "triton:custom"
    assert server["command"] == ["tritonserver", "--model-repository=/models", "--http-port=8000",
                                 "--grpc-port=8001", "--metrics-port=8002"]
    assert server["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    # model.py's refusal reaches the Pod status (and so the StudentModel): the termination log, else the log tail.
    assert {"name": "KUBESTILL_TERMINATION_LOG", "value": "/dev/termination-log"} in server["env"]
    assert server["terminationMessagePath"] == "/dev/termination-log"
    assert server["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert server["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    (init,) = pod["initContainers"]
    assert "cp /mnt/kubestill/pvc/runs/bbc/export/triton/model.py /models/bbc-student/1/model.py" in init["command"][2]
    assert {"name": "pvc-runs", "persistentVolumeClaim": {"claimName": "runs"}} in pod["volumes"]
    assert dep["spec"]["template"]["metadata"]["annotations"]["kubestill.io/config-hash"] == "abc"
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    svc = build_triton_service(sm)
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("http", 8000), ("grpc", 8001),
                                                                       ("metrics", 8002)]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(("uri", "expected"), [("file:///srv/m/export", "/srv/m/export/model"),
                                                ("pvc://c/x", "/mnt/kubestill/pvc/c/x/model")])
def test_artifact_dir_in_config(uri: str, expected: str) -> None:
    sm = _sm(artifactUri=uri)
    cm = build_triton_config_map(sm, StudentModelSpec.model_validate(sm["spec"]))
    assert expected in cm["data"]["config.pbtxt"]
    assert len(config_hash(cm)) == 16


def test_endpoint() -> None:
    assert endpoint(_sm()) == {"http": "http://bbc-student-triton.ml.svc:8000",
                               "grpc": "bbc-student-triton.ml.svc:8001",
                               "metrics": "http://bbc-student-triton.ml.svc:8002/metrics", "modelName": "bbc-student"}


@pytest.mark.parametrize(("serving", "kind", "image", "gpu_limit"), [
    # CPU by default; the GPU image is not used for a Pod without GPUs.
    ({}, "KIND_CPU", "triton:default", None),
    # Asks for GPUs, no instance kind given: GPU instances on the GPU serving image (onnxruntime-gpu).
    ({"resources": {"gpus": 1}}, "KIND_GPU", "triton:gpu", "1"),
    ({"resources": {"gpus": 2}, "instanceGroup": {"count": 2}}, "KIND_GPU", "triton:gpu", "2"),
    # An explicit kind wins: GPUs in the Pod, model instances on the CPU.
    ({"resources": {"gpus": 1}, "instanceGroup": {"kind": "KIND_CPU"}}, "KIND_CPU", "triton:gpu", "1"),
    # spec.serving.image wins over both operator images.
    ({"resources": {"gpus": 1}, "image": "triton:mine"}, "KIND_GPU", "triton:mine", "1"),
])
def test_gpu_serving_rendered(serving: dict[str, Any], kind: str, image: str, gpu_limit: str | None) -> None:
    sm = _sm(serving=serving)
    spec = StudentModelSpec.model_validate(sm["spec"])
    text = build_triton_config_map(sm, spec)["data"]["config.pbtxt"]
    count = serving.get("instanceGroup", {}).get("count", 1)
    assert f"instance_group [ {{ kind: {kind} count: {count} }} ]" in text
    dep = build_triton_deployment(sm, spec, default_image="triton:default", gpu_image="triton:gpu",
                                  config_digest="abc")
    (server,) = dep["spec"]["template"]["spec"]["containers"]
    assert server["image"] == image
    assert (server.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu") == gpu_limit


def test_gpu_serving_without_a_gpu_image_uses_the_default() -> None:
    sm = _sm(serving={"resources": {"gpus": 1}})
    dep = build_triton_deployment(sm, StudentModelSpec.model_validate(sm["spec"]), default_image="triton:default",
                                  config_digest="abc")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "triton:default"


def test_api_triton_doctests() -> None:
    import doctest

    from kubestill.api import triton

    result = doctest.testmod(triton)
    assert result.attempted > 0 and result.failed == 0


def test_gpu_image_setting() -> None:
    from kubestill.settings import from_env

    assert from_env({}).triton_gpu_image == ""
    assert from_env({"KUBESTILL_TRITON_GPU_IMAGE": "kubestill-serving-gpu:1"}).triton_gpu_image == \
        "kubestill-serving-gpu:1"
