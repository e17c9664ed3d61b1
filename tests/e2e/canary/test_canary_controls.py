"""Manual control of a running rollout through the `kubestill rollout` CLI (annotations) and spec.paused."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from .conftest import CANDIDATE, Bare, rollout_spec

pytestmark = pytest.mark.e2e


spec = rollout_spec

def candidate_weight(bare: Bare, name: str = CANDIDATE.name) -> int | None:
    refs = bare.api.route(bare.namespace)["spec"]["rules"][0]["backendRefs"]
    return next((r.get("weight", 1) for r in refs if r["name"] == name), None)


def status(bare: Bare, name: str) -> dict[str, Any]:
    return dict(bare.api.rollout(bare.namespace, name).get("status") or {})


def test_promote_pause_resume_abort_from_the_cli(bare: Bare) -> None:
    # Indefinite pauses: only a human moves this rollout on.
    bare.rollout("manual", spec([{"weight": 10}, {"weight": 40}, {"weight": 70}]))
    bare.api.wait_for("step 0 at 10%", lambda: candidate_weight(bare) == 10, timeout=20)
    time.sleep(1.5)
    assert status(bare, "manual")["currentStep"] == 0  # no pause duration: it waits

    bare.cli("rollout", "promote", "manual", "-n", bare.namespace)
    bare.api.wait_for("step 1 at 40%", lambda: candidate_weight(bare) == 40, timeout=10)

    bare.cli("rollout", "pause", "manual", "-n", bare.namespace)
    bare.api.wait_for("Paused", lambda: status(bare, "manual").get("phase") == "Paused", timeout=10)
    assert status(bare, "manual")["pauseReason"] == "Manual"
    bare.cli("rollout", "resume", "manual", "-n", bare.namespace)
    bare.api.wait_for("Progressing", lambda: status(bare, "manual").get("phase") == "Progressing", timeout=10)

    out = bare.cli("rollout", "status", "manual", "-n", bare.namespace).stdout
    assert "Phase:    Progressing" in out and "Weight:   40%" in out

    bare.cli("rollout", "abort", "manual", "-n", bare.namespace)
    bare.api.wait_for("RolledBack", lambda: status(bare, "manual").get("phase") == "RolledBack", timeout=10)
    bare.api.wait_for("the candidate at 0%", lambda: candidate_weight(bare) == 0, timeout=10)  # route follows status
    final = status(bare, "manual")
    assert [h["action"] for h in final["history"]] == ["Start", "Advance", "Pause", "Resume", "Rollback"]
    assert "aborted by user" in final["message"]
    # Each control was acted on once: the handled values are the ones the CLI wrote.
    annotations = bare.api.rollout(bare.namespace, "manual")["metadata"]["annotations"]
    handled = final["handledAnnotations"]
    for key in ("kubestill.io/promote", "kubestill.io/pause", "kubestill.io/resume", "kubestill.io/abort"):
        assert handled[key] == annotations[key]


def test_spec_paused_holds_and_full_promotion(bare: Bare) -> None:
    bare.rollout("gitops", spec([{"weight": 10, "pause": "1s"}, {"weight": 50, "pause": "1h"}], paused=True))
    bare.api.wait_for("Paused", lambda: status(bare, "gitops").get("phase") == "Paused", timeout=20)
    time.sleep(2)
    assert status(bare, "gitops")["currentStep"] == -1 and candidate_weight(bare) in (None, 0)

    bare.cluster.kubectl("patch", "canaryrollout", "gitops", "-n", bare.namespace, "--type=merge",
                         "-p", json.dumps({"spec": {"paused": False}}))
    bare.api.wait_for("step 1 at 50%", lambda: candidate_weight(bare) == 50, timeout=20)
    bare.cli("rollout", "promote", "--full", "gitops", "-n", bare.namespace)
    bare.api.wait_for("Promoted", lambda: status(bare, "gitops").get("phase") == "Promoted", timeout=10)
    assert candidate_weight(bare) == 100
    kinds = [h["action"] for h in status(bare, "gitops")["history"]]
    assert kinds == ["Pause", "Resume", "Start", "Advance", "Promote"]


def test_student_model_candidate_waits_for_ready(bare: Bare) -> None:
    """candidate.studentModel: no traffic before the StudentModel is Ready; its Service then joins the route.
    (No local node runs here, so the StudentModel's Deployment never becomes ready on its own.)"""
    bare.student_model("student-a")
    rollout = spec([{"weight": 25, "pause": "1h"}])
    rollout["candidate"] = {"studentModel": "student-a"}
    bare.rollout("from-sm", rollout)
    bare.api.wait_for(
        "waiting message", lambda: "to be Ready" in status(bare, "from-sm").get("message", ""), timeout=20
    )
    time.sleep(1)
    assert status(bare, "from-sm").get("phase", "Pending") == "Pending" and candidate_weight(bare) is None

    bare.mark_ready("student-a-triton")  # what the local node does in the demo
    bare.api.wait_for("student-a-triton at 25%", lambda: candidate_weight(bare, "student-a-triton") == 25, 20)
    assert status(bare, "from-sm")["phase"] == "Progressing"
