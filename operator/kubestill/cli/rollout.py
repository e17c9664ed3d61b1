"""`kubestill rollout promote|abort|pause|resume|status NAME -n NS`: manual control of a CanaryRollout.

Controls are annotations (`kubestill.io/promote` ...) whose value is a fresh timestamp: the operator acts once
per new value and records it in status.handledAnnotations. The CLI never writes status, so it cannot race
the operator; the same annotations work from `kubectl annotate` or a GitOps commit.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kubestill.api.v1alpha1 import API_VERSION
from kubestill.api.v1alpha1.canaryrollout import (
    ANNOTATION_ABORT,
    ANNOTATION_PAUSE,
    ANNOTATION_PROMOTE,
    ANNOTATION_RESUME,
    KIND,
    RolloutPhase,
)

if TYPE_CHECKING:  # the client is imported by the commands that run, not by `kubestill --help`
    from kubestill.clients.kube import KubeClient

CONTROLS = {
    "promote": ANNOTATION_PROMOTE,
    "abort": ANNOTATION_ABORT,
    "pause": ANNOTATION_PAUSE,
    "resume": ANNOTATION_RESUME,
}
TERMINAL = (RolloutPhase.PROMOTED, RolloutPhase.ROLLED_BACK, RolloutPhase.FAILED)


def control_value(full: bool = False, now: datetime | None = None) -> str:
    """A value never used before (a timestamp); `full/` in front asks promote to skip every remaining step."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"full/{stamp}" if full else stamp


def cmd_control(args: argparse.Namespace) -> int:
    from .cluster import run

    annotation = CONTROLS[args.action]
    value = control_value(full=getattr(args, "full", False))
    patch = {"metadata": {"annotations": {annotation: value}}}
    run(lambda api: api.merge_patch(API_VERSION, KIND, args.namespace, args.name, patch))
    print(f"canaryrollout {args.namespace}/{args.name}: {args.action} requested ({annotation}={value})")
    return 0


def _age(ts: str | None, now: datetime) -> str:
    if not ts:
        return "-"
    delta = (datetime.fromisoformat(ts.replace("Z", "+00:00")) - now).total_seconds()
    return f"in {delta:.0f}s" if delta >= 0 else f"{-delta:.0f}s ago"


def format_status(obj: dict[str, Any], now: datetime) -> str:
    """A human summary of a CanaryRollout's status (what `kubestill rollout status` prints)."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    steps = spec.get("steps") or []
    step = status.get("currentStep", -1)
    lines = [
        f"Name:     {obj['metadata']['namespace']}/{obj['metadata']['name']}",
        f"Phase:    {status.get('phase', 'Pending')}",
        f"Step:     {step + 1}/{len(steps)}" + ("  (shadow)" if status.get("shadowing") else ""),
        f"Weight:   {status.get('currentWeight', 0)}% to the candidate",
        f"Next:     {_age(status.get('nextStepAt'), now)}",
        f"Message:  {status.get('message', '')}",
    ]
    route = next((c for c in status.get("conditions") or [] if c.get("type") == "RouteReady"), None)
    if route is not None:
        lines.insert(4, f"Route:    {'ready' if route.get('status') == 'True' else route.get('reason', '')}: "
                        f"{route.get('message', '')}")
    measurements = status.get("measurements") or []
    if measurements:
        lines.append("Latest measurements:")
        latest: dict[str, dict[str, Any]] = {}
        for m in measurements:
            latest[m["metric"]] = m
        for m in latest.values():
            value = "-" if m.get("value") is None else f"{m['value']:.6g}"
            lines.append(f"  {m['metric']:<24} {value:>12}  {m['result']:<12} {m.get('message', '')}")
    history = status.get("history") or []
    if history:
        lines.append("History:")
        for h in history[-10:]:
            lines.append(f"  {h['at']}  {h['action']:<16} step {h['step']:>2}  weight {h['weight']:>3}  {h['reason']}")
    return "\n".join(lines)


async def _watch(api: KubeClient, args: argparse.Namespace) -> int:
    from kubestill.clients.kube import ApiError

    while True:
        obj = await api.get(API_VERSION, KIND, args.namespace, args.name)
        if obj is None:
            raise ApiError(404, "NotFound", f"canaryrollout {args.namespace}/{args.name} not found")
        print(format_status(obj, datetime.now(UTC)), flush=True)
        phase = (obj.get("status") or {}).get("phase")
        if not args.watch or phase in TERMINAL:
            return 0 if phase != "RolledBack" else 3
        print()
        await asyncio.sleep(args.interval)


def cmd_status(args: argparse.Namespace) -> int:
    from .cluster import run

    return run(lambda api: _watch(api, args))


def register(sub: Any) -> None:
    rollout = sub.add_parser("rollout", help="control and watch CanaryRollouts")
    actions = rollout.add_subparsers(dest="action", required=True)
    helps = {
        "promote": "skip the current pause (with --full: every remaining step)",
        "abort": "roll back now: all traffic to the baseline",
        "pause": "hold at the current step",
        "resume": "continue after a pause (including one taken for inconclusive analysis)",
    }
    for action, text in helps.items():
        p = actions.add_parser(action, help=text)
        p.add_argument("name")
        p.add_argument("-n", "--namespace", default="default")
        if action == "promote":
            p.add_argument("--full", action="store_true", help="promote to 100%% at once")
        p.set_defaults(func=cmd_control)
    status = actions.add_parser("status", help="phase, step, weight, measurements and history")
    status.add_argument("name")
    status.add_argument("-n", "--namespace", default="default")
    status.add_argument("-w", "--watch", action="store_true", help="repeat until Promoted or RolledBack")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes with --watch")
    status.set_defaults(func=cmd_status)

