"""What a CanaryRollout remembers of its HTTPRoute, in the annotation `kubestill.io/route-record`.

Written once, with the `kubestill.io/route-restore` finalizer, before kubestill first changes the route; read
when the rollout is deleted, to give the rule back its traffic, even after the candidate's StudentModel (and so
the candidate Service's name) or the operator's memory are gone. `releasedAt` marks the end: the route is in
its final state, kubestill's field ownership has been given back, and kubestill never writes it again.
"""

from __future__ import annotations

import json
from datetime import datetime

from pydantic import Field, ValidationError

from .v1alpha1._base import KubeModel, ResourceName
from .v1alpha1.canaryrollout import BackendRef


class RouteRecord(KubeModel):
    """The rule a rollout weights, as it was before the rollout touched it."""

    route: ResourceName = Field(description="HTTPRoute name (the rollout's namespace).")
    rule_index: int = Field(ge=0, description="Index of the weighted rule.")
    baseline: BackendRef = Field(description="The baseline backendRef.")
    baseline_weight: int | None = Field(
        default=100, ge=1, description="The baseline's weight to restore: its weight before the rollout, 100 when "
        "that is not known (the route already carried other weights when recorded); empty: it had no weight key "
        "(Gateway API's default, 1)."
    )
    candidate: BackendRef = Field(description="The candidate backendRef kubestill weights.")
    candidate_declared: bool = Field(
        description="The rule already had the candidate backendRef: a restore keeps it at weight 0 instead of "
        "removing it."
    )
    released_at: datetime | None = Field(
        default=None, description="When kubestill gave the route back; it never writes it again after that."
    )

    def dumps(self) -> str:
        """The annotation value. An empty baseline weight is written as null: the wire form drops empty fields,
        and a dropped one would read back as the default 100, restoring a weight the route never had."""
        wire = self.to_wire()
        if self.baseline_weight is None:
            wire["baselineWeight"] = None
        return json.dumps(wire, separators=(",", ":"), sort_keys=True)

    @classmethod
    def loads(cls, text: str | None) -> RouteRecord | None:
        """The record in an annotation value; None when absent or unreadable (edited by hand)."""
        if not text:
            return None
        try:
            return cls.model_validate(json.loads(text))
        except (ValueError, ValidationError):
            return None
