"""Properties of every registered loss: zero (or minimal) for identical inputs, gradients flow, the
documented temperature scaling, Matryoshka prefixes, learned projections, and the registry's errors."""

from __future__ import annotations

import math

import pytest
import torch

from kubestill.api.v1alpha1.distillationjob import LossName, LossTerm
from kubestill_trainer.losses import LossDims, WeightedLoss, build_loss, registered
from kubestill_trainer.losses.attention_mse import attention_mse
from kubestill_trainer.losses.cross_entropy import cross_entropy
from kubestill_trainer.losses.embedding_cosine import embedding_cosine
from kubestill_trainer.losses.embedding_mse import embedding_mse
from kubestill_trainer.losses.hidden_mse import hidden_mse
from kubestill_trainer.losses.infonce import infonce
from kubestill_trainer.losses.layers import default_layer_map, resolve_layer_map
from kubestill_trainer.losses.logit_kl import logit_kl
from kubestill_trainer.outputs import LossInputs, ModelOutputs

torch.manual_seed(0)
B, S, D, C, H = 4, 5, 8, 3, 2


def _hidden(layers: int, width: int = D) -> tuple[torch.Tensor, ...]:
    return tuple(torch.randn(B, S, width) for _ in range(layers + 1))


def _attn(layers: int, heads: int = H) -> tuple[torch.Tensor, ...]:
    return tuple(torch.softmax(torch.randn(B, heads, S, S), dim=-1) for _ in range(layers))


def _batch(student: ModelOutputs, teacher: ModelOutputs) -> LossInputs:
    mask = torch.ones(B, S, dtype=torch.long)
    mask[0, 3:] = 0
    return LossInputs(student=student, teacher=teacher, labels=torch.randint(0, C, (B,)), attention_mask=mask)


def _same(name: LossName) -> ModelOutputs:
    del name
    return ModelOutputs(
        logits=torch.randn(B, C), embedding=torch.randn(B, D), hidden_states=_hidden(2), attentions=_attn(2)
    )


ZERO_AT_IDENTITY = [
    LossName.LOGIT_KL,
    LossName.HIDDEN_MSE,
    LossName.ATTENTION_MSE,
    LossName.EMBEDDING_MSE,
    LossName.EMBEDDING_COSINE,
]


def test_registry_has_the_core_losses() -> None:
    assert set(ZERO_AT_IDENTITY) | {LossName.CROSS_ENTROPY, LossName.INFONCE} <= set(registered())


@pytest.mark.parametrize("name", ZERO_AT_IDENTITY)
def test_identical_inputs_give_zero(name: LossName) -> None:
    out = _same(name)
    loss = build_loss(LossTerm(name=name), LossDims(student_hidden=D, teacher_hidden=D))
    assert float(loss(_batch(out, out))) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", [*ZERO_AT_IDENTITY, LossName.CROSS_ENTROPY, LossName.INFONCE])
def test_gradients_flow_to_the_student_only(name: LossName) -> None:
    teacher = _same(name)
    student = ModelOutputs(
        logits=torch.randn(B, C, requires_grad=True),
        embedding=torch.randn(B, D, requires_grad=True),
        hidden_states=tuple(h.requires_grad_() for h in _hidden(2)),
        attentions=tuple(a.requires_grad_() for a in _attn(2)),
    )
    loss = build_loss(LossTerm(name=name), LossDims(student_hidden=D, teacher_hidden=D))
    value = loss(_batch(student, teacher))
    value.backward()
    assert value.item() > 0
    grads = [
        student.logits.grad,
        student.embedding.grad,
        *(h.grad for h in student.hidden_states or ()),
        *(a.grad for a in student.attentions or ()),
    ]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert teacher.logits is not None and teacher.logits.grad is None


def test_logit_kl_is_scaled_by_t_squared() -> None:
    # For large T, KL(p_T || q_T) ~ (1 / (2 T^2)) * var-like term, so T^2 * KL converges to a constant:
    # the documented T^2 factor keeps the loss (and its gradients) on the same scale as T grows.
    s, t = torch.randn(64, 10), torch.randn(64, 10)
    values = [float(logit_kl(s, t, temperature=temp)) for temp in (10.0, 20.0, 40.0)]
    assert values[0] == pytest.approx(values[2], rel=0.05)
    raw = float(
        torch.nn.functional.kl_div(
            torch.log_softmax(s / 4, -1), torch.log_softmax(t / 4, -1), reduction="batchmean", log_target=True
        )
    )
    assert float(logit_kl(s, t, temperature=4.0)) == pytest.approx(16 * raw, rel=1e-5)


@pytest.mark.parametrize(
    ("alpha", "expect"),
    [(1.0, "kd"), (0.0, "ce"), (0.5, "mix")],
)
def test_logit_kl_alpha_mixes_hard_labels(alpha: float, expect: str) -> None:
    s, t, y = torch.randn(8, C), torch.randn(8, C), torch.randint(0, C, (8,))
    kd = float(logit_kl(s, t, 2.0))
    ce = float(cross_entropy(s, y))
    value = float(logit_kl(s, t, 2.0, alpha, y))
    want = {"kd": kd, "ce": ce, "mix": 0.5 * kd + 0.5 * ce}[expect]
    assert value == pytest.approx(want, rel=1e-5)


def test_logit_kl_alpha_below_one_needs_labels() -> None:
    with pytest.raises(ValueError, match="hard labels"):
        logit_kl(torch.randn(2, 3), torch.randn(2, 3), alpha=0.5)


def test_cross_entropy_ignores_minus_100() -> None:
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, -100, 2], [-100, -100, 4]])
    keep = labels != -100
    want = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    assert float(cross_entropy(logits, labels)) == pytest.approx(float(want))


@pytest.mark.parametrize(
    ("student", "teacher", "want"),
    [(2, 6, [3, 6]), (3, 6, [2, 4, 6]), (6, 6, [1, 2, 3, 4, 5, 6]), (1, 12, [12]), (4, 3, [1, 2, 2, 3])],
)
def test_default_layer_map(student: int, teacher: int, want: list[int]) -> None:
    assert default_layer_map(student, teacher) == want


@pytest.mark.parametrize(
    ("given", "error"),
    [([1], "lists 1 layers"), ([0, 6], "not teacher layers"), ([1, 7], "not teacher layers")],
)
def test_layer_map_errors(given: list[int], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        resolve_layer_map(given, 2, 6, "hidden-mse")


def test_hidden_mse_ignores_padding() -> None:
    teacher = _hidden(2)
    student = tuple(h.clone() for h in teacher)
    mask = torch.ones(B, S)
    mask[:, -1] = 0
    for h in student:
        h[:, -1] += 100.0  # differences only in padding
    assert float(hidden_mse(student, teacher, [1, 2], mask)) == pytest.approx(0.0)
    assert float(hidden_mse(student, teacher, [1, 2], None)) > 1.0


def test_hidden_mse_learns_a_projection_when_widths_differ() -> None:
    loss = build_loss(LossTerm(name=LossName.HIDDEN_MSE), LossDims(student_hidden=4, teacher_hidden=D))
    params = list(loss.parameters())
    assert params and params[0].shape == (D, 4)
    student = ModelOutputs(hidden_states=_hidden(2, width=4))
    teacher = ModelOutputs(hidden_states=_hidden(6))
    value = loss(_batch(student, teacher))
    value.backward()
    assert params[0].grad is not None


def test_attention_mse_averages_heads_when_counts_differ() -> None:
    teacher = _attn(2, heads=4)
    student = tuple(a.mean(dim=1, keepdim=True).expand(-1, 2, -1, -1) for a in teacher)
    assert float(attention_mse(student, teacher, [1, 2])) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("fn", [embedding_mse, embedding_cosine])
def test_matryoshka_prefixes_count(fn) -> None:  # type: ignore[no-untyped-def]
    t = torch.randn(B, D)
    s = t.clone()
    s[:, D // 2 :] = torch.randn(B, D - D // 2)  # equal on the first half only
    full = float(fn(s, t))
    with_prefix = float(fn(s, t, [D // 2]))
    assert with_prefix == pytest.approx(full / 2, rel=1e-4)  # mean of (full, 0)


def test_matryoshka_dim_wider_than_embedding_fails() -> None:
    with pytest.raises(ValueError, match="exceed"):
        embedding_mse(torch.randn(2, 4), torch.randn(2, 4), [8])


def test_embedding_width_mismatch_names_output_dim() -> None:
    with pytest.raises(ValueError, match="outputDim"):
        embedding_cosine(torch.randn(2, 4), torch.randn(2, 8))


def test_embedding_cosine_ignores_norm_and_mse_does_not() -> None:
    t = torch.randn(B, D)
    assert float(embedding_cosine(3 * t, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(embedding_mse(3 * t, t)) > 1.0


def test_infonce_prefers_aligned_batches_and_sharpens_with_scale() -> None:
    t = torch.randn(16, D)
    aligned = float(infonce(t, t, scale=20.0))
    shuffled = float(infonce(t[torch.randperm(16)], t, scale=20.0))
    assert aligned < shuffled
    assert float(infonce(t, t, scale=100.0)) < aligned
    assert float(infonce(t, t, scale=1000.0)) == pytest.approx(0.0, abs=1e-3)


def test_infonce_temperature_is_inverse_scale() -> None:
    t, s = torch.randn(8, D), torch.randn(8, D)
    by_temp = build_loss(LossTerm(name=LossName.INFONCE, temperature=0.1), LossDims())
    by_scale = build_loss(LossTerm(name=LossName.INFONCE, scale=10.0), LossDims())
    batch = LossInputs(ModelOutputs(embedding=s), ModelOutputs(embedding=t))
    assert float(by_temp(batch)) == pytest.approx(float(by_scale(batch)))


def test_weighted_loss_sums_terms_and_reports_each() -> None:
    terms = [
        LossTerm(name=LossName.LOGIT_KL, weight=2.0, temperature=2.0),
        LossTerm(name=LossName.CROSS_ENTROPY),
        LossTerm(name=LossName.HIDDEN_MSE, weight=0.0),
    ]
    total_loss = WeightedLoss(terms, LossDims())
    student, teacher = _same(LossName.LOGIT_KL), _same(LossName.LOGIT_KL)
    batch = _batch(student, teacher)
    total, parts = total_loss(batch)
    assert set(parts) == {"logit-kl", "cross-entropy"}  # weight 0 terms are not built
    assert float(total) == pytest.approx(2 * parts["logit-kl"] + parts["cross-entropy"], rel=1e-5)
    assert total_loss.needs_teacher == frozenset()
    assert WeightedLoss([LossTerm(name=LossName.ATTENTION_MSE)], LossDims()).needs_teacher == {"attentions"}


def test_missing_input_names_the_loss() -> None:
    loss = build_loss(LossTerm(name=LossName.EMBEDDING_MSE), LossDims())
    with pytest.raises(ValueError, match="embedding-mse needs student embeddings"):
        loss(LossInputs(ModelOutputs(), ModelOutputs()))


def test_kl_is_finite_for_extreme_logits() -> None:
    s = torch.tensor([[1e4, -1e4, 0.0]])
    t = torch.tensor([[-1e4, 1e4, 0.0]])
    assert math.isfinite(float(logit_kl(s, t, 1.0)))
