"""Quantization-aware training: fake quantization puts weights on the int grid with a straight-through
gradient, layers keep their parameters (checkpoints and exporters see a plain model), heads stay float,
and training with fake quantization makes the really quantized model better than training without it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kubestill.api.v1alpha1.distillationjob import QuantizationSpec
from kubestill_trainer.qat import FakeQuantLinear, fake_quantize, prepare_qat, strip_qat


@pytest.mark.parametrize(("bits", "group", "levels"), [(8, None, 256), (4, None, 16), (4, 16, 16), (2, 8, 4)])
def test_fake_quantize_puts_each_group_on_a_grid(bits: int, group: int | None, levels: int) -> None:
    w = torch.randn(6, 32)
    q = fake_quantize(w, bits, group)
    size = group or 32
    for row in q.reshape(6, -1, size).reshape(-1, size):
        scale = row.abs().max() / (2 ** (bits - 1) - 1)
        steps = row / scale
        assert torch.allclose(steps, steps.round(), atol=1e-4)
        assert len(steps.round().unique()) <= levels
    assert float((q - w).abs().max()) <= float(w.abs().max()) / (2 ** (bits - 1) - 1)


def test_fake_quantize_passes_gradients_straight_through() -> None:
    w = torch.randn(4, 8, requires_grad=True)
    (fake_quantize(w, 4, None) * torch.arange(8.0)).sum().backward()
    assert w.grad is not None
    assert torch.allclose(w.grad, torch.arange(8.0).expand(4, 8))


@pytest.mark.parametrize(("quant", "bits", "group"), [
    (QuantizationSpec(method="int8"), 8, None),
    (QuantizationSpec(method="gptq", bits=4, group_size=16), 4, 16),
])
def test_prepare_switches_linears_but_not_heads_and_keeps_parameters(quant: QuantizationSpec, bits: int,
                                                                   group: int | None) -> None:
    model = nn.Sequential()
    model.add_module("body", nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32)))
    model.add_module("head", nn.Linear(32, 3))
    keys = list(model.state_dict())
    assert prepare_qat(model, quant) == 2
    assert isinstance(model.body[0], FakeQuantLinear) and type(model.head) is nn.Linear
    assert (model.body[0].bits, model.body[0].group_size) == (bits, group)
    assert list(model.state_dict()) == keys
    assert strip_qat(model) == 2 and type(model.body[0]) is nn.Linear


def _train(qat: bool, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    x = torch.randn(256, 16)
    y = torch.sin(x @ torch.randn(16, 4))
    model = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 4))
    if qat:
        prepare_qat(model, QuantizationSpec(method="gptq", bits=2, group_size=-1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    strip_qat(model)
    return model, x, y


def test_training_with_fake_quantization_helps_the_quantized_model() -> None:
    # 2-bit weights make the rounding error large enough to matter; compare after real quantization.
    def quantized_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Linear):
                    m.weight.copy_(fake_quantize(m.weight, 2, None))
            return float(nn.functional.mse_loss(model(x), y))

    plain, aware = _train(False), _train(True)
    assert quantized_loss(*aware) < 0.7 * quantized_loss(*plain)
