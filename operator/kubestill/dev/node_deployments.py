"""Deployment controller + kubelet for the local node: `replicas` local processes per Deployment, init
containers run first, readiness from the readinessProbe's httpGet, status written like the controller;
Services selecting the Pods get their local URLs (annotation + services.json). A container that exits is
restarted after the kubelet's CrashLoopBackOff delay (10 s, doubling, at most 5 min), and its Pod status
shows the failed run (lastState.terminated with the termination message) as the kubelet writes it."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .kubeapi import KubeError
from .kubelet import PodHost, now_rfc3339, pod_status_patch
from .node_procs import (
    Process,
    container_argv,
    container_env,
    container_mounts,
    materialize_volumes,
    termination_text,
    triton_argv,
)

log = logging.getLogger("kubestill.node.deployments")
ENDPOINTS_ANNOTATION = "kubestill.io/local-endpoints"
BACKOFF_S, MAX_BACKOFF_S = 10.0, 300.0  # the kubelet's CrashLoopBackOff


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Replica:
    pod: str
    template_hash: str
    labels: dict[str, str]
    process: Process | None = None
    ports: dict[str, int] = field(default_factory=dict)  # port name -> local port
    by_number: dict[int, int] = field(default_factory=dict)  # containerPort -> local port
    ready: bool = False
    started: str = ""
    restarts: int = 0
    failed: str = ""
    restart_at: float | None = None  # monotonic time of the next start after a crash (CrashLoopBackOff)
    last_state: dict[str, Any] | None = None  # the last failed run, kept in the Pod status as the kubelet does
    init_statuses: list[dict[str, Any]] = field(default_factory=list)


def selected_replica(namespace: str, selector: dict[str, str], ready: list[tuple[str, Replica]]
                     ) -> Replica | None:
    """The first ready replica (as (namespace, replica)) in `namespace` whose labels carry the whole selector;
    None for an empty selector, as a Service without one selects no Pods."""
    return next((rep for ns, rep in ready if ns == namespace and selector
                 and all(rep.labels.get(k) == v for k, v in selector.items())), None)


def service_urls(ports: list[dict[str, Any]], replica: Replica) -> dict[str, str]:
    """Port name (or number) -> local URL of a Service's ports on `replica`: targetPort by container port name
    or number (default: the port itself), `http://` except for the port named grpc; ports the replica does not
    expose are left out."""
    urls = {}
    for port in ports:
        target = port.get("targetPort", port["port"])
        local = replica.ports.get(target) if isinstance(target, str) else replica.by_number.get(int(target))
        if local is None:
            continue
        scheme = "" if port.get("name") == "grpc" else "http://"
        urls[port.get("name") or str(port["port"])] = f"{scheme}127.0.0.1:{local}"
    return urls


class InitFailed(Exception):
    """An init container exited non-zero; `status` is its initContainerStatuses entry."""

    def __init__(self, message: str, status: dict[str, Any]) -> None:
        super().__init__(message)
        self.status = status


def _template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


class DeploymentRunner:
    def __init__(self, node: PodHost) -> None:
        self.node = node
        self.replicas: dict[str, list[Replica]] = {}  # by deployment uid
        self.meta: dict[str, tuple[str, str]] = {}  # uid -> (namespace, name)
        self.last_status: dict[str, dict[str, Any]] = {}
        self.services_file = node.state_dir / "services.json"

    def sync(self, deployments: list[dict[str, Any]]) -> None:
        seen = set()
        for dep in deployments:
            uid = dep["metadata"]["uid"]
            seen.add(uid)
            if dep["metadata"].get("deletionTimestamp"):
                continue
            self.meta[uid] = (dep["metadata"]["namespace"], dep["metadata"]["name"])
            try:
                self._sync(dep)
            except (KubeError, OSError, KeyError, ValueError) as err:
                log.warning("deployment %s/%s: %s", *self.meta[uid], err)
        for uid in list(self.replicas):
            if uid not in seen:
                for rep in self.replicas.pop(uid):
                    if rep.process is not None:
                        rep.process.stop()
                self.last_status.pop(uid, None)
        self._publish_services()

    def _sync(self, dep: dict[str, Any]) -> None:
        meta, spec = dep["metadata"], dep["spec"]
        uid, ns = meta["uid"], meta["namespace"]
        template = spec["template"]
        want_hash = _template_hash(template)
        desired = int(spec.get("replicas", 1))
        reps = self.replicas.setdefault(uid, [])
        for rep in [r for r in reps if r.template_hash != want_hash]:  # template changed: replace
            self._stop(ns, rep)
            reps.remove(rep)
        while len(reps) > desired:
            self._stop(ns, reps.pop())
        while len(reps) < desired:
            reps.append(self._start(dep, want_hash))
        for rep in reps:
            self._check(ns, rep, template)
        ready = sum(r.ready for r in reps)
        self._write_status(dep, desired, len(reps), ready)

    def _start(self, dep: dict[str, Any], template_hash: str) -> Replica:
        meta, template = dep["metadata"], dep["spec"]["template"]
        ns = meta["namespace"]
        labels = {**(template.get("metadata") or {}).get("labels", {}), "pod-template-hash": template_hash}
        name = f"{meta['name']}-{template_hash[:8]}-{secrets.token_hex(3)}"[:63]
        pod_spec = {**template["spec"], "nodeName": "kubestill-local"}
        pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": ns, "labels": labels,
                            "annotations": (template.get("metadata") or {}).get("annotations", {}),
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                                                 "uid": meta["uid"], "controller": True,
                                                 "blockOwnerDeletion": True}]},
               "spec": pod_spec}
        self.node.api.create(self.node.collection("v1", "pods", ns), pod)
        rep = Replica(name, template_hash, labels, started=now_rfc3339())
        pod_dir = self.node.pod_dir(ns, name)
        pod_dir.mkdir(parents=True, exist_ok=True)
        try:
            volumes = materialize_volumes(pod_spec, pod_dir, self.node.pvc_root,
                                          lambda n: self.node.read_config_map(ns, n), pod["metadata"])
            for init in pod_spec.get("initContainers") or []:
                self._run_init(ns, pod, init, volumes, pod_dir)
            container = pod_spec["containers"][0]
            mounts = container_mounts(container, volumes, pod_dir)
            env = container_env(container, pod, lambda n: self.node.read_secret(ns, n), mounts,
                                self.node.process_env())
            argv = container_argv(container, mounts)
            for port in container.get("ports") or []:
                local = free_port()
                rep.by_number[int(port["containerPort"])] = local
                if port.get("name"):
                    rep.ports[port["name"]] = local
            if argv and Path(argv[0]).name == "tritonserver":
                argv, triton_env = triton_argv(argv, {k: rep.ports[k] for k in ("http", "grpc", "metrics")})
                env.update(triton_env)
            rep.process = Process(argv, env, pod_dir / f"{container['name']}.log", pod_dir)
            log.info("deployment %s/%s: pod %s running %s", ns, meta["name"], name, " ".join(argv)[:200])
        except InitFailed as err:  # as the kubelet reports it: the init container terminated, the Pod waits
            rep.failed = str(err)
            rep.init_statuses = [err.status]
            log.warning("pod %s/%s: %s", ns, name, err)
        except (OSError, KeyError, ValueError, subprocess.SubprocessError) as err:
            rep.failed = str(err)
            log.warning("pod %s/%s failed to start: %s", ns, name, err)
        reason = "PodInitializing" if rep.init_statuses else "CreateContainerError"
        status = [{"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": False,
                   "started": rep.process is not None, "restartCount": 0,
                   "state": {"running": {"startedAt": rep.started}} if rep.process else
                   {"waiting": {"reason": reason, "message": rep.failed[:1000]}}}
                  for c in pod_spec["containers"][:1]]
        patch = pod_status_patch("Running" if rep.process else "Pending", False, status, rep.started)
        if rep.init_statuses:
            patch["status"]["initContainerStatuses"] = rep.init_statuses
        self.node.api.patch(self.node.collection("v1", "pods", ns) + f"/{name}/status", patch)
        return rep

    def _run_init(self, ns: str, pod: dict[str, Any], init: dict[str, Any], volumes: dict[str, str],
                  pod_dir: Path) -> None:
        mounts = container_mounts(init, volumes, pod_dir)
        env = container_env(init, pod, lambda n: self.node.read_secret(ns, n), mounts, self.node.process_env())
        argv = container_argv(init, mounts)
        with open(pod_dir / f"{init['name']}.log", "wb") as out:
            done = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=300, check=False)
        if done.returncode != 0:
            log_file = pod_dir / f"{init['name']}.log"
            message = termination_text(pod_dir / f"{init['name']}.termination-log", log_file,
                                       init.get("terminationMessagePolicy", "File"), done.returncode)
            terminated = {"exitCode": done.returncode, "reason": "Error", "message": message,
                          "finishedAt": now_rfc3339()}
            raise InitFailed(f"init container {init['name']} exited {done.returncode}: {message[-500:]}",
                             {"name": init["name"], "image": init.get("image", ""), "imageID": "", "ready": False,
                              "restartCount": 0, "state": {"terminated": terminated}})

    def _check(self, ns: str, rep: Replica, template: dict[str, Any]) -> None:
        """Readiness by the probe's httpGet on the local port; a dead process is restarted (kubelet)."""
        if rep.process is None:
            return
        container = template["spec"]["containers"][0]
        if rep.restart_at is not None:
            if time.monotonic() < rep.restart_at:
                return
            rep.restart_at = None
            (self.node.pod_dir(ns, rep.pod) / f"{container['name']}.termination-log").unlink(missing_ok=True)
            rep.process = rep.process.restart()
            rep.started = now_rfc3339()
            self._container_status(ns, rep, container, {"running": {"startedAt": rep.started}})
            return
        code = rep.process.poll()
        if code is not None:
            delay = min(BACKOFF_S * 2 ** rep.restarts, MAX_BACKOFF_S)
            log.warning("pod %s exited %s; restarting in %.0fs (log %s)", rep.pod, code, delay, rep.process.log_file)
            rep.ready = False
            rep.restarts += 1
            rep.restart_at = time.monotonic() + delay
            text = termination_text(self.node.pod_dir(ns, rep.pod) / f"{container['name']}.termination-log",
                                    rep.process.log_file, container.get("terminationMessagePolicy", "File"), code)
            terminated = {"exitCode": code, "reason": "Error" if code else "Completed", "message": text,
                          "startedAt": rep.started, "finishedAt": now_rfc3339()}
            waiting = {"waiting": {"reason": "CrashLoopBackOff",
                                   "message": f"back-off {delay:.0f}s restarting failed container"}}
            rep.last_state = {"terminated": terminated}
            self._container_status(ns, rep, container, waiting)
            return
        if rep.ready:
            return
        probe = (container.get("readinessProbe") or {}).get("httpGet")
        if probe:
            port = probe.get("port")
            local = rep.ports.get(port) if isinstance(port, str) else rep.by_number.get(int(port or 0))
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{local}{probe.get('path', '/')}", timeout=0.5) as r:
                    ok = 200 <= r.status < 400
            except OSError:
                ok = False
        else:
            ok = True
        if ok:
            rep.ready = True
            self._container_status(ns, rep, container, {"running": {"startedAt": rep.started}})

    def _container_status(self, ns: str, rep: Replica, container: dict[str, Any], state: dict[str, Any]) -> None:
        status: dict[str, Any] = {"name": container["name"], "image": container.get("image", ""), "imageID": "",
                                  "ready": rep.ready, "started": "running" in state, "restartCount": rep.restarts,
                                  "state": state}
        if rep.last_state is not None:
            status["lastState"] = rep.last_state
        self.node.api.patch(self.node.collection("v1", "pods", ns) + f"/{rep.pod}/status",
                            pod_status_patch("Running", rep.ready, [status], rep.started))

    def _stop(self, ns: str, rep: Replica) -> None:
        if rep.process is not None:
            rep.process.stop()
        self.node.api.delete(self.node.collection("v1", "pods", ns) + f"/{rep.pod}")

    def _write_status(self, dep: dict[str, Any], desired: int, current: int, ready: int) -> None:
        uid, meta = dep["metadata"]["uid"], dep["metadata"]
        available = "True" if ready >= desired else "False"
        key = {"gen": meta.get("generation"), "cur": current, "ready": ready, "desired": desired}
        if self.last_status.get(uid) == key and (dep.get("status") or {}).get("observedGeneration") == \
                meta.get("generation"):
            return
        now = now_rfc3339()
        status = {
            "observedGeneration": meta.get("generation"),
            "replicas": current,
            "updatedReplicas": current,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(desired - ready, 0),
            "conditions": [
                {"type": "Available", "status": available,
                 "reason": "MinimumReplicasAvailable" if available == "True" else "MinimumReplicasUnavailable",
                 "message": f"{ready}/{desired} replicas available", "lastUpdateTime": now,
                 "lastTransitionTime": now},
                {"type": "Progressing", "status": "True",
                 "reason": "NewReplicaSetAvailable" if available == "True" else "ReplicaSetUpdated",
                 "message": f"{ready}/{desired} replicas ready", "lastUpdateTime": now, "lastTransitionTime": now},
            ],
        }
        path = self.node.collection("apps/v1", "deployments", meta["namespace"]) + f"/{meta['name']}/status"
        self.node.api.patch(path, {"status": status})
        self.last_status[uid] = key

    def _publish_services(self) -> None:
        """Service -> local URL of its first ready replica, for tests, the demo and the canary."""
        ready = [(self.meta[uid][0], rep) for uid, reps in self.replicas.items() for rep in reps if rep.ready]
        if not ready and not self.services_file.exists():
            return
        found: dict[str, dict[str, str]] = {}
        for svc in self.node.api.list(self.node.collection("v1", "services"), "app.kubernetes.io/managed-by"):
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            match = selected_replica(ns, (svc.get("spec") or {}).get("selector") or {}, ready)
            if match is None:
                continue
            urls = service_urls(svc["spec"].get("ports") or [], match)
            found[f"{ns}/{name}"] = urls
            annotations = (svc["metadata"].get("annotations") or {})
            if annotations.get(ENDPOINTS_ANNOTATION) != json.dumps(urls, sort_keys=True):
                self.node.api.patch(self.node.collection("v1", "services", ns) + f"/{name}",
                                    {"metadata": {"annotations": {ENDPOINTS_ANNOTATION: json.dumps(urls,
                                                                                                   sort_keys=True)}}})
        text = json.dumps(found, indent=2, sort_keys=True)
        if not self.services_file.exists() or self.services_file.read_text() != text:
            self.services_file.write_text(text)

    def stop_all(self) -> None:
        for reps in self.replicas.values():
            for rep in reps:
                if rep.process is not None:
                    rep.process.stop()
        self.replicas.clear()
