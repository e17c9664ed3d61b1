"""CanaryRollout: move traffic from a baseline to a StudentModel step by step, rolling back on bad signals.

Traffic is split by the weights of two backendRefs in an existing Gateway API HTTPRoute; the operator changes
only those weights (and a shadow step's mirror), by server-side apply with its own field manager, which owns
the route's atomic `spec.rules` until the rollout ends and gives the route back. Every timestamp the decision
needs lives in status, so an operator restart resumes exactly where it was.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import Field

from ._base import Condition, Duration, KubeModel, ResourceName, RootModel, Rule, duration_rule, nested
from .canary_agreement import AgreementSpec, SequentialSpec, SequentialStatus

KIND = "CanaryRollout"
PLURAL = "canaryrollouts"
SHORT_NAMES = ["canary"]

# Manual controls through annotations, for GitOps users who cannot run the CLI.
ANNOTATION_PROMOTE = "kubestill.io/promote"
ANNOTATION_ABORT = "kubestill.io/abort"
ANNOTATION_PAUSE = "kubestill.io/pause"
ANNOTATION_RESUME = "kubestill.io/resume"
ANNOTATION_PREFIX = "kubestill.io/"
MAX_STEPS = 20

# Bounds of every duration in the spec, enforced by the API server and the models alike. The operator may rely on
# them (e.g. never measure more often than MIN_ANALYSIS_INTERVAL), and must still survive anything in range.
# Floor: interval 0s measured ~137 Prometheus queries/s and a third of a core for one rollout; 1s is ~1/s.
MIN_ANALYSIS_INTERVAL = timedelta(seconds=1)
# Ceiling: a failing candidate is measured at least hourly; a longer look back belongs in the query's range window.
MAX_ANALYSIS_INTERVAL = timedelta(hours=1)
# Floor: a step (or shadow) that holds its weight for no time is a typo for no step at all.
MIN_PAUSE = timedelta(seconds=1)
# Ceiling: a hold longer than a month is "until promoted": leave a step's pause empty and promote by hand.
MAX_PAUSE = timedelta(days=30)
# Floor 0s: release the baseline at promotion (no rollback after it). Ceiling: a weight-0 entry kept longer than a
# month is forgotten configuration in someone else's route, and an abort that late is a new rollout.
MIN_KEEP_BASELINE = timedelta(0)
MAX_KEEP_BASELINE = timedelta(days=30)


class BackendRef(KubeModel):
    """A Service behind the HTTPRoute."""

    name: ResourceName = Field(description="Service name, as in the HTTPRoute's backendRefs.")
    port: int = Field(ge=1, le=65535, description="Service port, as in the HTTPRoute's backendRefs.")


class RouteRef(KubeModel):
    """The existing HTTPRoute whose backendRefs weights the rollout manages."""

    name: ResourceName = Field(description="HTTPRoute name, in the rollout's namespace.")
    rule_index: int = Field(default=0, ge=0, le=63, description="Index of the rule whose backends are weighted.")


class CandidateRef(KubeModel):
    """The candidate: a StudentModel (its Service), or a Service directly."""

    rules = (
        Rule(
            cel="has(self.studentModel) != has(self.service)",
            message="set exactly one of studentModel and service",
            check=lambda c: (c.student_model is None) != (c.service is None),
        ),
    )

    student_model: ResourceName | None = Field(default=None, description="StudentModel to roll out.")
    service: BackendRef | None = Field(
        default=None,
        description="A Service, when not a StudentModel; never the baseline itself (same name and port).",
    )


class CanaryStep(KubeModel):
    """One step: send `weight` % of traffic to the candidate, then wait `pause` while analysing."""

    rules = (duration_rule("pause", MIN_PAUSE, MAX_PAUSE),)

    weight: int = Field(ge=1, le=100, description="Candidate share of traffic in percent.")
    pause: Duration | None = Field(
        default=None,
        description="How long to hold this weight ('90s', '6h', '2d'), 1s to 30d; empty: until promoted.",
    )


class ShadowMirror(StrEnum):
    """How the gateway is told to mirror: the Gateway API's standard filter, or Traefik's own CRD (Traefik answers
    500 to every request of a rule carrying the standard filter, see tests/integration/test_gateway.py)."""

    REQUEST_MIRROR = "RequestMirror"
    TRAEFIK_SERVICE = "TraefikService"


class ShadowStep(KubeModel):
    """Before any real traffic, mirror a share of requests to the candidate; the clients get the baseline's answers."""

    rules = (duration_rule("pause", MIN_PAUSE, MAX_PAUSE),)

    percent: int = Field(default=100, ge=1, le=100, description="Share of requests mirrored to the candidate; "
                         "with analysis.agreement the judge is the mirror target instead, at its samplePercent.")
    pause: Duration = Field(description="How long to shadow while analysing, 1s to 30d.")
    mirror: ShadowMirror = Field(
        default=ShadowMirror.REQUEST_MIRROR,
        description="How the route mirrors. RequestMirror: the Gateway API's standard RequestMirror filter in the "
        "route rule (Extended support: for gateways that implement it). TraefikService: a TraefikService "
        "(traefik.io/v1alpha1) `<rollout>-shadow`, owned by the rollout, whose `mirroring` sends every request to "
        "the baseline and a copy of `percent` % to the candidate, named in the rule's backendRefs in the "
        "baseline's place for the shadow step and deleted after it; for Traefik, which does not implement the "
        "filter (it answers 500 to every request of the rule) and needs its CRDs installed.",
    )


class NoDataPolicy(StrEnum):
    INCONCLUSIVE = "Inconclusive"
    FAIL = "Fail"


class AnalysisMetric(KubeModel):
    """A Prometheus query whose value must stay within [min, max]."""

    rules = (
        Rule(
            cel="has(self.min) || has(self.max)",
            message="set min, max or both",
            check=lambda m: m.min is not None or m.max is not None,
        ),
        Rule(
            cel="!has(self.min) || !has(self.max) || self.min <= self.max",
            message="min must be <= max",
            check=lambda m: m.min is None or m.max is None or m.min <= m.max,
            field="min",
        ),
    )

    name: str = Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_-]*$", max_length=63, description="Metric name in status.")
    query: str = Field(
        min_length=1,
        description="PromQL returning one number. {{candidate}} and {{baseline}} are replaced by the "
        "Service names, {{namespace}} by the namespace.",
    )
    min: float | None = Field(default=None, description="Fail when the value is below this.")
    max: float | None = Field(default=None, description="Fail when the value is above this.")


class AnalysisSpec(KubeModel):
    """Periodic Prometheus analysis during every step."""

    prometheus_url: str = Field(pattern=r"^https?://.+", description="Prometheus base URL.")
    interval: Duration = Field(default="60s", description="Time between measurements, 1s to 1h.")
    failure_limit: int = Field(default=0, ge=0, le=100, description="Failed measurements tolerated per step.")
    inconclusive_limit: int = Field(
        default=2, ge=0, le=100, description="Consecutive inconclusive measurements before pausing."
    )
    no_data: NoDataPolicy = Field(
        default=NoDataPolicy.INCONCLUSIVE,
        description="What a query with no data (or an unreachable Prometheus) counts as: never success.",
    )
    metrics: list[AnalysisMetric] = Field(
        default_factory=list, max_length=32, description="Queries and their thresholds."
    )
    agreement: AgreementSpec | None = Field(
        default=None, description="The student's agreement with the baseline on mirrored live requests, measured "
        "by a judge the operator deploys; its queries are built by the operator and judged every interval with "
        "the metrics (same noData policy)."
    )
    sequential: SequentialSpec | None = Field(
        default=None, description="Wald's sequential test on each step's agreement and error counts: a step "
        "ends early when it accepts (after minPause), the rollout rolls back as soon as it rejects. Needs "
        "agreement."
    )

    rules = (
        duration_rule("interval", MIN_ANALYSIS_INTERVAL, MAX_ANALYSIS_INTERVAL),
        Rule(
            cel="!has(self.metrics) || self.metrics.all(a, self.metrics.exists_one(b, b.name == a.name))",
            message="metric names must be unique",
            check=lambda a: len({m.name for m in a.metrics}) == len(a.metrics),
            field="metrics",
        ),
        Rule(
            cel="!has(self.sequential) || has(self.agreement)",
            message="sequential tests the agreement counts: set analysis.agreement too",
            check=lambda a: a.sequential is None or a.agreement is not None,
            field="sequential",
        ),
        # H1 is "rate <= minRate - delta": it must be a rate, and H0 "rate >= minRate" must leave room for
        # disagreement (the SPRT's p0 and p1 are in (0, 1)).
        Rule(
            cel="!has(self.sequential) || !has(self.agreement) || "
            "(self.agreement.minRate - self.sequential.delta > 0.0 && self.agreement.minRate < 1.0)",
            message="sequential needs 0 < agreement.minRate - sequential.delta and agreement.minRate < 1",
            check=lambda a: a.sequential is None or a.agreement is None
            or (a.agreement.min_rate - a.sequential.delta > 0.0 and a.agreement.min_rate < 1.0),
            field="sequential.delta",
        ),
    )


class AlertMatcher(KubeModel):
    """A firing Prometheus alert that forces a rollback: by name, by labels, or both."""

    rules = (
        Rule(
            cel="has(self.name) || (has(self.labels) && size(self.labels) > 0)",
            message="an alert matcher needs a name or labels",
            check=lambda a: a.name is not None or bool(a.labels),
        ),
    )

    name: str | None = Field(default=None, description="alertname to match.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels the alert must carry.")


class PromotionSpec(KubeModel):
    """What happens after the last step."""

    rules = (duration_rule("keepBaselineFor", MIN_KEEP_BASELINE, MAX_KEEP_BASELINE),)

    keep_baseline_for: Duration = Field(
        default="24h",
        description="Keep the baseline route entry (weight 0) this long after promotion, 0s to 30d.",
    )


class CanaryRolloutSpec(KubeModel):
    """Baseline, candidate, steps, analysis and rollback triggers."""

    rules = (
        # What the rollout holds in the route is fixed for its life: a rollout moved to another route, rule,
        # baseline or candidate mid-step would leave the old one carrying traffic that nobody manages.
        *(
            Rule(
                cel=f"self.{field} == oldSelf.{field}",
                message=f"{field} is immutable: delete the CanaryRollout (its route is restored) and create a new "
                "one",
                check=None,
                field=field,
            )
            for field in ("route", "baseline", "candidate")
        ),
        Rule(
            cel="self.steps.map(s, s.weight).isSorted() && "
            "self.steps.all(a, self.steps.exists_one(b, b.weight == a.weight))",
            message="step weights must be strictly increasing",
            check=lambda s: all(a.weight < b.weight for a, b in zip(s.steps, s.steps[1:], strict=False)),
            field="steps",
        ),
        # The candidate is the same backendRef as the baseline: its weight and the baseline's land on one entry,
        # which after promotion carries weight 0 and every request fails. Another port of the baseline's
        # Service stays allowed: Gateway API and the route builder tell backends apart by name and port, and
        # that port can front another container of the Pods (both entries keep their own weight).
        Rule(
            cel="!has(self.candidate.service) || self.candidate.service.name != self.baseline.name || "
            "self.candidate.service.port != self.baseline.port",
            message="candidate.service must not be the baseline (same name and port): the candidate needs a "
            "backend of its own",
            check=lambda s: s.candidate.service is None
            or (s.candidate.service.name, s.candidate.service.port) != (s.baseline.name, s.baseline.port),
            field="candidate.service",
        ),
        Rule(
            cel="!has(self.analysis) || !has(self.analysis.agreement) || has(self.analysis.agreement.task) || "
            "has(self.candidate.studentModel)",
            message="analysis.agreement.task is needed when the candidate is a Service (a StudentModel says its "
            "task)",
            check=lambda s: s.analysis is None or s.analysis.agreement is None or s.analysis.agreement.task
            is not None or s.candidate.student_model is not None,
            field="analysis.agreement.task",
        ),
        Rule(
            cel="!has(self.rollbackAlerts) || size(self.rollbackAlerts) == 0 || has(self.analysis)",
            message="rollbackAlerts need analysis.prometheusUrl to query the alerts",
            check=lambda s: not s.rollback_alerts or s.analysis is not None,
            field="rollbackAlerts",
        ),
    )

    route: RouteRef = Field(description="The HTTPRoute to manage.")
    baseline: BackendRef = Field(description="The current backend (e.g. the teacher's Service).")
    candidate: CandidateRef = Field(description="The student to move traffic to.")
    shadow: ShadowStep | None = Field(default=None, description="Optional mirror step before the first weight.")
    steps: list[CanaryStep] = Field(
        min_length=1, max_length=MAX_STEPS, description="Weights in strictly increasing order, each 1..100."
    )
    analysis: AnalysisSpec | None = Field(default=None, description="Prometheus analysis; none: time only.")
    rollback_alerts: list[AlertMatcher] = Field(
        default_factory=list, max_length=32, description="Firing alerts that roll back at once."
    )
    promotion: PromotionSpec = nested(PromotionSpec, "Baseline retention after promotion.")
    paused: bool = Field(default=False, description="Hold at the current step until set back to false.")


class RolloutPhase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


class MeasurementResult(StrEnum):
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"


class PauseReason(StrEnum):
    SPEC = "Spec"
    MANUAL = "Manual"
    INCONCLUSIVE = "Inconclusive"


class Measurement(KubeModel):
    """One evaluation of one analysis metric."""

    metric: str = Field(description="AnalysisMetric name.")
    step: int = Field(description="Step index (-1: shadow).")
    value: float | None = Field(default=None, description="Value returned; empty when there was no data.")
    result: MeasurementResult = Field(description="Successful, Failed, Inconclusive or Error.")
    at: datetime = Field(description="When it was taken.")
    message: str = Field(default="", description="Why, for failures and errors.")


class HistoryEntry(KubeModel):
    """A transition of the rollout."""

    at: datetime = Field(description="When.")
    action: str = Field(description="SetWeight, Advance, Pause, Resume, Promote, Rollback ...")
    step: int = Field(description="Step index after the transition.")
    weight: int = Field(description="Candidate weight after the transition.")
    reason: str = Field(default="", description="Why.")


class CanaryRolloutStatus(KubeModel):
    """Observed state; every time the decision needs is here, so restarts resume exactly."""

    phase: RolloutPhase = Field(default=RolloutPhase.PENDING, description="Where the rollout is.")
    observed_generation: int | None = Field(default=None, description="Generation the status reflects.")
    conditions: list[Condition] = Field(default_factory=list, description="Progressing, Healthy ...")
    current_step: int = Field(default=-1, description="Index into spec.steps; -1 before the first, or shadow.")
    current_weight: int = Field(default=0, ge=0, le=100, description="Candidate weight of the current step (the "
        "route carries it while the RouteReady condition is True).")
    shadowing: bool = Field(default=False, description="True while the mirror step runs.")
    step_entered_at: datetime | None = Field(
        default=None, description="When the current step was decided; its clock (stepStartedAt) starts only "
        "once the HTTPRoute is observed carrying the step's weight."
    )
    step_started_at: datetime | None = Field(
        default=None, description="When the HTTPRoute was first observed carrying the current step's weight (or "
        "mirror): the step's pause and analysis count from here, never from the decision."
    )
    candidate_backend: BackendRef | None = Field(
        default=None, description="The candidate Service the route sends traffic to, recorded when the first step "
        "is entered, so an abort or a rollback still reaches the route after the StudentModel is gone."
    )
    route_settled_at: datetime | None = Field(
        default=None, description="When the HTTPRoute was observed in the rollout's final state (rolled back: "
        "baseline 100%; promoted: baseline released); from then on the rollout no longer writes the route and "
        "no longer holds its rule, so another rollout may use it."
    )
    next_step_at: datetime | None = Field(default=None, description="When the current step's pause ends.")
    last_analysis_at: datetime | None = Field(default=None, description="When metrics were last measured.")
    step_failures: int = Field(default=0, ge=0, description="Failed measurements in this step.")
    consecutive_inconclusive: int = Field(default=0, ge=0, description="Inconclusive measurements in a row.")
    last_verdict: MeasurementResult | None = Field(
        default=None, description="Verdict of the latest analysis round in this step; a step ends only on "
        "Successful."
    )
    paused_at: datetime | None = Field(
        default=None, description="When the rollout was paused; resuming moves nextStepAt by the time spent "
        "paused."
    )
    pause_reason: PauseReason | None = Field(
        default=None, description="Why it is paused: Spec (spec.paused), Manual (annotation) or Inconclusive."
    )
    measurements: list[Measurement] = Field(default_factory=list, description="Recent measurements (bounded).")
    history: list[HistoryEntry] = Field(default_factory=list, description="Transitions (bounded).")
    promoted_at: datetime | None = Field(
        default=None, description="When the HTTPRoute was first observed giving the candidate 100% (promotion is "
        "decided earlier; keepBaselineFor counts from here)."
    )
    baseline_released_at: datetime | None = Field(
        default=None, description="When the baseline entry is removed from the route."
    )
    handled_annotations: dict[str, str] = Field(
        default_factory=dict, description="Manual-control annotations already acted on, by value."
    )
    message: str = Field(default="", description="Human summary: why paused, why rolled back ...")
    sequential: SequentialStatus | None = Field(
        default=None, description="The current step's sequential test: counts, error rates and decision."
    )


class CanaryRollout(RootModel):
    """A progressive delivery of a student model."""

    kind: Literal["CanaryRollout"] = Field(default="CanaryRollout", description="CanaryRollout.")
    spec: CanaryRolloutSpec = Field(description="Desired rollout.")
    status: CanaryRolloutStatus | None = Field(default=None, description="Observed state.")


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Step", "type": "integer", "jsonPath": ".status.currentStep"},
    {"name": "Weight", "type": "integer", "jsonPath": ".status.currentWeight", "description": "% to candidate"},
    {"name": "Next", "type": "date", "jsonPath": ".status.nextStepAt", "priority": 1},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
