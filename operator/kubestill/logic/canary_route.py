"""Which rollout may write a route rule, and which candidates can never be rolled out (pure).

Two CanaryRollouts on one (HTTPRoute, ruleIndex) would each write `baseline = 100 - own weight` and leave the
other's candidate alone: weights summing to 110-140 that flip every round, and two statuses that each report
a share no candidate gets. So one rollout holds a rule at a time: the oldest (creationTimestamp, then name)
of those that hold it (holds_route: from Pending until the route is seen in its final state); the others
wait, with a RouteConflict condition naming the holder, and never write the route. Every operator replica
computes the same holder from the same objects.

Worked example (rule 0 of route `r`):
- `one` (created 10:00, Progressing) and `two` (10:05, Pending)   -> `one` holds; `two` waits, naming `one`
- `one` RolledBack, its route seen at baseline 100%                -> `two` holds and starts
- `one` Promoted, baseline still kept                              -> `one` still holds (the rule is not final)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kubestill.api.v1alpha1.canaryrollout import BackendRef


@dataclass(frozen=True, order=True)
class RouteClaim:
    """A rollout's claim on a route rule, as the index of CanaryRollouts records it. Ordered by age."""

    created: str  # metadata.creationTimestamp, RFC 3339 in UTC: sorts as time
    name: str
    route: str
    rule: int
    holds: bool


def route_holder(claims: Iterable[RouteClaim], route: str, rule: int) -> str | None:
    """The rollout that holds rule `rule` of `route`: the oldest claim that holds it, else None.

    >>> claims = [RouteClaim("2026-01-01T10:05:00Z", "two", "r", 0, True),
    ...           RouteClaim("2026-01-01T10:00:00Z", "one", "r", 0, True),
    ...           RouteClaim("2026-01-01T09:00:00Z", "old", "r", 0, False),
    ...           RouteClaim("2026-01-01T08:00:00Z", "other-rule", "r", 1, True)]
    >>> route_holder(claims, "r", 0)
    'one'
    >>> route_holder(claims, "r", 2) is None
    True
    """
    holding = sorted(c for c in claims if c.route == route and c.rule == rule and c.holds)
    return holding[0].name if holding else None


def conflict_message(route: str, rule: int, holder: str) -> str:
    return (
        f"HTTPRoute {route} rule {rule} is being rolled out by CanaryRollout {holder}; this rollout waits until "
        f"{holder} ends (promoted and its baseline released, or rolled back) or is deleted"
    )


def candidate_invalid(baseline: BackendRef, candidate: BackendRef) -> str | None:
    """Why `candidate` can never be rolled out against `baseline`, or None.

    The baseline itself as the candidate would leave the rule's only backend at weight 0 after promotion
    (every request answered with an error). The CRD refuses `candidate.service == baseline`; a StudentModel's
    Service is only known at run time, so it is checked here too.

    >>> candidate_invalid(BackendRef(name="t", port=80), BackendRef(name="t", port=80))
    'the candidate Service t:80 is the baseline itself'
    >>> candidate_invalid(BackendRef(name="t", port=80), BackendRef(name="s", port=80)) is None
    True
    """
    if candidate.name == baseline.name and candidate.port == baseline.port:
        return f"the candidate Service {candidate.name}:{candidate.port} is the baseline itself"
    return None
