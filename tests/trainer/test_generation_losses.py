"""Properties of the generation losses: token-kl (sparse top-k KD, T^2 scaled) and sequence-kd (CE on the
teacher's tokens): zero or minimal at identity, masks respected, gradients flow, registry wiring."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kubestill.api.v1alpha1.distillationjob import LossName, LossTerm
from kubestill_trainer.losses import LossDims, build_loss
from kubestill_trainer.losses.extras import RESPONSE_MASK, TOKEN_IDS, TOPK_IDS, TOPK_LOGPROBS
from kubestill_trainer.losses.sequence_kd import sequence_kd
from kubestill_trainer.losses.token_kl import token_kl
from kubestill_trainer.outputs import LossInputs, ModelOutputs

B, T, V, K = 3, 5, 50, 8


def _teacher(logits: torch.Tensor, k: int = K) -> tuple[torch.Tensor, torch.Tensor]:
    logprobs = F.log_softmax(logits, -1)
    values, ids = logprobs.topk(k, dim=-1)
    return ids, values


def _mask() -> torch.Tensor:
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 3:] = False
    return mask


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_token_kl_is_zero_when_the_student_is_the_teacher(temperature: float) -> None:
    logits = torch.randn(B, T, V)
    ids, logprobs = _teacher(logits)
    assert float(token_kl(logits, ids, logprobs, _mask(), temperature)) == pytest.approx(0.0, abs=1e-6)


def test_token_kl_with_the_whole_vocabulary_is_the_full_kl() -> None:
    s, t = torch.randn(B, T, V), torch.randn(B, T, V)
    ids, logprobs = _teacher(t, k=V)
    full = F.kl_div(F.log_softmax(s, -1).reshape(-1, V), F.log_softmax(t, -1).reshape(-1, V),
                    reduction="batchmean", log_target=True)
    assert float(token_kl(s, ids, logprobs)) == pytest.approx(float(full), rel=1e-5)


def test_token_kl_is_scaled_by_t_squared() -> None:
    s, t = torch.randn(B, T, V), torch.randn(B, T, V)
    ids, logprobs = _teacher(t)
    s_k = torch.gather(s, -1, ids)
    raw = (F.softmax(logprobs / 2, -1) * (F.log_softmax(logprobs / 2, -1) - F.log_softmax(s_k / 2, -1))).sum(-1)
    assert float(token_kl(s, ids, logprobs, temperature=2.0)) == pytest.approx(4 * float(raw.mean()), rel=1e-5)


@pytest.mark.parametrize("fn", ["token-kl", "sequence-kd"])
def test_masked_positions_are_ignored(fn: str) -> None:
    s, t = torch.randn(B, T, V), torch.randn(B, T, V)
    ids, logprobs = _teacher(t)
    mask = _mask()
    tokens = ids[..., 0].masked_fill(~mask, -100)
    noisy = s.clone()
    noisy[~mask] = torch.randn(int((~mask).sum()), V) * 50

    def value(x: torch.Tensor) -> float:
        return float(token_kl(x, ids, logprobs, mask) if fn == "token-kl" else sequence_kd(x, tokens))

    assert value(noisy) == pytest.approx(value(s), rel=1e-5)


@pytest.mark.parametrize("fn", ["token-kl", "sequence-kd"])
def test_gradients_flow_and_lower_the_loss(fn: str) -> None:
    t = torch.randn(B, T, V)
    ids, logprobs = _teacher(t)
    tokens = ids[..., 0]
    s = torch.randn(B, T, V, requires_grad=True)

    def value(x: torch.Tensor) -> torch.Tensor:
        return token_kl(x, ids, logprobs, _mask(), 2.0) if fn == "token-kl" else sequence_kd(x, tokens)

    loss = value(s)
    loss.backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0
    with torch.no_grad():
        assert float(value(s - 1.0 * s.grad)) < float(loss.detach())


def test_sequence_kd_is_minimal_when_the_student_is_sure_of_the_teachers_tokens() -> None:
    tokens = torch.randint(0, V, (B, T))
    confident = F.one_hot(tokens, V).float() * 30
    assert float(sequence_kd(confident, tokens)) == pytest.approx(0.0, abs=1e-6)
    assert float(sequence_kd(torch.zeros(B, T, V), tokens)) == pytest.approx(float(torch.log(torch.tensor(V))))


@pytest.mark.parametrize("fn", [token_kl, sequence_kd], ids=["token-kl", "sequence-kd"])
def test_misaligned_shapes_are_an_error(fn) -> None:  # type: ignore[no-untyped-def]
    s = torch.randn(B, T + 1, V)
    ids, logprobs = _teacher(torch.randn(B, T, V))
    with pytest.raises(ValueError, match="line up"):
        fn(s, ids, logprobs) if fn is token_kl else fn(s, ids[..., 0])


def test_registered_losses_read_the_teachers_extras() -> None:
    s, t = torch.randn(B, T, V), torch.randn(B, T, V)
    ids, logprobs = _teacher(t)
    mask = _mask()
    tokens = ids[..., 0].masked_fill(~mask, -100)
    teacher = ModelOutputs(extra={TOPK_IDS: ids, TOPK_LOGPROBS: logprobs, RESPONSE_MASK: mask, TOKEN_IDS: tokens})
    inputs = LossInputs(student=ModelOutputs(logits=s), teacher=teacher)
    kl = build_loss(LossTerm(name=LossName.TOKEN_KL, temperature=2.0), LossDims())
    ce = build_loss(LossTerm(name=LossName.SEQUENCE_KD), LossDims())
    assert float(kl(inputs)) == pytest.approx(float(token_kl(s, ids, logprobs, mask, 2.0)), rel=1e-6)
    assert float(ce(inputs)) == pytest.approx(float(sequence_kd(s, tokens)), rel=1e-6)
    with pytest.raises(ValueError, match="top-k"):
        kl(LossInputs(student=ModelOutputs(logits=s), teacher=ModelOutputs()))
