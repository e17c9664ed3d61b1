"""The demo (`kubestill dev demo`, `scripts/demo.sh`) on a real node, step by step as a user runs it: S3 on the
node's address, the operator with its default images and the chart's trainer security contexts, a
DistillationJob whose four stages run as Pods of the trainer image reading and writing the bucket, the
StudentModel served by the serving image from the bucket, then a CanaryRollout whose route weights Traefik
enforces on real traffic, counted by a plain client from the answers, with upstream Prometheus discovering the
Triton Pods for the analysis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kubestill.dev.demo import NAMESPACE, Demo
from kubestill.dev.realnode import RealNode
from kubestill.dev.seaweedfs import dev_down

from .conftest import describe_pods, get_json

pytestmark = [pytest.mark.realnode, pytest.mark.slow]


def share(counts: dict[str, int]) -> float:
    total = counts.get("baseline", 0) + counts.get("candidate", 0)
    return counts.get("candidate", 0) / total if total else float("nan")


@pytest.fixture
def demo(real_node: RealNode, tmp_path: Path, loaded: Callable[[RealNode, str], str]) -> Iterator[Demo]:
    loaded(real_node, "trainer")
    loaded(real_node, "serving")
    running = Demo(real_node.cluster, real_node, root=tmp_path / "demo", say=print)
    try:
        yield running
    finally:
        running.stop()
        dev_down(real_node.cluster.state_dir)
        real_node.cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def test_demo_runs_on_real_pods_and_its_canary_moves_traffic_through_the_gateway(
        real_node: RealNode, demo: Demo) -> None:
    try:
        code = demo.run()
    except Exception as err:
        raise AssertionError(f"{err}\n{describe_pods(real_node, NAMESPACE)}\n--- operator ---\n"
                             f"{demo.operator.log_tail() if demo.operator else ''}") from err
    assert code == 0, describe_pods(real_node, NAMESPACE)

    pods = get_json(real_node, "pods", "-n", NAMESPACE)["items"]
    stages = [p for p in pods if "kubestill.io/stage" in p["metadata"].get("labels", {})]
    # The storage check Job, then the four stages, each one Pod (backoffLimit 0).
    assert sorted(p["metadata"]["labels"]["kubestill.io/stage"] for p in stages) == [
        "check", "evaluate", "export", "label", "train"]
    assert {p["spec"]["containers"][0]["image"] for p in stages} == {"kubestill-trainer:0.1.0"}
    assert all(p["spec"]["securityContext"]["runAsNonRoot"] for p in stages)

    answers = dict(demo.gateway_answers)
    # Every answer through the gateway came from one of the route's two backends, named by the route's own
    # per-backend header: the rollout's writes never broke the route for a single request.
    for phase, counts in answers.items():
        assert set(counts) <= {"baseline", "candidate"}, (phase, counts)
    steps = [answers[k] for k in ("step 1 (20%)", "step 2 (50%)") if k in answers]
    assert len(steps) == 2, answers
    # Traefik's weighted round robin over 20 requests a second for 8 s per step: about 160 answers each; the
    # first ~0.5 s of a step may still see the previous weights.
    assert 0.08 <= share(steps[0]) <= 0.35, answers
    assert 0.35 <= share(steps[1]) <= 0.65, answers
    routes = get_json(real_node, "httproutes", "-n", NAMESPACE)["items"]
    weights = {ref["name"]: ref.get("weight") for ref in routes[0]["spec"]["rules"][0]["backendRefs"]}
    assert [w for name, w in weights.items() if not name.endswith("-baseline")] == [100], weights
