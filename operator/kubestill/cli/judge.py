"""`kubestill judge`: the agreement judge of a CanaryRollout (kubestill.judge), one process per rollout.

Every flag has a KUBESTILL_JUDGE_<FLAG> variable (e.g. KUBESTILL_JUDGE_MAX_RPS); a flag given wins."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

from kubestill.api.v1alpha1.common import Task

# flag -> (type, default, help); the dest is the flag with underscores, the variable KUBESTILL_JUDGE_<DEST>.
_FLAGS: dict[str, tuple[type, Any, str]] = {
    "task": (str, None, " | ".join(t.value for t in Task)),
    "baseline": (str, None, "base URL of the baseline (the teacher's Service), e.g. http://teacher:8000"),
    "candidate": (str, None, "base URL of the candidate (the student's Service)"),
    "sample": (float, 100.0, "percent of mirrored requests judged (0-100]"),
    "max-rps": (float, 10.0, "most requests per second sent to the baseline; the rest are counted, not queued"),
    "timeout": (float, 10.0, "seconds to wait for each side's answer"),
    "max-in-flight": (int, 64, "most comparisons at once; the rest are counted as busy"),
    "segment-header": (str, "X-Kubestill-Segment", "header naming the request's segment ('' for none)"),
    "segment-field": (str, "segment", "body field naming the segment (v2 parameters, OpenAI metadata, top level)"),
    "max-segments": (int, 20, "most distinct segments in the metrics; later ones read as 'other'"),
    "cosine-threshold": (float, 0.9, "embedding: cosine at or above which the two vectors agree"),
    "listen": (str, "0.0.0.0", "address to listen on"),
    "port": (int, 8080, "port the gateway mirrors requests to"),
    "metrics-port": (int, 9090, "port of /metrics and /healthz"),
}


def _env_name(flag: str) -> str:
    return "KUBESTILL_JUDGE_" + flag.replace("-", "_").upper()


def cmd_judge(args: argparse.Namespace) -> int:
    from kubestill.judge.server import Judge, run_forever
    from kubestill.judge.settings import JudgeSettings

    missing = [f"--{f} ({_env_name(f)})" for f in ("task", "baseline", "candidate") if not getattr(args, f)]
    if missing:
        raise SystemExit(f"kubestill judge: missing {', '.join(missing)}")
    try:
        task = Task(args.task)
    except ValueError as exc:
        raise SystemExit(f"kubestill judge: --task must be one of {', '.join(t.value for t in Task)}") from exc
    try:
        settings = JudgeSettings(
            task=task, baseline=args.baseline, candidate=args.candidate, sample=args.sample,
            max_rps=args.max_rps, timeout=args.timeout, max_in_flight=args.max_in_flight,
            segment_header=args.segment_header, segment_field=args.segment_field, max_segments=args.max_segments,
            cosine_threshold=args.cosine_threshold)
    except ValueError as exc:
        raise SystemExit(f"kubestill judge: {exc}") from exc
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_forever(Judge(settings), args.listen, args.port, args.metrics_port))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("judge", help="compare a candidate's answers with the baseline's on mirrored requests")
    for flag, (kind, default, text) in _FLAGS.items():
        env = os.environ.get(_env_name(flag))
        p.add_argument(f"--{flag}", type=kind, default=kind(env) if env is not None else default,
                       help=f"{text} [{_env_name(flag)}; default {default}]")
    p.set_defaults(func=cmd_judge)
