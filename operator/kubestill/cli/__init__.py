"""The `kubestill` command. Each sub-command group lives in its own module with a `register(subparsers)`."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Sequence

from . import crds, dev, judge, operator, rollout, servecheck, status

Command = Callable[[argparse.Namespace], int]

# Sub-command modules, in help order. Each defines register(subparsers) and sets `func` on its parsers.
MODULES = [crds, dev, operator, status, rollout, judge, servecheck]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubestill", description="kubestill: knowledge distillation as Kubernetes resources."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in MODULES:
        module.register(sub)
    return parser


def api_error_message(exc: BaseException) -> str | None:
    """The API server's own words for a failed Kubernetes call (kubernetes' ApiException), else None.

    Matched by module rather than imported: importing the kubernetes client is slow and most commands skip it.
    """
    if not type(exc).__module__.startswith("kubernetes.") or not hasattr(exc, "status"):
        return None
    message = getattr(exc, "reason", "") or ""
    with contextlib.suppress(ValueError, AttributeError):
        message = json.loads(getattr(exc, "body", "") or "{}").get("message") or message
    return f"{message} (HTTP {exc.status})"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except Exception as exc:
        message = api_error_message(exc) or _cluster_error(exc)
        if message is None:
            raise
        print(f"kubestill {args.command}: {message}", file=sys.stderr)
        return 1


def _cluster_error(exc: BaseException) -> str | None:
    """The one line for a production command that could not reach the cluster (see cli.cluster)."""
    if "kubestill.cli.cluster" not in sys.modules:  # only the commands that talk to a cluster load it
        return None
    from .cluster import error_line

    return error_line(exc)


if __name__ == "__main__":
    sys.exit(main())
