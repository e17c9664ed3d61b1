"""`kubestill servecheck`: the serving check of a StudentModel (kubestill.servecheck), run by the operator as a
Job from its own image. The request is KUBESTILL_SERVECHECK_REQUEST (kubestill.api.served, set by the Job) or,
by hand, the flags. The result is one JSON object on stdout and in the termination log
(KUBESTILL_TERMINATION_LOG, the container's terminationMessagePath); exit code 0 when it measured, 1 when not."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from kubestill.api.names import TERMINATION_LOG_ENV
from kubestill.api.served import REQUEST_ENV, ServeCheckRequest, ServeCheckResult
from kubestill.api.v1alpha1.common import Task


def _request(args: argparse.Namespace) -> ServeCheckRequest:
    if args.url is None:
        return ServeCheckRequest.from_env(os.environ)
    if not args.model or not args.task:
        raise ValueError("--url needs --model and --task")
    return ServeCheckRequest(url=args.url, model_name=args.model, task=args.task, concurrency=args.concurrency,
                             duration_seconds=args.duration, warmup_seconds=args.warmup, texts=args.text or [])


def cmd_servecheck(args: argparse.Namespace) -> int:
    from kubestill.servecheck.run import run_check

    try:
        result = run_check(_request(args))
    except ValueError as err:
        result = ServeCheckResult(ok=False, message=str(err))
    text = result.to_text()
    print(text, flush=True)
    log = os.environ.get(TERMINATION_LOG_ENV)
    if log:
        try:
            Path(log).write_text(text)
        except OSError as err:  # the result is on stdout too (FallbackToLogsOnError reads it there)
            print(f"kubestill servecheck: cannot write {log}: {err}", file=sys.stderr)
    return 0 if result.ok else 1


def register(sub: Any) -> None:
    p = sub.add_parser("servecheck", help="measure a served model's latency and throughput over HTTP (closed loop)")
    p.add_argument("--url", default=None, help=f"Triton HTTP base URL; unset: the request in {REQUEST_ENV}")
    p.add_argument("--model", default=None, help="model name in Triton's repository")
    p.add_argument("--task", default=None, choices=[t.value for t in Task])
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight at once [8]")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds [10]")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before [2]")
    p.add_argument("--text", action="append", help="an input text (repeat); none: the built-in sample")
    p.set_defaults(func=cmd_servecheck)
