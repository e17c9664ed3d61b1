"""The local node: plays kubelet, Job controller and Deployment controller for objects kubestill created,
on a control plane that has none (tests and `kubestill dev`). The operator never imports this module.

Every `interval` seconds it lists Jobs and Deployments labelled `app.kubernetes.io/managed-by: kubestill`,
creates Pod objects for them (status written through the status subresource, like a kubelet), runs each
container as a local process (see node_procs), and writes Job and Deployment status the way the
controllers would: Job active/succeeded/failed, retries up to backoffLimit, Complete/Failed conditions;
Deployment replicas/ready/available with Available and Progressing conditions. Triton Services get their
local URLs in the annotation `kubestill.io/local-endpoints` and in `<state>/services.json`.
Garbage collection of deleted owners is left to the control plane's kube-controller-manager.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from .kubeapi import KubeAPI, KubeError
from .node_deployments import DeploymentRunner
from .node_jobs import JobRunner

log = logging.getLogger("kubestill.node")
SELECTOR = "app.kubernetes.io/managed-by=kubestill"


class LocalNode:
    """Run with start()/stop() in a thread, or run_forever() in the foreground."""

    def __init__(self, state_dir: Path, kubeconfig: Path | None = None, namespace: str | None = None,
                 interval: float = 0.5) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.api = KubeAPI(kubeconfig)
        self.kubeconfig = str(kubeconfig) if kubeconfig else None
        self.namespace = namespace
        self.interval = interval
        self.jobs = JobRunner(self)
        self.deployments = DeploymentRunner(self)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # paths under which the node keeps its state
    @property
    def pvc_root(self) -> Path:
        return self.state_dir / "pvc"

    def pod_dir(self, namespace: str, pod: str) -> Path:
        return self.state_dir / "pods" / namespace / pod

    def collection(self, group_version: str, plural: str, namespace: str | None = None) -> str:
        prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        ns = namespace if namespace is not None else self.namespace
        return f"{prefix}/namespaces/{ns}/{plural}" if ns else f"{prefix}/{plural}"

    def read_config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        cm = self.api.get(self.collection("v1", "configmaps", namespace) + f"/{name}")
        return None if cm is None else dict(cm.get("data") or {})

    def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        secret = self.api.get(self.collection("v1", "secrets", namespace) + f"/{name}")
        return None if secret is None else dict(secret.get("data") or {})

    def process_env(self) -> dict[str, str]:
        """What every container process gets on top of its own env: the way back to the API server and
        where pvc:// claims live."""
        extra = {"KUBESTILL_PVC_ROOT": str(self.pvc_root), "HF_HUB_OFFLINE": "1"}
        if self.kubeconfig:
            extra["KUBECONFIG"] = self.kubeconfig
        return extra

    def step(self) -> None:
        """One pass over Jobs and Deployments."""
        self.jobs.sync(self.api.list(self.collection("batch/v1", "jobs"), SELECTOR))
        self.deployments.sync(self.api.list(self.collection("apps/v1", "deployments"), SELECTOR))

    def run_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except (KubeError, OSError) as err:
                log.warning("node step failed: %s", err)
            self._stop.wait(self.interval)
        self.jobs.stop_all()
        self.deployments.stop_all()

    def start(self) -> LocalNode:
        self._thread = threading.Thread(target=self.run_forever, name="kubestill-node", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def __enter__(self) -> LocalNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubestill.dev.node", description=__doc__)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--kubeconfig", type=Path)
    parser.add_argument("--namespace")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s node %(levelname)s %(message)s")
    node = LocalNode(args.state_dir, args.kubeconfig, args.namespace)
    # SIGTERM (kubestill dev down, test teardown) stops the loop, which stops every container process.
    signal.signal(signal.SIGTERM, lambda *_: node._stop.set())
    try:
        node.run_forever()
    except KeyboardInterrupt:
        node.jobs.stop_all()
        node.deployments.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
