"""Live agreement with real models on the real node, through the real gateway (issue #17): the same stack as
test_canary_agreement.py (the judge a Pod of the operator image, Traefik mirroring through the rollout's
TraefikService, upstream Prometheus discovering the Pods), with the models the issue names instead of the echo
model. The baseline is a real teacher (MiniLM-L6 with a head fitted on BBC News titles); the candidates are a
student distilled from it as the demo's is (2 layers cut from the teacher, logit-kl) and the same student trained on
shuffled labels; all three trained and exported by the trainer (bench/_agreement_models.py, run as a program,
cached under ~/.cache/kubestill/bench: minutes the first time) and served by tritonserver Pods of the serving image
from the repository a StudentModel's Deployment assembles. The client sends the dataset's held-out titles.

- the shuffled-label student is rolled back by the SPRT during the shadow step, and not one live request reaches it;
- the distilled student ends both steps early and is promoted;
- in both, what the judge counted is what the two Pods answer to the very requests it was mirrored, asked again
  one by one.

Settings as bench/agreement_live.py's (--models real): minRate 0.80, delta 0.05 (the good student agrees with the
teacher on 0.888 of the titles offline, the shuffled one on 0.202; models.json has the figures of this recipe).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubestill.dev.gateway_client import infer_body
from kubestill.dev.realnode import RealNode

from .conftest import REPO_ROOT, get_json
from .test_canary_agreement import PORT, Stack, serving_stack

pytestmark = pytest.mark.realnode

MIN_RATE, DELTA = 0.80, 0.05
SHADOW = "shadow"  # what answered through the TraefikService: its main service, the baseline (the body can't say)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """(directory holding teacher/, good/ and bad/, each with repo/ and export/; models.json's manifest)."""
    root = tmp_path_factory.mktemp("agreement-models")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT / "operator"), str(REPO_ROOT / "trainer-image"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "_agreement_models.py"), str(root)], env=env,
                          capture_output=True, text=True, timeout=3600, check=False)
    assert done.returncode == 0, f"building the models failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    manifest = json.loads((root / "models.json").read_text())
    good, bad = manifest["offline"]["good"], manifest["offline"]["bad"]
    # The recipe's students sit on either side of the test's hypotheses, or the test would prove nothing.
    assert good >= MIN_RATE and bad <= MIN_RATE - DELTA, manifest["offline"]
    return root, manifest


def _stack(real_node: RealNode, namespace: str, loaded: Callable[[RealNode, str], str], tmp_path: Path,
           models: tuple[Path, dict[str, Any]], candidate: str) -> Iterator[Stack]:
    root, manifest = models
    repositories = {"baseline": root / "teacher", "candidate": root / candidate}
    with serving_stack(real_node, namespace, loaded, tmp_path, repositories, manifest["model"]) as stack:
        stack.texts, stack.min_rate, stack.delta = manifest["texts"], MIN_RATE, DELTA
        stack.untagged = lambda body: SHADOW
        yield stack


@pytest.fixture
def good(real_node: RealNode, namespace: str, loaded: Callable[[RealNode, str], str], tmp_path: Path,
         models: tuple[Path, dict[str, Any]]) -> Iterator[Stack]:
    yield from _stack(real_node, namespace, loaded, tmp_path, models, "good")


@pytest.fixture
def bad(real_node: RealNode, namespace: str, loaded: Callable[[RealNode, str], str], tmp_path: Path,
        models: tuple[Path, dict[str, Any]]) -> Iterator[Stack]:
    yield from _stack(real_node, namespace, loaded, tmp_path, models, "bad")


def label(stack: Stack, pod_ip: str, text: str) -> str:
    """The top-1 LABEL the Pod at `pod_ip` answers for `text`, asked directly (not through the gateway)."""
    request = urllib.request.Request(f"http://{pod_ip}:{PORT}/v2/models/{stack.model}/infer",
                                     data=infer_body(text), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        outputs = {o["name"]: o["data"] for o in json.load(resp)["outputs"]}
    return str(outputs["LABEL"][0])


def asked_again(stack: Stack, texts: list[str]) -> list[bool]:
    """Whether the baseline and the candidate answer each of `texts` with the same label, asked one by one."""
    ips = [get_json(stack.node, "pods", "-n", stack.namespace, "-l", f"app.kubernetes.io/instance={service}")
           ["items"][0]["status"]["podIP"] for service in ("baseline", "candidate")]
    return [label(stack, ips[0], t) == label(stack, ips[1], t) for t in texts]


def judged_as_asked_again(stack: Stack, mirrored: list[str], counts: dict[str, float],
                          sequential: dict[str, Any]) -> None:
    """The judge's `counts` (stack.judged: once Prometheus has them all) equal the same comparison made again on
    `mirrored` (samplePercent 100: the judge compared a copy of each request that went through the
    TraefikService, and both models are deterministic functions of the text); and the counts the sequential test
    decided on are those of the first mirrored requests (within 2 or a tenth: increase() extrapolates to the
    step's edges). Asking again adds to what each Pod has served: read their counters before."""
    again = asked_again(stack, mirrored)
    assert set(counts) <= {"agree", "disagree"}, counts  # nothing it could not compare
    assert sum(counts.values()) == len(mirrored), (counts, len(mirrored))
    assert counts.get("agree", 0) == sum(again), (counts, sum(again), len(mirrored))
    samples, agreements = sequential["samples"], sequential["agreements"]
    first = sum(again[:samples])
    assert abs(agreements - first) <= max(2, samples / 10), (sequential, f"{first} of the first {samples} agree")


def test_the_shuffled_label_student_is_rolled_back_in_shadow_and_serves_no_live_request(bad: Stack) -> None:
    status, client = bad.decide("RolledBack")
    assert status["message"].startswith("rolled back: agreement "), status
    assert "(SPRT alpha=0.05 beta=0.05" in status["message"], status
    assert [h["action"] for h in status["history"]] == ["Start", "Rollback"], status["history"]
    assert status["sequential"]["step"] == -1 and status["sequential"]["outcome"] == "Reject", status
    answers = client.total()
    assert set(answers) == {"baseline", SHADOW}, client.snapshot()  # never the candidate, never an error
    mirrored = client.sent_by(SHADOW)
    counts = bad.judged(len(mirrored))
    assert len(mirrored) >= status["sequential"]["samples"] > 0, (len(mirrored), status["sequential"])
    served = bad.candidate_served()
    assert served <= sum(counts.values()), (served, counts)  # only the judge asked it
    judged_as_asked_again(bad, mirrored, counts, status["sequential"])
    print(yaml.safe_dump({"decision": status["message"], "answers": dict(answers), "judge samples": counts,
                          "candidate served": served,
                          "sequential": status["sequential"]}))


def test_the_distilled_student_ends_its_steps_early_and_is_promoted(good: Stack, models: tuple[Path, Any]) -> None:
    status, client = good.decide("Promoted")
    history = status["history"]
    assert [h["action"] for h in history[:3]] == ["Start", "Advance", "Promote"], history
    assert "shadow step passed early: agreement" in history[1]["reason"], history
    assert "all steps passed early" in history[2]["reason"], history
    answers = client.total()
    assert set(answers) <= {"baseline", SHADOW, "candidate"} and answers["candidate"] > 0, client.snapshot()
    mirrored = client.sent_by(SHADOW)
    # The shadow step's test decided on the first mirrored requests: its counts, from its reason in history.
    found = re.search(r"agreement ([0-9.]+) >= .*, ([0-9,]+) samples\)", history[1]["reason"])
    assert found, history[1]
    samples = int(found[2].replace(",", ""))
    shadow_step = {"samples": samples, "agreements": round(float(found[1]) * samples)}
    counts = good.judged(len(mirrored))
    judged_as_asked_again(good, mirrored, counts, shadow_step)
    live = counts.get("agree", 0) / sum(counts.values())
    print(yaml.safe_dump({"answers": dict(answers), "judge samples": counts, "live agreement": round(live, 3),
                          "offline agreement (all titles)": round(models[1]["offline"]["good"], 3),
                          "history": history}))
