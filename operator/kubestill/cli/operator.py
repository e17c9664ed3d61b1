"""`kubestill operator`: run the kopf operator (DistillationJob, StudentModel, CanaryRollout handlers)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any


def cmd_operator(args: argparse.Namespace) -> int:
    # kopf probes for the `kubernetes` client at import only to recognise its model classes; the operator
    # talks to the API through kubestill.clients (aiohttp), so keeping that package out saves ~45 MB RSS.
    if "kubernetes" not in sys.modules:
        sys.modules["kubernetes"] = None  # type: ignore[assignment]
    import kopf

    from kubestill import settings

    kopf.configure(verbose=args.verbose, debug=args.debug, log_format=kopf.LogFormat[args.log_format.upper()])
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if not (args.verbose or args.debug):
        # "Handler ... succeeded" for every watch event is noise at scale; kubestill logs its transitions.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    import kubestill.main  # noqa: F401  (registers the handlers)

    s = settings.from_env()
    namespaces = [] if args.all_namespaces else (args.namespace or list(s.namespaces))
    peering = None if args.standalone else (args.peering or s.peering or None)
    if peering is not None:
        import asyncio

        from kubestill.handlers.peering_wait import wait_before_kopf

        asyncio.run(wait_before_kopf(peering, namespaces))
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=peering is None,
        peering_name=peering,
        priority=args.priority,
        liveness_endpoint=args.liveness or None,
    )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("operator", help="run the operator (kopf) against the current kubeconfig or in-cluster")
    p.add_argument("-n", "--namespace", action="append", default=[],
                   help="watch only this namespace (repeatable; default: KUBESTILL_NAMESPACES or all)")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    p.add_argument("--peering", default="", help="kopf peering name for leader election (KUBESTILL_PEERING)")
    p.add_argument("--standalone", action="store_true", help="no peering, even if KUBESTILL_PEERING is set")
    p.add_argument("--priority", type=int, default=None, help="kopf peering priority of this replica")
    p.add_argument("--liveness", default="", help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    p.add_argument("--log-format", default="plain", choices=["plain", "full", "json"])
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=cmd_operator)
