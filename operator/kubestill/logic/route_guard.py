"""When a CanaryRollout may write its HTTPRoute, when it gives the route back, and what a delete does. Pure.

The rollout holds the finalizer `kubestill.io/route-restore` from before its first route write until the route
is in its final state (or, on delete, restored); kubestill writes a route only for a rollout that holds it. Then
kubestill's server-side apply ownership of the route is given back, so a GitOps tool applies the route again
without conflicts, and the rollout is marked released (RouteRecord.releasedAt): it never writes the route again.

Worked examples (`final`: rolled back, failed, or promoted with the baseline released):

- new rollout, about to set its first weight          -> Hold: add the finalizer and the record, then write
- holding, stepping                                   -> Write
- holding, final, route observed final                -> release: give ownership back, drop the finalizer
- finished before it ever held one (aborted while
  Pending, or finished under an older operator)       -> Settle: give ownership back once, never write
- released                                            -> Done: never write again
- deleted while stepping, shadowing, paused, rolled
  back but not yet released                           -> Restore the recorded rule, then release
- deleted while promoted                              -> keep the promotion (candidate at 100), then release
- restore impossible for a bound after the delete
  (rule or baseline removed, writes refused)          -> release anyway, with a Warning saying what was left
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from kubestill.api.names import ROUTE_RECORD_ANNOTATION, ROUTE_RESTORE_FINALIZER
from kubestill.api.route_record import RouteRecord
from kubestill.api.v1alpha1.canaryrollout import CanaryRolloutStatus, RolloutPhase


class Gate(StrEnum):
    WRITE = "Write"
    HOLD = "Hold"
    SETTLE = "Settle"
    DONE = "Done"


class OnDelete(StrEnum):
    RESTORE = "Restore"
    KEEP_PROMOTION = "KeepPromotion"


def route_final(status: CanaryRolloutStatus) -> bool:
    """True once the status will never ask for another route change.

    >>> route_final(CanaryRolloutStatus(phase="RolledBack"))
    True
    >>> route_final(CanaryRolloutStatus(phase="Promoted"))  # the baseline is kept: an abort may still roll back
    False
    """
    if status.phase in (RolloutPhase.ROLLED_BACK, RolloutPhase.FAILED):
        return True
    return status.phase == RolloutPhase.PROMOTED and status.baseline_released_at is not None


def holds(meta: Mapping[str, Any]) -> bool:
    """The object carries the route-restore finalizer."""
    return ROUTE_RESTORE_FINALIZER in (meta.get("finalizers") or [])


def record_of(meta: Mapping[str, Any]) -> RouteRecord | None:
    return RouteRecord.loads((meta.get("annotations") or {}).get(ROUTE_RECORD_ANNOTATION))


def gate(holding: bool, record: RouteRecord | None, final: bool) -> Gate:
    """What to do before a route write.

    >>> gate(False, None, False).value, gate(True, None, False).value, gate(False, None, True).value
    ('Hold', 'Write', 'Settle')
    """
    if record is not None and record.released_at is not None:
        return Gate.DONE
    if holding:
        return Gate.WRITE
    return Gate.SETTLE if final else Gate.HOLD


def on_delete(status: CanaryRolloutStatus) -> OnDelete:
    """A promoted rollout keeps its promotion (the candidate serves everything); any other is restored."""
    return OnDelete.KEEP_PROMOTION if status.phase == RolloutPhase.PROMOTED else OnDelete.RESTORE


def restore_overdue(deleted_at: datetime | None, now: datetime, bound: timedelta) -> bool:
    """True when a deleted rollout has waited `bound` (settings: KUBESTILL_ROUTE_RESTORE_TIMEOUT) for its
    route: release it regardless, so a route that cannot be written never blocks a delete for good.

    >>> from datetime import UTC
    >>> t, bound = datetime(2026, 1, 1, tzinfo=UTC), timedelta(minutes=5)
    >>> restore_overdue(t, t + timedelta(minutes=4), bound), restore_overdue(t, t + timedelta(minutes=5), bound)
    (False, True)
    """
    return deleted_at is not None and now - deleted_at >= bound


def other_holders(rollouts: Iterable[Mapping[str, Any]], name: str, route: str) -> list[str]:
    """Other rollouts on the same route that may still write it (they hold the finalizer, or are not finished):
    kubestill's field manager is shared by every rollout, so its ownership is given back by the last of them.
    (The handler lists the rollouts labelled with the route, i.e. those that hold it.)
    """
    out = []
    for body in rollouts:
        meta = body.get("metadata") or {}
        if meta.get("name") == name or ((body.get("spec") or {}).get("route") or {}).get("name") != route:
            continue
        try:
            status = CanaryRolloutStatus.model_validate(body.get("status") or {})
        except ValueError:
            status = CanaryRolloutStatus()
        record = record_of(meta)
        released = record is not None and record.released_at is not None
        # Pending ones have not written yet (they force their way in when they do); older-version rollouts
        # that are stepping hold no finalizer yet but still write.
        started = status.phase != RolloutPhase.PENDING
        if holds(meta) or (started and not (released or route_final(status))):
            out.append(str(meta.get("name")))
    return sorted(out)
