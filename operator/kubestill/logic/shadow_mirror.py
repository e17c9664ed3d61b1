"""When the TraefikService of a shadow step (spec.shadow.mirror: TraefikService) may be deleted. Pure.

The route stops naming the TraefikService when the shadow step ends (the next step, a promotion, a rollback); the
TraefikService itself goes a little later: Traefik applies each provider's configuration on its own (the route
comes through its kubernetesgateway provider, the TraefikService through kubernetescrd, each throttled by
providersThrottleDuration, 2 s by default), so a TraefikService deleted at once could vanish from Traefik's
configuration before the route that names it changes, and that rule would answer errors meanwhile. The time the
route was first seen without it is already in status (the step's, the promotion's or the settled route's clock),
so the decision survives a restart.

Worked examples (grace 10 s; `t`: when the route was first observed without the TraefikService):

- mirror RequestMirror, or no shadow step                    -> never (there is no TraefikService)
- still shadowing (or never started)                         -> never (the route needs it)
- step 0 decided, route not yet seen carrying it             -> not yet (no clock)
- step 0 carried since t                                     -> at t + 10 s
- promoted from the shadow (promotedAt t), rolled back (t)   -> at t + 10 s
- with agreement analysis, any step still running             -> never (it mirrors to the judge)
"""

from __future__ import annotations

from datetime import datetime, timedelta

from kubestill.api.v1alpha1.canaryrollout import (
    CanaryRolloutSpec,
    CanaryRolloutStatus,
    RolloutPhase,
    ShadowMirror,
)

from .canary import ACTIVE_PHASES, step_entered

# Five times Traefik's default providersThrottleDuration (2 s): both providers have delivered by then.
MIRROR_RELEASE_GRACE = timedelta(seconds=10)
# The same race the other way round: a route that names a TraefikService Traefik's kubernetescrd provider has not
# delivered yet is dropped by Traefik ("the service ... does not exist"), and its requests answered 404, until it
# has. Seen on the real node under load: one 404 in 570 requests as a shadow step started. So a TraefikService
# is named by the route only once it is this old.
MIRROR_SETTLE_GRACE = MIRROR_RELEASE_GRACE


def uses_traefik_service(spec: CanaryRolloutSpec) -> bool:
    """The rollout's shadow step mirrors through a TraefikService."""
    return spec.shadow is not None and spec.shadow.mirror == ShadowMirror.TRAEFIK_SERVICE


def mirror_release_at(spec: CanaryRolloutSpec, status: CanaryRolloutStatus,
                      grace: timedelta = MIRROR_RELEASE_GRACE) -> datetime | None:
    """When the rollout's TraefikService may be deleted (it may already be gone: deleting is idempotent); None
    while the route may still name it, or when the rollout has none.

    >>> from datetime import UTC
    >>> spec = CanaryRolloutSpec.model_validate({"route": {"name": "r"}, "baseline": {"name": "b", "port": 80},
    ...     "candidate": {"service": {"name": "c", "port": 80}}, "steps": [{"weight": 10}],
    ...     "shadow": {"pause": "1m", "mirror": "TraefikService"}})
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> mirror_release_at(spec, CanaryRolloutStatus(phase="Progressing", shadowing=True, step_started_at=t)) is None
    True
    >>> mirror_release_at(spec, CanaryRolloutStatus(phase="Progressing", current_step=0, current_weight=10,
    ...     step_started_at=t)).isoformat()
    '2026-01-01T00:00:10+00:00'
    """
    if not uses_traefik_service(spec) or not step_entered(status):
        return None
    judged = spec.analysis is not None and spec.analysis.agreement is not None
    if status.phase in ACTIVE_PHASES:
        # With agreement analysis the TraefikService mirrors to the judge in every step, not only the shadow.
        since = None if status.shadowing or judged else status.step_started_at
    elif status.phase == RolloutPhase.PROMOTED:
        since = status.promoted_at or status.route_settled_at
    else:
        since = status.route_settled_at
    return None if since is None else since + grace


def mirror_settled_at(created: datetime | None, grace: timedelta = MIRROR_SETTLE_GRACE) -> datetime | None:
    """When the route may name a TraefikService created at `created` (its metadata.creationTimestamp; None: not
    created yet, so not before grace from now on). Restart-safe: the time comes from the API server.

    >>> from datetime import UTC
    >>> mirror_settled_at(datetime(2026, 1, 1, tzinfo=UTC)).isoformat()
    '2026-01-01T00:00:10+00:00'
    >>> mirror_settled_at(None) is None
    True
    """
    return None if created is None else created + grace
