"""The manual controls of a CanaryRollout: the annotations kubestill.io/promote, abort, pause and resume, each new
value one request (status.handledAnnotations records the values already acted on). Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kubestill.api.v1alpha1.canaryrollout import (
    ANNOTATION_ABORT,
    ANNOTATION_PAUSE,
    ANNOTATION_PROMOTE,
    ANNOTATION_RESUME,
)

CONTROL_ANNOTATIONS = (ANNOTATION_PROMOTE, ANNOTATION_ABORT, ANNOTATION_PAUSE, ANNOTATION_RESUME)
# A promote annotation whose value starts with this skips every remaining step.
PROMOTE_FULL = "full"


@dataclass(frozen=True)
class Controls:
    """Manual requests not yet acted on (annotation values new since status.handledAnnotations)."""

    promote: str | None = None
    abort: str | None = None
    pause: str | None = None
    resume: str | None = None

    @property
    def promote_full(self) -> bool:
        return self.promote is not None and self.promote.startswith(PROMOTE_FULL)


NO_CONTROLS = Controls()


def pending_controls(annotations: Mapping[str, str], handled: Mapping[str, str]) -> Controls:
    """Control annotations whose value differs from the value already handled: each new value is one request.

    >>> pending_controls({"kubestill.io/promote": "a"}, {"kubestill.io/promote": "a"})
    Controls(promote=None, abort=None, pause=None, resume=None)
    >>> pending_controls({"kubestill.io/pause": "2026-01-01T00:00:00Z"}, {}).pause
    '2026-01-01T00:00:00Z'
    """

    def new(key: str) -> str | None:
        value = annotations.get(key)
        return value if value is not None and handled.get(key) != value else None

    return Controls(
        promote=new(ANNOTATION_PROMOTE),
        abort=new(ANNOTATION_ABORT),
        pause=new(ANNOTATION_PAUSE),
        resume=new(ANNOTATION_RESUME),
    )


def handled_controls(
    annotations: Mapping[str, str], previous: Mapping[str, str] | None = None, defer: Sequence[str] = ()
) -> dict[str, str]:
    """The control annotations to record as handled after a decision: all of them (one decision consumes all)
    but those the decision deferred, which keep their previously handled value, so they stay pending.

    >>> handled_controls({"kubestill.io/promote": "2", "kubestill.io/pause": "p"}, {"kubestill.io/promote": "1"},
    ...                  defer=["kubestill.io/promote"])
    {'kubestill.io/pause': 'p', 'kubestill.io/promote': '1'}
    """
    out = {k: v for k, v in annotations.items() if k in CONTROL_ANNOTATIONS and k not in defer}
    for key in defer:
        if previous is not None and key in previous:
            out[key] = previous[key]
    return out
