"""What the demo prints and keeps: the gateway's answers grouped by the step the rollout's status shows (counted
from 1), and its logs kept beside the real node's state directory, which stopping the node removes."""

from __future__ import annotations

import doctest
import shutil
from pathlib import Path
from typing import Any

import pytest

from kubestill.dev import demo_gateway
from kubestill.dev.demo_gateway import phase_label


def test_doctests() -> None:
    assert doctest.testmod(demo_gateway).failed == 0


@pytest.mark.parametrize(("status", "expected"), [
    ({}, "before the first step"),  # no status yet: the operator has not started the rollout
    ({"phase": "Pending"}, "before the first step"),
    ({"phase": "Progressing", "currentStep": 0, "currentWeight": 20}, "step 1 (20%)"),
    ({"phase": "Progressing", "currentStep": -1, "currentWeight": 0}, "Progressing"),  # the shadow step
    ({"phase": "Promoted", "currentStep": 2, "currentWeight": 100}, "Promoted"),
    ({"phase": "RolledBack"}, "RolledBack"),
])
def test_phase_label(status: dict[str, Any], expected: str) -> None:
    assert phase_label(status) == expected


def test_keep_logs_copies_beside_the_node_state_and_replaces_the_last_copy(tmp_path: Path) -> None:
    from kubestill.dev.demo import keep_logs

    state = tmp_path / "dev"
    (state / "logs").mkdir(parents=True)
    (state / "logs" / "kubelet.log").write_text("kubelet\n")
    root = state / "controlplane" / "demo"
    root.mkdir(parents=True)
    (root / "operator.log").write_text("operator\n")
    (root / "notes.txt").write_text("not a log\n")
    stale = tmp_path / "dev-demo-logs"
    stale.mkdir()
    (stale / "old.log").write_text("from the demo before\n")

    kept = keep_logs(root, state)
    shutil.rmtree(state)  # what stopping the real node does
    assert kept == stale
    assert sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file()) == [
        "node/kubelet.log", "operator.log"]
    assert (kept / "operator.log").read_text() == "operator\n"
