"""export, GPTQ step (student.quantization.method gptq): calibrate on the job's own train split, quantize with
`quantize_gptq`, then check the quantized model's greedy answers against the float model's.

Kept in stages/ (not next to `quantize_gptq`) because it composes the label store, the serving loader and the
generation task: `tasks.generation` loads GPTQ checkpoints through `quantize_gptq`, so the quantizer itself must
not import tasks back (that was an import cycle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kubestill.api.v1alpha1.distillationjob import QuantizationSpec

from ..labelstore import load_labels
from ..quantize_gptq import quantize_gptq
from ..serving.loader import load_for_serving
from ..tasks.generation_lm import load_tokenizer, prompt_text
from ..tasks.generation_metrics import generation_metrics


def export_gptq(labels_dir: Path, quant: QuantizationSpec, model_dir: Path, out: Path, check_rows: int = 8
                ) -> dict[str, Any]:
    """The export stage's GPTQ step: calibrate on the train split of `labels_dir` (prompt + teacher answer),
    quantize `model_dir` into `out`, then compare the quantized model's greedy answers with the float model's
    on up to `check_rows` test prompts. Returns `quantize_gptq`'s summary with `agreementWithFp32` (exact
    match, first token, token F1, ROUGE-L of quantized vs float answers) and `checkRows`. Raises
    GPTQUnavailable without gptqmodel, ValueError for a non-generation model or too few calibration texts."""
    labels = load_labels(labels_dir)
    rows, targets = labels.subset("train")
    tok = load_tokenizer(model_dir)
    chat = bool(getattr(tok, "chat_template", None))
    answers = targets.get("token_ids")
    texts = []
    for i, r in enumerate(rows):
        answer = "" if answers is None else str(tok.decode([int(t) for t in answers[i] if t >= 0]))
        texts.append(prompt_text(tok, r.text, chat) + answer)
    summary = quantize_gptq(model_dir, out, quant, texts)
    test_rows, _ = labels.subset("test")
    test_rows = test_rows[:check_rows]
    task, fp = load_for_serving(model_dir)
    _, quantized = load_for_serving(out)
    a = task.predict(fp, test_rows, len(test_rows))["token_ids"]
    b = task.predict(quantized, test_rows, len(test_rows))["token_ids"]
    eos = labels.meta.get("eosTokenId")
    agreement = generation_metrics(np.asarray(b), np.asarray(a), None if eos is None else int(eos))
    summary["agreementWithFp32"] = {k: v for k, v in agreement.items() if k != "mean_length"}
    summary["checkRows"] = len(test_rows)
    return summary
