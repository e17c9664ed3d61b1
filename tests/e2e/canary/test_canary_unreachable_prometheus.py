"""An unreachable Prometheus never lets a rollout be promoted: every analysis round is an Error, the rollout
pauses as Inconclusive at its first step and stays there, saying why. No traffic is involved, so this runs on the
API server alone; the rollouts that move real traffic through the gateway, with Prometheus' analysis and alerting
rules deciding, are tests/realnode/test_canary_rollout.py."""

from __future__ import annotations

import time
from typing import Any

import pytest

from kubestill.dev.controlplane import free_port

from .conftest import CANDIDATE, Bare, rollout_spec

pytestmark = pytest.mark.e2e


def test_unreachable_prometheus_is_never_promoted(bare: Bare) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    spec = rollout_spec([{"weight": 10, "pause": "1s"}, {"weight": 100, "pause": "1s"}], analysis={
        "prometheusUrl": nowhere, "interval": "1s", "inconclusiveLimit": 3,
        "metrics": [{"name": "success-ratio", "query": "vector(1)", "min": 0.99}]})
    bare.rollout("blind", spec)

    def status() -> dict[str, Any]:
        return dict(bare.api.rollout(bare.namespace, "blind").get("status") or {})

    bare.api.wait_for("Paused", lambda: status().get("phase") == "Paused", timeout=30, context=status)
    time.sleep(3)  # and it stays there
    paused = status()
    assert paused["phase"] == "Paused" and paused["pauseReason"] == "Inconclusive", paused
    assert paused["currentStep"] == 0 and paused["currentWeight"] == 10, paused
    assert not paused.get("promotedAt"), paused
    assert {m["result"] for m in paused["measurements"]} == {"Error"}, paused["measurements"]
    assert "Connection" in paused["message"] or "connect" in paused["message"].lower(), paused["message"]
    weights = {r["name"]: r.get("weight", 1) for r in bare.api.route(bare.namespace)["spec"]["rules"][0]["backendRefs"]}
    assert weights[CANDIDATE.name] == 10, weights
