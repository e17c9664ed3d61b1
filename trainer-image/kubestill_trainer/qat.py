"""Quantization-aware training (`student.quantization.aware: true`): the student's Linear layers see their
weights as they will be after quantization (fake quantization: quantize, dequantize, straight-through
gradient), so training compensates for the rounding error before the export stage really quantizes.

- int8: symmetric per-output-channel 8-bit weights, as `quantize_int8` (dynamic int8) stores them.
- gptq: symmetric `bits`-bit weights per group of `groupSize` input columns (round-to-nearest: GPTQ's
  error-compensating rounding happens at export, on weights that already tolerate the grid).

The layers stay `nn.Linear` subclasses with the same parameters, so checkpoints, `save` and the exporters
see a plain model; `strip_qat` turns them back into `nn.Linear` when the module type matters.
"""

from __future__ import annotations

import torch
from torch import nn

from kubestill.api.v1alpha1.distillationjob import QuantizationMethod, QuantizationSpec

# Heads stay in float: tiny, and int8 export keeps them fp32 too (see serving.loader).
SKIP = ("head", "dense", "score", "lm_head", "classifier")


def fake_quantize(weight: torch.Tensor, bits: int, group_size: int | None) -> torch.Tensor:
    """Symmetric round-to-nearest fake quantization with a straight-through gradient.

    Scales per output row (group_size None or -1) or per group of `group_size` input columns."""
    qmax = 2 ** (bits - 1) - 1
    out_f, in_f = weight.shape
    if group_size and 0 < group_size < in_f and in_f % group_size == 0:
        w = weight.reshape(out_f, in_f // group_size, group_size)
    else:
        w = weight.reshape(out_f, 1, in_f)
    scale = w.detach().abs().amax(dim=-1, keepdim=True).clamp_min(1e-8) / qmax
    q = torch.clamp(torch.round(w / scale), -qmax - 1, qmax) * scale
    # Straight-through estimator: forward uses q, backward passes the gradient to w unchanged.
    out: torch.Tensor = (w + (q - w).detach()).reshape(out_f, in_f)
    return out


class FakeQuantLinear(nn.Linear):
    """nn.Linear whose forward uses fake-quantized weights (parameters unchanged)."""

    bits: int = 8
    group_size: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, fake_quantize(self.weight, self.bits, self.group_size), self.bias)


def qat_settings(quant: QuantizationSpec) -> tuple[int, int | None]:
    if quant.method == QuantizationMethod.INT8:
        return 8, None
    return quant.bits or 4, quant.group_size


def prepare_qat(model: nn.Module, quant: QuantizationSpec) -> int:
    """Switch every Linear (but heads) to fake quantization in place; returns how many were switched."""
    bits, group = qat_settings(quant)
    count = 0
    for name, module in model.named_modules():
        if type(module) is nn.Linear and name.rsplit(".", 1)[-1] not in SKIP:
            module.__class__ = FakeQuantLinear
            module.bits, module.group_size = bits, group  # type: ignore[assignment]
            count += 1
    return count


def strip_qat(model: nn.Module) -> int:
    """Back to plain nn.Linear (same weights); returns how many layers were restored."""
    count = 0
    for module in model.modules():
        if isinstance(module, FakeQuantLinear):
            module.__class__ = nn.Linear  # type: ignore[assignment]
            count += 1
    return count
