"""A linear head fitted in closed form on frozen features: multinomial logistic regression with an L2 penalty,
solved by L-BFGS. Used to make a classification teacher from a sentence encoder (fit_head.py) and to start a
static student's fresh head where its features already are (the "linear probe" of LP-FT: Kumar et al., ICLR
2022, "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import torch
from transformers import PreTrainedModel

from .base import Features, Row
from .encoder import encoder_inputs, pool


class PooledEncoder(Protocol):
    """What pooled_states reads of a model (an EncoderClassifier's; a protocol, since classification imports
    this module)."""

    encoder: PreTrainedModel
    pooling: str
    max_length: int
    training: bool

    def encode(self, rows: Sequence[Row], max_length: int) -> Features: ...
    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...
    def eval(self) -> PooledEncoder: ...
    def train(self, mode: bool = True) -> PooledEncoder: ...


@torch.no_grad()
def pooled_states(model: PooledEncoder, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """The pooled encoder states an encoder classifier's head reads: [len(texts), hidden] float32, computed
    in eval mode on the model's device, returned on the CPU; the model's training mode is restored."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(texts), batch_size):
        feats = model.encode([Row(str(j), t) for j, t in enumerate(texts[i : i + batch_size])], model.max_length)
        feats = {k: v.to(device) for k, v in feats.items()}
        hidden = model.encoder(**encoder_inputs(model.encoder, feats)).last_hidden_state
        out.append(pool(hidden, feats["attention_mask"], model.pooling).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, 0))


def fit_linear_head(features: torch.Tensor, labels: torch.Tensor, num_classes: int, l2: float = 1e-3,
                    iterations: int = 200) -> torch.nn.Linear:
    """Multinomial logistic regression on `features` [N, D] with class indices `labels` [N] in [0,
    num_classes): cross-entropy plus `l2` times the squared weights of the standardised features, L-BFGS with
    strong Wolfe line search, at most `iterations` iterations (deterministic: seeded). The standardisation is
    folded back, so the returned Linear(D, num_classes) reads raw features. Raises ValueError on an empty or
    mismatched input or a label out of range."""
    if features.ndim != 2 or features.shape[0] == 0 or labels.shape != (features.shape[0],):
        raise ValueError(f"fit_linear_head needs features [N, D] and labels [N] with N > 0, got "
                         f"{tuple(features.shape)} and {tuple(labels.shape)}")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"fit_linear_head: labels must lie in [0, {num_classes}), got {int(labels.min())}.."
                         f"{int(labels.max())}")
    torch.manual_seed(0)
    features = features.float()
    head = torch.nn.Linear(features.shape[1], num_classes)
    mean = features.mean(0)
    std = features.std(0).nan_to_num(1.0).clamp_min(1e-6)  # one row: std is nan, treat as unit scale
    x = (features - mean) / std
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), labels) + l2 * head.weight.pow(2).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    with torch.enable_grad():
        opt.step(closure)  # type: ignore[no-untyped-call]
    # Fold the standardisation into the head so it reads raw pooled states.
    with torch.no_grad():
        w = head.weight / std
        head.bias.sub_((w * mean).sum(dim=1))
        head.weight.copy_(w)
    return head
