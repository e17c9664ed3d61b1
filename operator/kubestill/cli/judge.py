"""`kubestill judge`: the agreement judge of a CanaryRollout (kubestill.judge), one process per rollout.

Every setting is a flag or a KUBESTILL_JUDGE_<NAME> variable (kubestill.api.judge: what the operator's Deployment
sets); a flag given wins. Both go through JudgeSettings.from_env, so the two cannot disagree."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from dataclasses import MISSING, fields
from typing import Any

from kubestill.api.judge import METRICS_PORT, MIRROR_PORT, JudgeSettings, env_name
from kubestill.api.v1alpha1.common import Task

_HELP = {
    "task": " | ".join(t.value for t in Task),
    "baseline": "base URL of the baseline (the teacher's Service), e.g. http://teacher-triton:8000",
    "candidate": "base URL of the candidate (the student's Service)",
    "sample": "percent of mirrored requests judged, in (0, 100]",
    "max_rps": "most requests per second sent to the baseline; the rest are counted, not queued",
    "timeout": "seconds to wait for each side's answer",
    "max_in_flight": "most comparisons at once; the rest are counted as busy",
    "segment_header": "header naming the request's segment ('' for none)",
    "segment_field": "body field naming the segment (v2 parameters, OpenAI metadata, top level)",
    "max_segments": "most distinct segments in the metrics; later ones read as 'other'",
    "cosine_threshold": "embedding: cosine at or above which the two vectors agree",
}


def cmd_judge(args: argparse.Namespace) -> int:
    from kubestill.judge.server import Judge, run_forever

    env = dict(os.environ)
    for f in fields(JudgeSettings):
        if getattr(args, f.name) is not None:
            env[env_name(f.name)] = getattr(args, f.name)
    try:
        settings = JudgeSettings.from_env(env)
    except ValueError as exc:
        message = str(exc)
        for f in fields(JudgeSettings):  # name the flag too: the user may have used either
            message = message.replace(env_name(f.name), f"--{f.name.replace('_', '-')}/{env_name(f.name)}")
        raise SystemExit(f"kubestill judge: {message}") from exc
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_forever(Judge(settings), args.listen, args.port, args.metrics_port))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("judge", help="compare a candidate's answers with the baseline's on mirrored requests")
    for f in fields(JudgeSettings):
        default = "required" if f.default is MISSING else f"default {f.default}"
        p.add_argument(f"--{f.name.replace('_', '-')}", default=None,
                       help=f"{_HELP[f.name]} [{env_name(f.name)}; {default}]")
    p.add_argument("--listen", default=os.environ.get(env_name("listen"), "0.0.0.0"),
                   help=f"address to listen on [{env_name('listen')}; default 0.0.0.0]")
    p.add_argument("--port", type=int, default=int(os.environ.get(env_name("port"), MIRROR_PORT)),
                   help=f"port the gateway mirrors requests to [{env_name('port')}; default {MIRROR_PORT}]")
    p.add_argument("--metrics-port", type=int, default=int(os.environ.get(env_name("metrics_port"), METRICS_PORT)),
                   help=f"port of /metrics and /healthz [{env_name('metrics_port')}; default {METRICS_PORT}]")
    p.set_defaults(func=cmd_judge)
