"""`kubestill status`: DistillationJobs (phase, stages, progress, gate) and StudentModels (serving) at a glance."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kubestill.api.v1alpha1 import API_VERSION
from kubestill.api.v1alpha1.distillationjob import StageState

if TYPE_CHECKING:
    from kubestill.clients.kube import KubeClient

STAGES = ("label", "train", "evaluate", "export")
_MARK = {StageState.SUCCEEDED: "✓", StageState.FAILED: "✗", StageState.RUNNING: "…", StageState.PENDING: "·"}


def _stages(st: Mapping[str, Any]) -> str:
    stages = st.get("stages") or {}
    return " ".join(f"{s}{_MARK.get((stages.get(s) or {}).get('state', 'Pending'), ' ')}" for s in STAGES)


def _progress(st: Mapping[str, Any]) -> str:
    p = st.get("progress") or {}
    if not p:
        return "-"
    text = f"{p.get('percent', 0):.0f}%"
    if st.get("phase") == "Training" and p.get("eta"):
        text += f" eta {str(p['eta'])[11:19]}"
    return text


def _gate(st: Mapping[str, Any]) -> str:
    gate = st.get("gate")
    if not gate:
        return "-"
    ratio = st.get("qualityRatio")
    head = "passed" if gate.get("passed") else "FAILED"
    return f"{head} q={ratio:.3f}" if isinstance(ratio, int | float) else head


def job_rows(items: Sequence[Mapping[str, Any]], all_namespaces: bool) -> list[list[str]]:
    rows = []
    for dj in items:
        st = dj.get("status") or {}
        row = [dj["metadata"]["name"], st.get("phase", "Pending"), _stages(st), _progress(st), _gate(st),
               f"{st['speedup']:.1f}x" if isinstance(st.get("speedup"), int | float) else "-",
               (st.get("studentModel") or {}).get("name", "-"), (st.get("message") or "")[:70]]
        rows.append(([dj["metadata"]["namespace"]] if all_namespaces else []) + row)
    return rows


def model_rows(items: Sequence[Mapping[str, Any]], all_namespaces: bool) -> list[list[str]]:
    rows = []
    for sm in items:
        st, spec = sm.get("status") or {}, sm.get("spec") or {}
        replicas = (spec.get("serving") or {}).get("replicas", 1)
        row = [sm["metadata"]["name"], spec.get("task", ""), st.get("phase", "Pending"),
               f"{st.get('readyReplicas', 0)}/{replicas}", (st.get("endpoint") or {}).get("http", "-"),
               spec.get("sourceJob") or "-"]
        rows.append(([sm["metadata"]["namespace"]] if all_namespaces else []) + row)
    return rows


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


async def _fetch(api: KubeClient, namespace: str | None, all_namespaces: bool) -> tuple[list[Any], list[Any]]:
    """DistillationJobs and StudentModels of the namespace (or of all), read with the operator's client."""
    scope = None if all_namespaces else (namespace or api.info.default_namespace or "default")
    jobs = await api.list(API_VERSION, "DistillationJob", scope)
    models = await api.list(API_VERSION, "StudentModel", scope)
    return jobs, models


def cmd_status(args: argparse.Namespace) -> int:
    from .cluster import run

    jobs, models = run(lambda api: _fetch(api, args.namespace, args.all_namespaces))
    ns = ["NAMESPACE"] if args.all_namespaces else []
    print(table([*ns, "JOB", "PHASE", "STAGES", "PROGRESS", "GATE", "SPEEDUP", "STUDENT", "MESSAGE"],
                job_rows(jobs, args.all_namespaces)))
    print()
    print(table([*ns, "STUDENTMODEL", "TASK", "PHASE", "READY", "ENDPOINT", "FROM JOB"],
                model_rows(models, args.all_namespaces)))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="DistillationJobs and StudentModels: stages, progress, gates, serving")
    p.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig's, else default)")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.set_defaults(func=cmd_status)
