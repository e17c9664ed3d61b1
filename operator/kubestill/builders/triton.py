"""What serves a StudentModel: the Triton config ConfigMap, the Deployment running tritonserver and the
Service in front of it. Pure: spec in, manifest dicts out.

The model repository is assembled at Pod start by an init container, in an emptyDir:
`/models/<model>/config.pbtxt` from the ConfigMap and `/models/<model>/1/model.py` from the artifact's
`triton/model.py` (contract). The python backend's model.py then loads the model from `artifact_dir`.
An s3:// artifact is first downloaded by another init container (the trainer image's storage CLI, with the
StudentModel's S3 Secret) into an emptyDir at /mnt/kubestill/artifact, which the others then read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from kubestill.api.names import (
    CONFIG_HASH_ANNOTATION,
    SM_LABEL,
    TERMINATION_LOG,
    TERMINATION_LOG_ENV,
    triton_name,
)
from kubestill.api.storage import is_s3
from kubestill.api.triton import render_config_pbtxt, runtime_env
from kubestill.api.v1alpha1.studentmodel import GRPC_PORT, HTTP_PORT, METRICS_PORT, StudentModelSpec

from .job import container_resources, placement
from .meta import build_cluster_ip_service, child_metadata, container_security, local_path, pvc_claims, pvc_volumes
from .storage import ARTIFACT_DIR, ARTIFACT_VOLUME, fetch_artifact_container

MODELS_DIR = "/models"
TRITON_CONFIG_DIR = "/etc/kubestill/triton"
CONFIG_KEY = "config.pbtxt"
TRITON_CONTAINER = "tritonserver"
ASSEMBLE_CONTAINER = "assemble-model-repository"


def model_name(sm_name: str) -> str:
    """Triton model name: the StudentModel's name (DNS-1123, a valid Triton name)."""
    return sm_name


def artifact_root(spec: StudentModelSpec) -> str:
    """Where the Pods see the exported artifact (`export/`); pkg:// ones must be inside the Triton image, s3://
    ones are downloaded to ARTIFACT_DIR."""
    if is_s3(spec.artifact_uri):
        return ARTIFACT_DIR
    return local_path(spec.artifact_uri) or spec.artifact_uri


def artifact_dir(spec: StudentModelSpec) -> str:
    """The servable model directory (contract: `<artifact>/model`, holding kubestill.json), passed to
    model.py as the `artifact_dir` parameter."""
    return f"{artifact_root(spec)}/model"


def serving_image(spec: StudentModelSpec, default_image: str, gpu_image: str = "") -> str:
    """The Triton image: spec.serving.image, else `gpu_image` for a container that asks for GPUs (the serving
    image built with onnxruntime-gpu, whose CUDA provider model.py needs on a KIND_GPU instance) when the
    operator has one, else `default_image`."""
    serving = spec.serving
    if serving.image:
        return serving.image
    return gpu_image if gpu_image and serving.resources.gpus > 0 else default_image


def _labels(sm_name: str) -> dict[str, str]:
    return {SM_LABEL: sm_name, "app.kubernetes.io/name": "kubestill-triton", "app.kubernetes.io/instance":
            triton_name(sm_name)}


def build_triton_config_map(
    sm: Mapping[str, Any], spec: StudentModelSpec, extra_labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """`<sm>-triton` holding config.pbtxt rendered by kubestill.api.triton (shared with the trainer)."""
    name = sm["metadata"]["name"]
    text = render_config_pbtxt(model_name(name), spec.task, spec.serving, artifact_dir(spec), spec.labels)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(triton_name(name), sm, _labels(name), extra_labels),
        "data": {CONFIG_KEY: text},
    }


def config_hash(config_map: Mapping[str, Any]) -> str:
    """Short digest of the rendered config; a Pod annotation, so a config change rolls the Deployment."""
    text = (config_map.get("data") or {}).get(CONFIG_KEY, "")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_triton_deployment(
    sm: Mapping[str, Any],
    spec: StudentModelSpec,
    *,
    default_image: str,
    config_digest: str,
    gpu_image: str = "",
    pull_policy: str = "IfNotPresent",
    pull_secrets: tuple[str, ...] = (),
    extra_labels: Mapping[str, str] | None = None,
    fetch_image: str = "",
    fetch_pod_security: Mapping[str, Any] | None = None,
    fetch_security: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """apps/v1 Deployment `<sm>-triton`: tritonserver on 8000/8001/8002, ready on /v2/health/ready; an s3://
    artifact is downloaded first by `fetch_image` (the trainer image) under the trainer's security contexts
    (`fetch_pod_security`'s container-level fields, then `fetch_security`); the image: `serving_image`."""
    name = sm["metadata"]["name"]
    serving = spec.serving
    image = serving_image(spec, default_image, gpu_image)
    labels = _labels(name)
    model = model_name(name)
    volumes, mounts = pvc_volumes(pvc_claims([spec.artifact_uri]))
    for m in mounts:
        m["readOnly"] = True
    volumes += [
        {"name": "models", "emptyDir": {}},
        {"name": "triton-config", "configMap": {"name": triton_name(name)}},
    ]
    init_containers: list[dict[str, Any]] = []
    if is_s3(spec.artifact_uri):
        volumes.append({"name": ARTIFACT_VOLUME, "emptyDir": {}})
        mounts.append({"name": ARTIFACT_VOLUME, "mountPath": ARTIFACT_DIR, "readOnly": True})
        fetch, fetch_volumes = fetch_artifact_container(
            spec.artifact_uri, spec.storage_secret_ref, fetch_image or image, pull_policy,
            container_security(fetch_pod_security, fetch_security))
        init_containers.append(fetch)
        volumes += fetch_volumes
    models_mount = {"name": "models", "mountPath": MODELS_DIR}
    assemble = (
        f"mkdir -p {MODELS_DIR}/{model}/1 && "
        f"cp {TRITON_CONFIG_DIR}/{CONFIG_KEY} {MODELS_DIR}/{model}/{CONFIG_KEY} && "
        f"cp {artifact_root(spec)}/triton/model.py {MODELS_DIR}/{model}/1/model.py"
    )
    init = {
        "name": ASSEMBLE_CONTAINER,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": ["sh", "-c", assemble],
        "volumeMounts": [*mounts, models_mount,
                         {"name": "triton-config", "mountPath": TRITON_CONFIG_DIR, "readOnly": True}],
    }
    server: dict[str, Any] = {
        "name": TRITON_CONTAINER,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": ["tritonserver", f"--model-repository={MODELS_DIR}", f"--http-port={HTTP_PORT}",
                    f"--grpc-port={GRPC_PORT}", f"--metrics-port={METRICS_PORT}"],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT},
            {"name": "grpc", "containerPort": GRPC_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        # model.py leaves why it refused to load in the termination log (kubestill.api.triton.LoadFailure);
        # the kubelet copies it into the Pod status, where the operator reads it (else the log tail).
        # The runtime's threads also as environment: a model.py exported before its config parameters existed
        # still gets them through the serving image's load_servable (kubestill.api.triton.runtime_env).
        "env": [{"name": "HF_HUB_OFFLINE", "value": "1"},
                {"name": TERMINATION_LOG_ENV, "value": TERMINATION_LOG},
                *({"name": k, "value": v} for k, v in runtime_env(serving, spec.task).items())],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "initialDelaySeconds": 30,
            "periodSeconds": 10,
        },
        "volumeMounts": [*mounts, models_mount],
    }
    resources = container_resources(serving.resources)
    if resources:
        server["resources"] = resources
    pod_spec: dict[str, Any] = {
        "initContainers": [*init_containers, init],
        "containers": [server],
        "volumes": volumes,
        **placement(serving.placement),
    }
    if serving.service_account_name:
        pod_spec["serviceAccountName"] = serving.service_account_name
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in pull_secrets]
    metadata = child_metadata(triton_name(name), sm, labels, extra_labels)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": serving.replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/instance": triton_name(name)}},
            "template": {
                "metadata": {
                    "labels": dict(metadata["labels"]),
                    "annotations": {
                        CONFIG_HASH_ANNOTATION: config_digest,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(METRICS_PORT),
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def build_triton_service(sm: Mapping[str, Any], extra_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """ClusterIP Service `<sm>-triton`: http 8000, grpc 8001, metrics 8002."""
    name = sm["metadata"]["name"]
    return build_cluster_ip_service(triton_name(name), sm, _labels(name), extra_labels,
                                    [("http", HTTP_PORT), ("grpc", GRPC_PORT), ("metrics", METRICS_PORT)])


def endpoint(sm: Mapping[str, Any]) -> dict[str, str]:
    """In-cluster addresses of the Service (status.endpoint)."""
    name, namespace = sm["metadata"]["name"], sm["metadata"]["namespace"]
    host = f"{triton_name(name)}.{namespace}.svc"
    return {
        "http": f"http://{host}:{HTTP_PORT}",
        "grpc": f"{host}:{GRPC_PORT}",
        "metrics": f"http://{host}:{METRICS_PORT}/metrics",
        "modelName": model_name(name),
    }
