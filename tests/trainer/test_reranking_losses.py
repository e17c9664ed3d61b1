"""Properties of the reranking losses: zero at identity (and under per-query shifts), padded candidates
ignored, gradients reach the student, the documented temperature scaling, and registry wiring."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kubestill.api.v1alpha1.distillationjob import LossName, LossTerm
from kubestill_trainer.losses import LossDims, build_loss
from kubestill_trainer.losses.extras import CANDIDATE_MASK
from kubestill_trainer.losses.listwise_kl import listwise_kl
from kubestill_trainer.losses.margin_mse import margin_mse
from kubestill_trainer.outputs import LossInputs, ModelOutputs

B, G = 4, 6


def _mask() -> torch.Tensor:
    mask = torch.ones(B, G, dtype=torch.bool)
    mask[1, 4:] = False  # a query with only 4 candidates
    mask[2, 1:] = False  # a query with a single candidate: no pair, no ranking
    return mask


@pytest.mark.parametrize("fn", [margin_mse, listwise_kl], ids=["margin-mse", "listwise-kl"])
@pytest.mark.parametrize("shift", [0.0, 3.5], ids=["identical", "shifted-per-query"])
def test_zero_for_identical_or_shifted_scores(fn, shift: float) -> None:  # type: ignore[no-untyped-def]
    t = torch.randn(B, G)
    s = t + shift * torch.arange(B).unsqueeze(1)  # a different constant per query
    assert float(fn(s, t)) == pytest.approx(0.0, abs=1e-5)
    assert float(fn(s, t, mask=_mask())) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("fn", [margin_mse, listwise_kl], ids=["margin-mse", "listwise-kl"])
def test_padded_candidates_are_ignored(fn) -> None:  # type: ignore[no-untyped-def]
    t, s = torch.randn(B, G), torch.randn(B, G)
    mask = _mask()
    noisy = s.clone()
    noisy[~mask] = torch.randn(int((~mask).sum())) * 100  # garbage in padded slots
    assert float(fn(noisy, t, mask=mask)) == pytest.approx(float(fn(s, t, mask=mask)), rel=1e-5)


@pytest.mark.parametrize("fn", [margin_mse, listwise_kl], ids=["margin-mse", "listwise-kl"])
def test_gradients_flow_and_lower_the_loss(fn) -> None:  # type: ignore[no-untyped-def]
    t = torch.randn(B, G)
    s = torch.randn(B, G, requires_grad=True)
    loss = fn(s, t, mask=_mask())
    loss.backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0
    with torch.no_grad():
        stepped = fn(s - 0.1 * s.grad, t, mask=_mask())
    assert float(stepped) < float(loss.detach())


def test_margin_mse_matches_the_two_candidate_formula() -> None:
    # With (positive, negative) pairs it is exactly Hofstätter et al.'s MSE of margins.
    t, s = torch.randn(B, 2), torch.randn(B, 2)
    expected = F.mse_loss(s[:, 0] - s[:, 1], t[:, 0] - t[:, 1])
    assert float(margin_mse(s, t)) == pytest.approx(float(expected), rel=1e-6)


def test_margin_mse_without_any_pair_is_a_differentiable_zero() -> None:
    s = torch.randn(B, 1, requires_grad=True)
    loss = margin_mse(s, torch.randn(B, 1))
    loss.backward()
    assert float(loss.detach()) == 0.0


def test_listwise_kl_is_scaled_by_t_squared() -> None:
    s, t = torch.randn(64, G), torch.randn(64, G)
    raw = F.kl_div(F.log_softmax(s / 3, -1), F.log_softmax(t / 3, -1), reduction="batchmean", log_target=True)
    assert float(listwise_kl(s, t, temperature=3.0)) == pytest.approx(9 * float(raw), rel=1e-5)
    # T^2 * KL tends to a constant as T grows (so the loss scale does not vanish with T).
    big = [float(listwise_kl(s, t, temperature=temp)) for temp in (20.0, 80.0)]
    assert big[0] == pytest.approx(big[1], rel=0.05)


@pytest.mark.parametrize("fn", [margin_mse, listwise_kl], ids=["margin-mse", "listwise-kl"])
def test_shape_mismatch_is_an_error(fn) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"\[B, G\]"):
        fn(torch.randn(B, G), torch.randn(B, G + 1))


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        (LossTerm(name=LossName.MARGIN_MSE), "margin"),
        (LossTerm(name=LossName.LISTWISE_KL, temperature=2.0), "listwise"),
    ],
)
def test_registered_losses_read_scores_and_the_teachers_mask(term: LossTerm, expected: str) -> None:
    t, s = torch.randn(B, G), torch.randn(B, G)
    mask = _mask()
    loss = build_loss(term, LossDims())
    inputs = LossInputs(student=ModelOutputs(scores=s), teacher=ModelOutputs(scores=t, extra={CANDIDATE_MASK: mask}))
    want = margin_mse(s, t, mask) if expected == "margin" else listwise_kl(s, t, 2.0, mask)
    assert float(loss(inputs)) == pytest.approx(float(want), rel=1e-6)
    with pytest.raises(ValueError, match="student scores"):
        loss(LossInputs(student=ModelOutputs(), teacher=ModelOutputs(scores=t)))
