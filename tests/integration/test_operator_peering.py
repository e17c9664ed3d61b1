"""Operator replicas and kopf peering, on the real API server with real `kubestill operator` processes: however
the peering is named (--peering or KUBESTILL_PEERING), of two replicas the one of the higher priority handles
resources and the other stands by until it leaves; --standalone joins no peering even with the variable set.

Before, a peering named only by --peering paused every watch for good ("peering CRD is missing"): the start-up
configuration read KUBESTILL_PEERING alone and made the operator standalone and mandatory-peered at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubestill.dev.controlplane import Cluster
from kubestill.dev.operator_process import OperatorProcess
from kubestill.dev.polling import wait_for

from ..conftest import REPO_ROOT

pytestmark = pytest.mark.integration

PEERING_CRDS = REPO_ROOT / "charts" / "kubestill" / "crds" / "kopf.dev_peerings.yaml"
PEERING = "replicas"
RESUMED = "Resuming operations after the pause"
PAUSED = "Pausing operations in favour of"


def create_peering(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}}))


@pytest.fixture
def peering_crds(cluster: Cluster) -> None:
    """kopf's peering CRDs, the chart's."""
    cluster.kubectl("apply", "--server-side", "-f", str(PEERING_CRDS))
    cluster.kubectl("wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev", "--timeout=60s")


@pytest.fixture
def peering(cluster: Cluster, namespace: str, peering_crds: None) -> str:
    """An empty KopfPeering in the test's namespace."""
    create_peering(cluster, namespace)
    return PEERING


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[OperatorProcess]]:
    """The operator processes a test starts, stopped afterwards."""
    started: list[OperatorProcess] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.stop()


def replica(cluster: Cluster, namespace: str, log: Path, priority: int, named_by: str) -> OperatorProcess:
    """`kubestill operator` watching `namespace`, in the peering named by the flag or by the variable."""
    env = {"KUBESTILL_NAMESPACES": namespace}
    args = [f"--priority={priority}"]
    if named_by == "flag":
        args += ["--peering", PEERING]
    else:
        env["KUBESTILL_PEERING"] = PEERING
    return OperatorProcess(cluster, log, env, unset=() if named_by == "variable" else ("KUBESTILL_PEERING",),
                           args=args)


def rollout(cluster: Cluster, namespace: str, name: str) -> None:
    """A CanaryRollout on a route that does not exist: whoever handles it writes a status at once."""
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout", "metadata": {"name": name},
        "spec": {"route": {"name": "no-such-route"}, "baseline": {"name": "baseline", "port": 8000},
                 "candidate": {"service": {"name": "candidate", "port": 8000}},
                 "steps": [{"weight": 10, "pause": "1h"}]}}))


def handled(cluster: Cluster, namespace: str, name: str) -> bool:
    got: dict[str, Any] = json.loads(cluster.kubectl("get", "canaryrollout", name, "-n", namespace,
                                                     "-o", "json").stdout)
    return bool(got.get("status"))


def active(proc: OperatorProcess) -> bool:
    """kopf starts a peered replica paused: it says RESUMED when no live peer outranks it, PAUSED when one does."""
    log = proc.log_file.read_text(errors="replace")
    return log.rfind(RESUMED) > log.rfind(PAUSED)


def peers(cluster: Cluster, namespace: str) -> dict[str, Any]:
    got = json.loads(cluster.kubectl("get", "kopfpeering", PEERING, "-n", namespace, "-o", "json").stdout)
    return dict(got.get("status") or {})


@pytest.mark.parametrize("named_by", ["flag", "variable"])
def test_the_higher_priority_replica_is_active_and_the_other_takes_over_when_it_leaves(
        cluster: Cluster, namespace: str, peering: str, replicas: list[OperatorProcess], tmp_path: Path,
        named_by: str) -> None:
    standby = replica(cluster, namespace, tmp_path / "standby.log", 1, named_by)
    leader = replica(cluster, namespace, tmp_path / "leader.log", 2, named_by)
    replicas += [standby.start(), leader.start()]
    wait_for(lambda: active(leader) and not active(standby), 30, "the priority-2 replica active, the other paused")
    assert len(peers(cluster, namespace)) == 2, peers(cluster, namespace)
    rollout(cluster, namespace, "first")
    wait_for(lambda: handled(cluster, namespace, "first"), 30, "the active replica to handle a rollout")

    leader.stop()  # graceful: kopf removes its own record, so the standby need not wait out its lifetime
    wait_for(lambda: active(standby), 30, "the standby to resume once the leader left the peering")
    rollout(cluster, namespace, "second")
    wait_for(lambda: handled(cluster, namespace, "second"), 30, "the remaining replica to handle a rollout")


def test_standalone_joins_no_peering_even_with_the_variable_set(
        cluster: Cluster, namespace: str, peering: str, replicas: list[OperatorProcess], tmp_path: Path) -> None:
    proc = OperatorProcess(cluster, tmp_path / "operator.log",
                           {"KUBESTILL_NAMESPACES": namespace, "KUBESTILL_PEERING": peering}, args=["--standalone"])
    replicas.append(proc.start())
    rollout(cluster, namespace, "alone")
    wait_for(lambda: handled(cluster, namespace, "alone"), 30, "the standalone operator to handle a rollout")
    assert peers(cluster, namespace) == {}
    assert RESUMED not in proc.log_file.read_text(errors="replace")


def test_replicas_started_before_their_peering_object_wait_for_it_and_only_one_acts(
        cluster: Cluster, namespace: str, peering_crds: None, replicas: list[OperatorProcess],
        tmp_path: Path) -> None:
    """With the chart, Helm creates the KopfPeering after the Deployment. Before, replicas that started first
    all resumed when it appeared (empty) and acted together until their next keep-alive, ~50 s later."""
    standby = replica(cluster, namespace, tmp_path / "standby.log", 1, "variable")
    leader = replica(cluster, namespace, tmp_path / "leader.log", 2, "variable")
    replicas += [standby.start(wait=False), leader.start(wait=False)]
    for proc in replicas:
        wait_for(lambda p=proc: "waiting for the peering object" in p.log_file.read_text(errors="replace"), 30,
                 f"{proc.log_file.name} to say it waits for the peering object")
    create_peering(cluster, namespace)
    for proc in replicas:
        proc.wait_healthy()
    wait_for(lambda: active(leader), 30, "the priority-2 replica to resume")
    deadline = time.monotonic() + 5  # kopf pauses or resumes within a watch event; both acting showed at once
    while time.monotonic() < deadline:
        assert not active(standby), standby.log_tail()
        time.sleep(0.2)
    assert len(peers(cluster, namespace)) == 2, peers(cluster, namespace)
