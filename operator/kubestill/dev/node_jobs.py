"""Job controller + kubelet for the local node: one Pod (one local process) per attempt, retries up to
backoffLimit, activeDeadlineSeconds, Job status and conditions as batch/v1 defines them."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from .kubeapi import KubeError
from .kubelet import PodHost, now_rfc3339, pod_status_patch
from .node_deployments import ENDPOINTS_ANNOTATION
from .node_procs import (
    Process,
    container_argv,
    container_env,
    container_mounts,
    local_service_hosts,
    materialize_volumes,
    rewrite_service_hosts,
    termination_text,
)

log = logging.getLogger("kubestill.node.jobs")


@dataclass
class Attempt:
    namespace: str
    job: str
    job_uid: str
    pod: str
    container: dict[str, Any]
    process: Process | None
    started: str
    started_mono: float
    pod_dir: Any


class JobRunner:
    def __init__(self, node: PodHost) -> None:
        self.node = node
        self.running: dict[str, Attempt] = {}  # by job uid
        self.finished: set[str] = set()  # job uids whose final status we wrote

    def sync(self, jobs: list[dict[str, Any]]) -> None:
        seen = set()
        for job in jobs:
            uid = job["metadata"]["uid"]
            seen.add(uid)
            if uid in self.finished or job["metadata"].get("deletionTimestamp"):
                continue
            conditions = {c["type"] for c in (job.get("status") or {}).get("conditions") or []
                          if c.get("status") == "True"}
            if conditions & {"Complete", "Failed"}:
                self.finished.add(uid)
                continue
            try:
                self._sync_job(job)
            except (KubeError, OSError, KeyError, ValueError) as err:
                log.warning("job %s/%s: %s", job["metadata"]["namespace"], job["metadata"]["name"], err)
        for uid in list(self.running):
            if uid not in seen:  # the Job was deleted: kill its process, as the kubelet would
                attempt = self.running.pop(uid)
                if attempt.process is not None:
                    attempt.process.stop()

    def _job_path(self, ns: str, name: str) -> str:
        return self.node.collection("batch/v1", "jobs", ns) + f"/{name}"

    def _sync_job(self, job: dict[str, Any]) -> None:
        meta, spec = job["metadata"], job["spec"]
        uid, ns, name = meta["uid"], meta["namespace"], meta["name"]
        status = job.get("status") or {}
        attempt = self.running.get(uid)
        if attempt is None:
            self._start(job, int(status.get("failed") or 0))
            return
        code = attempt.process.poll() if attempt.process is not None else 1
        deadline = spec.get("activeDeadlineSeconds")
        if code is None and deadline and time.monotonic() - attempt.started_mono > float(deadline):
            assert attempt.process is not None
            attempt.process.stop()
            self._finish_pod(attempt, 137, "DeadlineExceeded", "activeDeadlineSeconds exceeded")
            self._fail_job(job, int(status.get("failed") or 0) + 1, "DeadlineExceeded",
                           "Job was active longer than specified deadline")
            return
        if code is None:
            return
        del self.running[uid]
        policy = attempt.container.get("terminationMessagePolicy", "File")
        log_file = attempt.pod_dir / f"{attempt.container['name']}.log"
        text = termination_text(attempt.pod_dir / f"{attempt.container['name']}.termination-log", log_file,
                                policy, code)
        self._finish_pod(attempt, code, "Completed" if code == 0 else "Error", text)
        if code == 0:
            self._succeed_job(job)
            return
        failed = int(status.get("failed") or 0) + 1
        if failed > int(spec.get("backoffLimit", 6)):
            self._fail_job(job, failed, "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        else:
            self.node.api.patch(self._job_path(ns, name) + "/status", {"status": {"failed": failed, "active": 0}})
            self._start(job, failed)

    def _start(self, job: dict[str, Any], failed: int) -> None:
        """Create the next attempt's Pod and run its container."""
        meta, template = job["metadata"], job["spec"]["template"]
        ns = meta["namespace"]
        pod_name = f"{meta['name']}-{secrets.token_hex(3)}"[:63]
        labels = {**(template.get("metadata") or {}).get("labels", {}), "batch.kubernetes.io/job-name": meta["name"],
                  "batch.kubernetes.io/controller-uid": meta["uid"]}
        pod_spec = {**template["spec"], "nodeName": "kubestill-local"}
        pod: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": ns, "labels": labels,
                         "annotations": (template.get("metadata") or {}).get("annotations", {}), "ownerReferences": [{
                "apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"],
                "controller": True, "blockOwnerDeletion": True}]},
            "spec": pod_spec,
        }
        self.node.api.create(self.node.collection("v1", "pods", ns), pod)
        started = now_rfc3339()
        container = template["spec"]["containers"][0]
        pod_dir = self.node.pod_dir(ns, pod_name)
        pod_dir.mkdir(parents=True, exist_ok=True)
        attempt = Attempt(ns, meta["name"], meta["uid"], pod_name, container, None, started, time.monotonic(),
                          pod_dir)
        self.running[meta["uid"]] = attempt
        job_status: dict[str, Any] = {"active": 1, "failed": failed}
        if not (job.get("status") or {}).get("startTime"):
            job_status["startTime"] = started
        self.node.api.patch(self._job_path(ns, meta["name"]) + "/status", {"status": job_status})
        try:
            volumes = materialize_volumes(pod_spec, pod_dir, self.node.pvc_root,
                                          lambda n: self.node.read_config_map(ns, n), pod["metadata"])
            mounts = container_mounts(container, volumes, pod_dir)
            env = container_env(container, pod, lambda n: self.node.read_secret(ns, n), mounts,
                                self.node.process_env())
            services = self.node.api.list(self.node.collection("v1", "services"), "app.kubernetes.io/managed-by")
            env = rewrite_service_hosts(env, local_service_hosts(services, ENDPOINTS_ANNOTATION))
            argv = container_argv(container, mounts)
            attempt.process = Process(argv, env, pod_dir / f"{container['name']}.log", pod_dir)
        except (OSError, KeyError, ValueError) as err:
            # The kubelet would report CreateContainerConfigError; we fail the attempt with the reason.
            (pod_dir / f"{container['name']}.termination-log").write_text(f"container could not start: {err}")
            log.warning("pod %s/%s: %s", ns, pod_name, err)
            return
        running = [{"name": container["name"], "image": container.get("image", ""), "imageID": "",
                    "ready": True, "started": True, "restartCount": 0,
                    "state": {"running": {"startedAt": started}}}]
        self.node.api.patch(self.node.collection("v1", "pods", ns) + f"/{pod_name}/status",
                            pod_status_patch("Running", True, running, started))
        log.info("job %s/%s: pod %s running %s", ns, meta["name"], pod_name, " ".join(argv)[:200])

    def _finish_pod(self, attempt: Attempt, code: int, reason: str, message: str) -> None:
        terminated = {"exitCode": code, "reason": reason, "startedAt": attempt.started,
                      "finishedAt": now_rfc3339()}
        if message:
            terminated["message"] = message
        statuses = [{"name": attempt.container["name"], "image": attempt.container.get("image", ""), "imageID": "",
                     "ready": False, "started": False, "restartCount": 0, "state": {"terminated": terminated}}]
        phase = "Succeeded" if code == 0 else "Failed"
        try:
            self.node.api.patch(self.node.collection("v1", "pods", attempt.namespace) + f"/{attempt.pod}/status",
                                pod_status_patch(phase, False, statuses, attempt.started))
        except KubeError as err:
            log.warning("pod %s status: %s", attempt.pod, err)

    def _succeed_job(self, job: dict[str, Any]) -> None:
        meta, now = job["metadata"], now_rfc3339()
        conds = [
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
             "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached",
             "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now},
        ]
        self.node.api.patch(self._job_path(meta["namespace"], meta["name"]) + "/status", {"status": {
            "active": 0, "ready": 0, "succeeded": 1, "completionTime": now, "conditions": conds}})
        self.finished.add(meta["uid"])
        log.info("job %s/%s: succeeded", meta["namespace"], meta["name"])

    def _fail_job(self, job: dict[str, Any], failed: int, reason: str, message: str) -> None:
        meta, now = job["metadata"], now_rfc3339()
        conds = [
            {"type": "FailureTarget", "status": "True", "reason": reason, "message": message,
             "lastProbeTime": now, "lastTransitionTime": now},
            {"type": "Failed", "status": "True", "reason": reason, "message": message,
             "lastProbeTime": now, "lastTransitionTime": now},
        ]
        self.node.api.patch(self._job_path(meta["namespace"], meta["name"]) + "/status", {"status": {
            "active": 0, "ready": 0, "failed": failed, "conditions": conds}})
        self.finished.add(meta["uid"])
        self.running.pop(meta["uid"], None)
        log.info("job %s/%s: failed (%s)", meta["namespace"], meta["name"], reason)

    def stop_all(self) -> None:
        for attempt in self.running.values():
            if attempt.process is not None:
                attempt.process.stop()
        self.running.clear()
