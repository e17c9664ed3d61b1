"""The controller runtime: the plumbing every kind shares, written once.

kopf keeps the watches, the in-memory indexes, peering and the probes. On top of it, one `Controller` per kind
(controller.py), generic over the kind's Spec and Status models, owns:

- the watch cache (cache.py): kopf's indexes stay the source; the cache adds the body our last status write
  returned, which also recognises the watch echo of that write (skipped: its reconcile already acted);
- the reconciler (reconciler.py): one reconcile at a time per object, events during a run coalesced into one
  more run, failures retried with backoff, an operator-wide bound on concurrent reconciles;
- expectations for created children (expectations.py), so a child whose watch event trails the next
  reconcile is never created twice;
- ONE status writer (status.py) with an explicit per-kind policy: Coalesced (DistillationJob bursts),
  Conditional on resourceVersion (CanaryRollout), Immediate (StudentModel).

A kind brings a `Kind`: its reconcile as observe (reads) -> a pure typed `decide(spec, status, observed, now)`
in kubestill.logic -> apply (writes), plus what to drop when an object goes.

Wiring, and why through kopf's `memo`: nothing here, in handlers/ or in clients/ is module-level mutable state
(only prometheus_client's metric objects, which register themselves globally by that library's design). main.py's
start-up handler builds the controllers, with their settings and the client accessor, into one
`handlers.operator.Operator` and stores it on kopf's operator-wide `memo`; kopf hands every handler a shallow
copy of that memo, so each decorator in main.py reaches the same controllers as `memo.kubestill`. The
alternative, a registry at module level in main.py, would be the global this package exists to remove, and
tests would share it; with `memo`, a test builds its own Operator (or Controller with a fake client) and a
second operator in one process would not see the first's state. The Kubernetes client itself is built by
kopf's login handler, which kopf runs after start-up (and again when credentials are refused): controllers
therefore take a function returning it, the Operator's `clients.kube.Connection`, which login fills in. The
Event recorder and the Prometheus clients (with their ALERTS cache) are the Operator's too.
"""

from .cache import WatchCache
from .controller import Controller, Kind
from .expectations import Expectations, InFlight
from .keys import Key, first_indexed, key_of, newer, owner_key
from .reconciler import Reconciler, ReconcileSlots
from .status import Coalesced, Conditional, Immediate, StatusPolicy, StatusWriter, status_patch
from .status_lane import StatusLane

__all__ = [
    "Coalesced",
    "Conditional",
    "Controller",
    "Expectations",
    "Immediate",
    "InFlight",
    "Key",
    "Kind",
    "ReconcileSlots",
    "Reconciler",
    "StatusLane",
    "StatusPolicy",
    "StatusWriter",
    "WatchCache",
    "first_indexed",
    "key_of",
    "newer",
    "owner_key",
    "status_patch",
]
