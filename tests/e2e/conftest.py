"""E2E fixtures: the real operator as a subprocess and the local node, both against the `cluster` fixture.

Nothing here fakes the API server, the trainer or Triton: the operator is `kubestill operator`, the node
runs the stage Jobs' commands (the installed trainer) and the Triton Deployments (bundled tritonserver).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kubestill.dev import polling
from kubestill.dev.controlplane import Cluster
from kubestill.dev.node import LocalNode
from kubestill.dev.operator_process import SOURCE_PATH, OperatorProcess

# The images the process node "runs" (it runs their commands in this environment); a deleted CanaryRollout
# whose route cannot be restored is released after KUBESTILL_ROUTE_RESTORE_TIMEOUT.
E2E_OPERATOR_ENV = {"KUBESTILL_TRAINER_IMAGE": "kubestill-trainer:dev",
                    "KUBESTILL_TRITON_IMAGE": "kubestill-triton:dev", "KUBESTILL_ROUTE_RESTORE_TIMEOUT": "10s"}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        for name, title in (("operator", "operator log"), ("local_node", "node log")):
            fixture = item.funcargs.get(name) if hasattr(item, "funcargs") else None
            if isinstance(fixture, OperatorProcess):
                report.sections.append((title, fixture.log_tail(120)))
            elif isinstance(fixture, LocalNode):
                log = fixture.state_dir / "node.log"
                if log.exists():
                    report.sections.append((title, "\n".join(log.read_text().splitlines()[-60:])))
    return report


@pytest.fixture(scope="session")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The real operator, running against `cluster` for the whole session."""
    proc = OperatorProcess(cluster, tmp_path_factory.mktemp("operator") / "operator.log", E2E_OPERATOR_ENV)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def local_node(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNode]:
    """The local node in a thread: runs what the operator schedules (trainer, tritonserver) as processes."""
    import logging

    state = tmp_path_factory.mktemp("node")
    handler = logging.FileHandler(state / "node.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("kubestill.node")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    os.environ["PYTHONPATH"] = SOURCE_PATH + (os.pathsep + os.environ["PYTHONPATH"]
                                              if os.environ.get("PYTHONPATH") else "")
    node = LocalNode(state, cluster.kubeconfig)
    node.start()
    try:
        yield node
    finally:
        node.stop()
        logger.removeHandler(handler)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """kubestill.dev.polling.wait_for, untyped for the tests' many kinds of predicate."""
    return polling.wait_for(predicate, timeout, what, interval)


def get_json(cluster: Cluster, *args: str) -> dict[str, Any]:
    out = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}
