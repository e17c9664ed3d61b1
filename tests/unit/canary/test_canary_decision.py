"""One CanaryRollout evaluation in order (logic/canary_decision.decide): worked examples of what the
reconcile observed -> the status and action it records. The steps themselves are tabled in
test_next_action.py and test_canary_status.py; these check the order they are put in."""

from __future__ import annotations

from kubestill.api.v1alpha1.canaryrollout import BackendRef
from kubestill.logic.canary import ROUTE_OK, ROUTE_UNSEEN, ActionKind, RouteView
from kubestill.logic.canary_decision import CanaryObserved, decide
from kubestill.logic.conditions import find

from .helpers import at, in_step, spec, status

STUDENT = BackendRef(name="student", port=8000)


def observed(route: RouteView = ROUTE_OK, annotations: dict[str, str] | None = None,
             **more: object) -> CanaryObserved:
    return CanaryObserved(generation=2, annotations=annotations or {}, route=route, candidate=STUDENT,
                          **more)  # type: ignore[arg-type]


def test_a_new_rollout_enters_its_first_step_and_records_the_candidate() -> None:
    decision = decide(spec(), status(), observed(ROUTE_UNSEEN), at(0))
    assert decision.action.kind == ActionKind.START
    assert decision.status.phase == "Progressing" and decision.status.current_weight == 10
    assert decision.status.candidate_backend == STUDENT
    assert find(decision.status.conditions, "RouteReady") is None  # the route is not ours yet
    assert not decision.drifted


def test_a_step_whose_route_is_carried_holds_and_notes_the_route() -> None:
    current = in_step(0, 10, 0, route_settled_at=at(0), candidate_backend=STUDENT)
    decision = decide(spec(), current, observed(), at(30))
    assert decision.action.kind == ActionKind.HOLD
    route = find(decision.status.conditions, "RouteReady")
    assert route is not None and route.status == "True"


def test_an_abort_annotation_rolls_back_and_is_recorded_as_handled() -> None:
    current = in_step(0, 10, 0, route_settled_at=at(0), candidate_backend=STUDENT)
    decision = decide(spec(), current, observed(annotations={"kubestill.io/abort": "1"}), at(30))
    assert decision.action.kind == ActionKind.ROLLBACK
    assert decision.status.current_weight == 0
    assert decision.status.handled_annotations == {"kubestill.io/abort": "1"}


def test_a_deleted_candidate_rolls_back() -> None:
    current = in_step(0, 10, 0, route_settled_at=at(0), candidate_backend=STUDENT)
    decision = decide(spec(), current, observed(candidate_gone="candidate StudentModel m was deleted"), at(30))
    assert decision.action.kind == ActionKind.ROLLBACK
