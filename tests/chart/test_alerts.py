"""The chart's PrometheusRule, rendered by helm, is valid for Prometheus and fires on the series the operator
exports (operator/kubestill/clients/metrics.py, handlers/reconciler.py): checked with `promtool test rules`,
which evaluates the rules on synthetic series (Debian's prometheus package; scripts/setup.sh installs it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .helm import CHART, Helm, one

pytestmark = pytest.mark.integration

RELEASE, NAMESPACE = "ks", "kubestill"
UP_JOB = f'up{{job="{RELEASE}-kubestill-metrics", namespace="{NAMESPACE}"}}'


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: install Debian's prometheus package (scripts/setup.sh does)")
    return found


def _rule_groups(helm: Helm) -> list[dict[str, Any]]:
    objs = helm.manifests([CHART / "ci" / "monitoring-values.yaml"], release=RELEASE, namespace=NAMESPACE)
    groups: list[dict[str, Any]] = one(objs, "PrometheusRule")["spec"]["groups"]
    return groups


def test_rules_are_valid_prometheus_rules(helm: Helm, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": _rule_groups(helm)}))
    result = subprocess.run([_promtool(), "check", "rules", str(rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # Three built-in alerts, the operator-down alert, and the scenario's additional rule.
    assert "SUCCESS: 5 rules found" in result.stdout


# The annotations as a person reads them, $labels expanded (this also proves Helm left {{ $labels.x }} intact).
ANNOTATIONS = {
    "KubestillCanaryRolledBack": {
        "summary": "CanaryRollout shop/search-student rolled back",
        "description": "Traffic went back to the baseline. See `kubectl describe canary -n shop search-student` "
        "for the analysis that failed.",
    },
    "KubestillCanaryFailed": {
        "summary": "CanaryRollout shop/search-student failed",
        "description": "The rollout cannot proceed (e.g. its HTTPRoute or candidate is missing); see its conditions.",
    },
    "KubestillReconcileErrors": {
        "summary": "kubestill keeps failing to reconcile DistillationJob objects",
        "description": f"See the operator's log (`kubectl logs -n {NAMESPACE} deploy/{RELEASE}-kubestill`).",
    },
    "KubestillOperatorDown": {
        "summary": f"No kubestill operator replica is up in {NAMESPACE}",
        "description": "Rollouts are not analysed or rolled back while the operator is down.",
    },
}


def _alert(name: str, at: str, labels: list[dict[str, str]]) -> dict[str, Any]:
    expected = [{"exp_labels": x, "exp_annotations": ANNOTATIONS[name]} for x in labels]
    return {"alertname": name, "eval_time": at, "exp_alerts": expected}


def test_alerts_fire_on_the_operator_series(helm: Helm, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": _rule_groups(helm)}))
    rollout = {"namespace": "shop", "name": "search-student"}
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # One rollback at minute 5 of rollout shop/search-student; none for shop/other.
                    {
                        "series": 'kubestill_canary_rollbacks_total{namespace="shop", name="search-student"}',
                        "values": "0 0 0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
                    },
                    {"series": 'kubestill_canary_rollbacks_total{namespace="shop", name="other"}', "values": "0x40"},
                    {
                        "series": 'kubestill_canary_phase{namespace="shop", name="search-student", phase="Failed"}',
                        "values": "0x10 1x30",
                    },
                    {
                        "series": 'kubestill_reconciles_total{kind="DistillationJob", result="error"}',
                        "values": "0+1x80",
                    },
                    {"series": 'kubestill_reconciles_total{kind="CanaryRollout", result="error"}', "values": "3x80"},
                    # The operator answers scrapes for 20 minutes, then disappears.
                    {"series": UP_JOB, "values": "1x20"},
                ],
                "alert_rule_test": [
                    _alert("KubestillCanaryRolledBack", "2m", []),
                    _alert("KubestillCanaryRolledBack", "10m", [{**rollout, "severity": "page"}]),
                    # The window (30m in this scenario) has passed: resolved.
                    _alert("KubestillCanaryRolledBack", "39m", []),
                    _alert("KubestillCanaryFailed", "12m", []),
                    _alert("KubestillCanaryFailed", "20m", [{**rollout, "severity": "page"}]),
                    _alert("KubestillReconcileErrors", "20m", []),
                    _alert("KubestillReconcileErrors", "70m", [{"kind": "DistillationJob", "severity": "page"}]),
                    _alert("KubestillOperatorDown", "15m", []),
                    _alert("KubestillOperatorDown", "35m", [{"severity": "critical"}]),
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    result = subprocess.run([_promtool(), "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
