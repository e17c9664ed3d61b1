"""Fixtures of the real-node tests: one real single-node cluster (kubestill.dev.realnode: containerd, runc,
kubelet, kube-proxy, CoreDNS) for the session, running the project's own images (kubestill.dev.images).

Root only. Where this host cannot run a real node (not root, a Debian package or a binary missing) or an image is
not built, the tests are skipped with the reason; with KUBESTILL_REQUIRE_REAL_NODE=1, as scripts/test.sh sets
when run as root (CI), that is a failure instead: falling back to the process node is never silent.
The teardown test (marked realnode_teardown) runs after every other real-node test and checks that stopping the
node leaves nothing behind on the host.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kubestill.dev import controlplane, host, images, polling, realnode
from kubestill.dev.operator_process import OperatorProcess, chart_trainer_security
from kubestill.dev.realnode import RealNode

REQUIRED = os.environ.get("KUBESTILL_REQUIRE_REAL_NODE") == "1"
REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"KUBESTILL_REQUIRE_REAL_NODE=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The teardown test goes right after the last other real-node test (it stops the shared node)."""
    teardown = [i for i in items if i.get_closest_marker("realnode_teardown")]
    if not teardown:
        return
    rest = [i for i in items if i not in teardown]
    ours = [n for n, i in enumerate(rest) if i.get_closest_marker("realnode")]
    at = ours[-1] + 1 if ours else len(rest)
    items[:] = rest[:at] + teardown + rest[at:]


@dataclass
class NodeSession:
    node: RealNode
    before: host.Footprint
    stopped: bool = False


@pytest.fixture(scope="session")
def node_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeSession]:
    bins = controlplane.ensure_binaries()
    reasons = host.missing(bins)
    if reasons:
        unavailable("no real node on this host: " + "; ".join(reasons))
    state = tmp_path_factory.mktemp("realnode")
    before = host.Footprint.take(bins, state)
    session = NodeSession(realnode.start(state, bins), before)
    try:
        yield session
    finally:
        if not session.stopped:
            realnode.stop(session.node, remove_state=False)


@pytest.fixture
def real_node(node_session: NodeSession) -> RealNode:
    assert not node_session.stopped, "the real node was stopped (the teardown test must run last)"
    return node_session.node


@pytest.fixture(scope="session")
def loaded() -> Callable[[RealNode, str], str]:
    """load(node, name) -> the image's name for Pods, once it is in the node's containerd."""
    done: set[str] = set()

    def load(node: RealNode, name: str) -> str:
        if name not in done:
            if images.missing_tools() or images.image_id(images.IMAGES[name].local) is None:
                unavailable(f"image {name} is not built (scripts/setup.sh, or python -m kubestill.dev.images "
                            f"build {name})")
            images.load(node, (name,))
            done.add(name)
        return images.IMAGES[name].name

    return load


@contextmanager
def new_namespace(node: RealNode) -> Iterator[str]:
    """A namespace of its own, once its default ServiceAccount exists (Pods are refused before); deleted after
    (without waiting)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    node.cluster.kubectl("create", "namespace", name)
    wait_for(lambda: node.cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
             30, "the default ServiceAccount")
    try:
        yield name
    finally:
        node.cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def namespace(real_node: RealNode) -> Iterator[str]:
    """A namespace for the test (new_namespace)."""
    with new_namespace(real_node) as name:
        yield name


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """kubestill.dev.polling.wait_for, failing the test (AssertionError) on timeout."""
    try:
        return polling.wait_for(check, timeout, what, interval)
    except TimeoutError as err:
        raise AssertionError(str(err)) from None


def get_json(node: RealNode, *args: str) -> dict[str, Any]:
    out = node.cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout else {}


def describe_pods(node: RealNode, namespace: str) -> str:
    """What went wrong, for assertion messages: Pods, their events, their containers' last lines (why a
    command exited) and the kubelet's last words."""
    pods = node.cluster.kubectl("describe", "pods", "-n", namespace, check=False).stdout[-4000:]
    names = node.cluster.kubectl("get", "pods", "-n", namespace, "-o", "name", check=False).stdout.split()
    logs = "\n".join(f"--- {name} ---\n" + node.cluster.kubectl(
        "logs", "-n", namespace, name, "--all-containers", "--tail", "15", check=False).stdout[-1500:]
        for name in names)
    kubelet = (node.state_dir / "logs" / "kubelet.log").read_text(errors="replace")[-2000:]
    return f"{pods}\n--- container logs ---\n{logs}\n--- kubelet.log ---\n{kubelet}"


def operator_process(node: RealNode, log_file: Path, env: dict[str, str] | None = None) -> OperatorProcess:
    """`kubestill operator` as a host process against the real node's API server, with the chart's default
    images (the ones kubestill.dev.images builds: no image override), so what it creates runs as real Pods."""
    return OperatorProcess(node.cluster, log_file, {"KUBESTILL_IMAGE_PULL_POLICY": "IfNotPresent", **(env or {})},
                           unset=("KUBESTILL_TRITON_IMAGE", "KUBESTILL_TRAINER_IMAGE"))


@pytest.fixture
def operator(real_node: RealNode, tmp_path: Path) -> Iterator[OperatorProcess]:
    op = operator_process(real_node, tmp_path / "operator.log").start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def chart_operator(real_node: RealNode, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator with the chart's trainer security contexts (non-root, read-only root filesystem)."""
    op = operator_process(real_node, tmp_path / "operator.log", chart_trainer_security()).start()
    try:
        yield op
    finally:
        op.stop()


def pod_logs(node: RealNode, namespace: str) -> dict[str, str]:
    """Every container's log (init containers too) of every Pod in `namespace`: Pod name -> text."""
    names = node.cluster.kubectl("get", "pods", "-n", namespace, "-o", "name", check=False).stdout.split()
    return {name: node.cluster.kubectl("logs", "-n", namespace, name, "--all-containers", "--prefix",
                                       check=False).stdout for name in names}


def kill_running_pod(node: RealNode, namespace: str, job: str) -> str:
    """SIGKILL the container of the running Pod of Job `job` through containerd, as the kernel's OOM killer or a
    lost node would end it (exit 137, no graceful shutdown); returns the Pod's name."""
    def running() -> dict[str, Any]:
        for pod in get_json(node, "pods", "-n", namespace, "-l", f"job-name={job}").get("items") or []:
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                if "running" in (cs.get("state") or {}) and cs.get("containerID"):
                    return dict(pod)
        return {}

    pod = wait_for(running, 60, f"a running Pod of Job {job}")
    container = pod["status"]["containerStatuses"][0]["containerID"].removeprefix("containerd://")
    node.ctr("tasks", "kill", "-s", "SIGKILL", container)
    return str(pod["metadata"]["name"])
