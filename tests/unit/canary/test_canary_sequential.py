"""A step's sequential verdict from the judge's counts, and when it ends the step early or rolls back."""

from __future__ import annotations

from datetime import datetime

import pytest

from kubestill.api.v1alpha1.canary_agreement import AgreementSpec, SequentialSpec
from kubestill.api.v1alpha1.canaryrollout import CanaryRolloutSpec, CanaryRolloutStatus
from kubestill.handlers.canary_analysis import measure
from kubestill.logic.agreement_queries import JudgeScope, StepCounts, agreement_metrics
from kubestill.logic.analysis import AnalysisRound, QueryResult, StepVerdict, assess_round
from kubestill.logic.canary import Action, ActionKind, next_action
from kubestill.logic.canary_sequential import ends_early, step_verdict
from kubestill.logic.canary_status import apply_action
from kubestill.logic.sequential import Outcome

from .helpers import at, in_step, spec

AGREE = AgreementSpec(min_rate=0.95)
SEQ = SequentialSpec()  # delta 0.02, alpha = beta = 0.05: ln A = 2.944, ln B = -2.944


@pytest.mark.parametrize(
    ("counts", "outcome", "words"),
    [
        # Wald's worked example: 1,131 of 1,240 agree (0.912), far below 0.95 - 0.02.
        (StepCounts(1131, 1240, 1240), Outcome.REJECT,
         "agreement 0.912 < 0.95 - 0.02 (SPRT alpha=0.05 beta=0.05, 1,240 samples); errors: candidate 0.00%"),
        # 139 agreements in a row cross ln B (138 do not): the step may end.
        (StepCounts(139, 139), Outcome.ACCEPT, "agreement 1.000 >= 0.95 accepted"),
        (StepCounts(138, 138), Outcome.CONTINUE, "SPRT undecided"),
        # Nothing judged yet: continue, never accept.
        (StepCounts(0, 0), Outcome.CONTINUE, "SPRT undecided"),
        # Agreement is fine so far, but the candidate alone failed 8 of 8 discordant pairs (ln 1.5 each, 3.24 >
        # 2.944): roll back on errors, with both error rates in the reason.
        (StepCounts(100, 100, 92, 8, 0, 0), Outcome.REJECT,
         "candidate fails more often than the baseline: candidate failed alone in 8 of 8"),
        (StepCounts(100, 100, 92, 8, 0, 0), Outcome.REJECT, "errors: candidate 8.00%, baseline 0.00%"),
        # The error test alone never ends a step: agreement accepted, errors undecided.
        (StepCounts(200, 200, 195, 3, 2, 0), Outcome.ACCEPT, "candidate 1.50%, baseline 1.00%"),
    ],
)
def test_step_verdict(counts: StepCounts, outcome: Outcome, words: str) -> None:
    verdict = step_verdict(AGREE, SEQ, counts, 1, at(0))
    assert verdict.outcome is outcome
    assert words in verdict.reason
    assert verdict.status.outcome == str(outcome)
    assert (verdict.status.agreements, verdict.status.samples, verdict.status.step) == (
        counts.agreements, counts.samples, 1)
    assert verdict.status.candidate_error_rate == counts.candidate_error_rate


SEQ_SPEC = spec(analysis={"prometheusUrl": "http://prom:9090", "interval": "10s",
                          "agreement": {"minRate": 0.95, "task": "classification"}, "sequential": {"minPause": "20s"}})
NO_MIN = spec(analysis={"prometheusUrl": "http://prom:9090", "interval": "10s",
                        "agreement": {"minRate": 0.95, "task": "classification"}, "sequential": {}})
HELD = spec(steps=[{"weight": 10}],
            analysis={"prometheusUrl": "http://prom:9090",
                      "agreement": {"minRate": 0.95, "task": "classification"}, "sequential": {}})
SHADOW = spec(shadow={"percent": 50, "pause": "1h"},
              analysis={"prometheusUrl": "http://prom:9090",
                        "agreement": {"minRate": 0.95, "task": "classification"}, "sequential": {}})
ACCEPTED = step_verdict(AGREE, SEQ, StepCounts(139, 139), 0, at(0))
REJECTED = step_verdict(AGREE, SEQ, StepCounts(1131, 1240), 0, at(0))
UNDECIDED = step_verdict(AGREE, SEQ, StepCounts(138, 138), 0, at(0))


@pytest.mark.parametrize(
    ("rollout", "started", "now", "verdict", "expected"),
    [
        (SEQ_SPEC, 0, 19, ACCEPTED, False),  # minPause 20s not over
        (SEQ_SPEC, 0, 20, ACCEPTED, True),
        (NO_MIN, 0, 1, ACCEPTED, True),  # no minPause: as soon as it accepts
        (NO_MIN, 0, 1, UNDECIDED, False),
        (NO_MIN, 0, 1, REJECTED, False),  # rejection rolls back (next_action), it never ends a step
        (NO_MIN, 0, 1, None, False),
    ],
)
def test_ends_early(rollout: CanaryRolloutSpec, started: float, now: float, verdict: StepVerdict | None,
                    expected: bool) -> None:
    assert ends_early(rollout, in_step(0, 10, started), verdict, at(now)) is expected


def test_held_step_is_not_ended_by_the_test() -> None:
    # A step without a pause waits for the user's promote, whatever the test says.
    assert not ends_early(HELD, in_step(0, 10, 0, pause=None), ACCEPTED, at(5))


def _round(rollout: CanaryRolloutSpec, verdict: StepVerdict, t: float, step: int = 0,
           rate: float | None = 0.99) -> AnalysisRound:
    """A round whose agreement floor measured `rate`, carrying `verdict`."""
    analysis = rollout.analysis
    assert analysis is not None and analysis.agreement is not None
    floors = agreement_metrics(analysis.agreement, JudgeScope("n", "j"), 60, sequential=analysis.sequential is not None)
    base = assess_round(analysis, {"agreement-rate": QueryResult(rate)}, step, at(t), extra=floors)
    return AnalysisRound(base.at, base.step, base.verdict, base.measurements, verdict)


@pytest.mark.parametrize(
    ("rollout", "state", "round_", "now", "kind", "words"),
    [
        # Rejection rolls back at once, mid-pause, with the counts in the reason.
        (SEQ_SPEC, in_step(0, 10, 0), _round(SEQ_SPEC, REJECTED, 10), 10, "Rollback",
         "agreement 0.912 < 0.95 - 0.02 (SPRT alpha=0.05 beta=0.05, 1,240 samples)"),
        # ... also from the shadow step, before the candidate ever had a live request.
        (SHADOW, in_step(-1, 0, 0, pause=3600, shadowing=True), _round(SHADOW, REJECTED, 10, step=-1), 10,
         "Rollback", "agreement 0.912"),
        # Acceptance after minPause ends the step early: next step, or shadow -> first step, or promotion.
        (SEQ_SPEC, in_step(0, 10, 0), _round(SEQ_SPEC, ACCEPTED, 20), 20, "Advance", "step 1/2 passed early"),
        (SHADOW, in_step(-1, 0, 0, pause=3600, shadowing=True), _round(SHADOW, ACCEPTED, 10, step=-1), 10,
         "Advance", "shadow step passed early: agreement 1.000 >= 0.95 accepted"),
        (SEQ_SPEC, in_step(1, 50, 0), _round(SEQ_SPEC, ACCEPTED, 30, step=1), 30, "Promote",
         "all steps passed early"),
        # Accepted before minPause: hold.
        (SEQ_SPEC, in_step(0, 10, 0), _round(SEQ_SPEC, ACCEPTED, 10), 10, "Hold", ""),
        # A round whose window rate is under minRate: with the sequential test that window is not a verdict
        # (the SPRT judges the rate; it accepted), so the step ends early.
        (SEQ_SPEC, in_step(0, 10, 0), _round(SEQ_SPEC, ACCEPTED, 20, rate=0.5), 20, "Advance",
         "step 1/2 passed early"),
        # Accepted, but no data for the floor: never a success, so no early end.
        (SEQ_SPEC, in_step(0, 10, 0), _round(SEQ_SPEC, ACCEPTED, 20, rate=None), 20, "Hold", ""),
        # Undecided: the step runs its pause, then ends as without a sequential test.
        (SEQ_SPEC, in_step(0, 10, 0), _round(SEQ_SPEC, UNDECIDED, 30), 30, "Hold", ""),
        (SEQ_SPEC, in_step(0, 10, 0), _round(SEQ_SPEC, UNDECIDED, 60), 60, "Advance", "step 1/2 passed"),
    ],
    ids=["reject", "reject-in-shadow", "accept-advance", "accept-shadow", "accept-promote", "accept-before-min",
         "accept-floor-failed", "accept-floor-no-data", "undecided-hold", "undecided-pause-over"],
)
def test_next_action_with_the_sequential_test(rollout: CanaryRolloutSpec, state: CanaryRolloutStatus,
                                              round_: AnalysisRound, now: float, kind: str, words: str) -> None:
    action = next_action(rollout, state, round_, [], at(now))
    assert (action.kind.value, words in action.reason) == (kind, True), action.reason


def test_status_records_the_decision_and_a_new_step_starts_a_new_test() -> None:
    round_ = _round(SEQ_SPEC, UNDECIDED, 10)
    held = apply_action(SEQ_SPEC, in_step(0, 10, 0), Action(ActionKind.HOLD), round_, at(10))
    assert held.sequential == UNDECIDED.status
    advanced = apply_action(SEQ_SPEC, held, Action(ActionKind.ADVANCE, "x"), None, at(20))
    assert advanced.sequential is None and advanced.current_step == 1


class FakePrometheus:
    """Answers by query text: the counts of a judge whose student agrees on 1,131 of 1,240 items."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.times: set[datetime | None] = set()

    def query_value(self, url: str, query: str, at: datetime | None = None) -> float | None:
        self.asked.append(query)
        self.times.add(at)
        if "kubestill_judge_pairs_total" in query:
            return 1240.0 if 'baseline="ok",candidate="ok"' in query else 0.0
        if query.startswith("sum(increase(kubestill_judge_samples_total") and " / " not in query:
            return 1131.0 if 'result="agree"' in query else 1240.0
        if "kubestill_judge_samples_total" in query:
            return 1131.0 / 1240.0
        return 0.0  # the user's error-rate metric

    def firing_alerts(self, url: str) -> list[dict[str, str]]:
        return []


def test_measure_asks_the_rollouts_judge_and_rolls_back_on_rejection() -> None:
    rollout = spec(analysis={"prometheusUrl": "http://prom:9090", "interval": "10s",
                             "metrics": [{"name": "errors", "query": "q", "max": 0.01}],
                             "agreement": {"minRate": 0.95, "task": "classification", "window": "5m"},
                             "sequential": {}})
    prom = FakePrometheus()
    state = in_step(0, 10, 0)
    round_, alerts = measure(prom, rollout, state, ("ml", "sentiment"), "student", at(120))  # type: ignore[arg-type]
    # The floor looks back min(window, step age) = 120s; the counts the whole step.
    assert all('namespace="ml",service="sentiment-judge"' in q for q in prom.asked if "judge" in q)
    assert sum("[120s]" in q for q in prom.asked) == 1 + 6  # the rate floor, the six counts
    assert prom.times == {at(120)}  # one evaluation time for the whole round: counts that add up
    # The rate (0.912) is measured; with the sequential test the SPRT, not a floor on one window, judges it.
    assert [(m.metric, m.result) for m in round_.measurements] == [("errors", "Successful"),
                                                                  ("agreement-rate", "Successful")]
    assert round_.measurements[1].value == pytest.approx(1131 / 1240)
    assert round_.sequential is not None and round_.sequential.outcome is Outcome.REJECT
    assert alerts == []
    action = next_action(rollout, state, round_, alerts, at(120))
    assert action.kind is ActionKind.ROLLBACK and "1,240 samples" in action.reason
