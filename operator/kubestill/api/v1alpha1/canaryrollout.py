"""CanaryRollout: move traffic from a baseline to a StudentModel step by step, rolling back on bad signals.

Traffic is split by the weights of two backendRefs in an existing Gateway API HTTPRoute; the operator changes
only those weights (and a shadow step's mirror), by server-side apply with its own field manager, which owns
the route's atomic `spec.rules` until the rollout ends and gives the route back. Every timestamp the decision
needs lives in status, so an operator restart resumes exactly where it was.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from ._base import Condition, Duration, KubeModel, ResourceName, RootModel, Rule, nested

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
    service: BackendRef | None = Field(default=None, description="A Service, when not a StudentModel.")


class CanaryStep(KubeModel):
    """One step: send `weight` % of traffic to the candidate, then wait `pause` while analysing."""

    weight: int = Field(ge=1, le=100, description="Candidate share of traffic in percent.")
    pause: Duration | None = Field(
        default=None, description="How long to hold this weight ('90s', '6h', '2d'); empty: until promoted."
    )


class ShadowStep(KubeModel):
    """Before any real traffic, mirror a share of requests to the candidate (HTTPRoute RequestMirror)."""

    percent: int = Field(default=100, ge=1, le=100, description="Share of requests mirrored.")
    pause: Duration = Field(description="How long to shadow while analysing.")


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
    interval: Duration = Field(default="60s", description="Time between measurements.")
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

    rules = (
        Rule(
            cel="!has(self.metrics) || self.metrics.all(a, self.metrics.exists_one(b, b.name == a.name))",
            message="metric names must be unique",
            check=lambda a: len({m.name for m in a.metrics}) == len(a.metrics),
            field="metrics",
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

    keep_baseline_for: Duration = Field(
        default="24h", description="Keep the baseline route entry (weight 0) this long after promotion."
    )


class CanaryRolloutSpec(KubeModel):
    """Baseline, candidate, steps, analysis and rollback triggers."""

    rules = (
        Rule(
            cel="self.steps.map(s, s.weight).isSorted() && "
            "self.steps.all(a, self.steps.exists_one(b, b.weight == a.weight))",
            message="step weights must be strictly increasing",
            check=lambda s: all(a.weight < b.weight for a, b in zip(s.steps, s.steps[1:], strict=False)),
            field="steps",
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
    current_weight: int = Field(default=0, ge=0, le=100, description="Candidate weight now in the route.")
    shadowing: bool = Field(default=False, description="True while the mirror step runs.")
    step_started_at: datetime | None = Field(default=None, description="When the current step began.")
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
    promoted_at: datetime | None = Field(default=None, description="When the candidate took 100%.")
    baseline_released_at: datetime | None = Field(
        default=None, description="When the baseline entry is removed from the route."
    )
    handled_annotations: dict[str, str] = Field(
        default_factory=dict, description="Manual-control annotations already acted on, by value."
    )
    message: str = Field(default="", description="Human summary: why paused, why rolled back ...")


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
