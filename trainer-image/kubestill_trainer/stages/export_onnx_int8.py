"""export: model_int8.onnx beside model.onnx, kept only where it answers as the float graph does.

ONNX Runtime's dynamic quantisation (`onnxruntime.quantization.quantize_dynamic`: weights int8, activations
quantised at run time; the library's defaults, per tensor) of the exported graph, then both graphs run on the
held-out rows (the labels' test split, else validation) and compared (`int8_verdict`). Kept when it agrees
within the stated tolerance, deleted otherwise, so the float graph serves. The verdict, with the figures and
the tolerance, goes into kubestill.json (`onnx.int8`, which the serving path reads) and export.json.

Measured on BBC titles (60 held-out rows): the static classification student quantised agrees with the float
one on every row (logits within 0.07); the MiniLM teacher with a fitted head agrees on 0.82 of them, also with
its head or its last two matrix products left in float, so the gate, not a list of layers, decides.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..labelstore import load_labels
from ..outputs import Array
from ..tasks.metrics import mean_cosine
from ..tasks.onnx_model import INT8_ONNX_FILE, ONNX_FILE, OnnxModel

log = logging.getLogger(__name__)

# Tolerances, stated once: a classifier's int8 graph may change the top class of at most 1 held-out row in
# 100; an embedder's int8 vectors must keep a mean cosine of 0.99 to the float ones.
MIN_AGREEMENT = 0.99
MIN_COSINE = 0.99
CHECK_ROWS = 512  # held-out rows compared at most (enough to see a 1% change, quick to run)
LOGITS = "LOGITS"


def int8_verdict(float_out: Mapping[str, Array], int8_out: Mapping[str, Array],
                 min_agreement: float = MIN_AGREEMENT, min_cosine: float = MIN_COSINE) -> dict[str, Any]:
    """Whether the int8 graph's outputs hold the float graph's quality on the same rows: LOGITS by the share
    of rows whose top class is the same (`agreementWithFloat` >= `min_agreement`), any other output ([N, D]
    vectors) by the mean row-wise cosine (`cosineToFloat` >= `min_cosine`). Returns the figures, the
    tolerances and `kept`; raises ValueError when the outputs differ in names or shapes.

    >>> f = {"LOGITS": np.array([[2.0, 1.0], [0.0, 3.0]])}
    >>> int8_verdict(f, {"LOGITS": np.array([[1.9, 1.1], [0.1, 2.9]])})["kept"]
    True
    >>> v = int8_verdict(f, {"LOGITS": np.array([[0.9, 1.1], [0.1, 2.9]])})
    >>> v["agreementWithFloat"], v["kept"]
    (0.5, False)
    >>> e = {"EMBEDDING": np.array([[1.0, 0.0], [0.0, 1.0]])}
    >>> int8_verdict(e, {"EMBEDDING": np.array([[1.0, 0.01], [0.01, 1.0]])})["kept"]
    True
    """
    if set(float_out) != set(int8_out) or any(float_out[k].shape != int8_out[k].shape for k in float_out):
        raise ValueError(f"int8 outputs {sorted(int8_out)} do not match the float graph's {sorted(float_out)}")
    out: dict[str, Any] = {}
    kept = True
    for name, a in float_out.items():
        b = int8_out[name]
        if name == LOGITS:
            out["agreementWithFloat"] = float(np.mean(a.argmax(-1) == b.argmax(-1)))
            out["minAgreement"] = min_agreement
            kept &= out["agreementWithFloat"] >= min_agreement
        else:
            out["cosineToFloat"] = mean_cosine(a, b)
            out["minCosine"] = min_cosine
            kept &= out["cosineToFloat"] >= min_cosine
    out["kept"] = bool(kept)
    return out


def held_out_texts(labels_dir: Path, limit: int = CHECK_ROWS) -> list[str]:
    """Texts of the labels' test rows (validation when there are none), at most `limit`; none without labels
    (an export run on its own, e.g. from a teacher)."""
    if not (labels_dir / "rows.jsonl").exists():
        return []
    labels = load_labels(labels_dir)
    for split in ("test", "validation"):
        rows, _ = labels.subset(split)
        if rows:
            return [r.text for r in rows[:limit]]
    return []


def export_onnx_int8(model_dir: Path, texts: Sequence[str], max_length: int, batch: int = 64,
                     min_agreement: float = MIN_AGREEMENT, min_cosine: float = MIN_COSINE) -> dict[str, Any]:
    """Quantise `model_dir`/model.onnx to model_int8.onnx and keep it when `int8_verdict` (with these
    tolerances) says so on `texts` (deleted otherwise, and never kept without texts to check it on). Returns
    what kubestill.json records under onnx.int8: file, kept, rows, the figures and tolerances, or the reason it
    was not kept."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = model_dir / INT8_ONNX_FILE
    if not texts:
        target.unlink(missing_ok=True)
        return {"kept": False, "reason": "no held-out rows to check int8 against the float graph on"}
    quantize_dynamic(str(model_dir / ONNX_FILE), str(target), weight_type=QuantType.QInt8)
    graphs = (OnnxModel(model_dir, max_length, graph=ONNX_FILE), OnnxModel(model_dir, max_length, graph=target.name))
    outs = [[g.run(texts[i:i + batch]) for i in range(0, len(texts), batch)] for g in graphs]
    joined = [{k: np.concatenate([part[k] for part in parts]) for k in parts[0]} for parts in outs]
    verdict = {"file": target.name, "rows": len(texts),
               **int8_verdict(joined[0], joined[1], min_agreement, min_cosine)}
    if not verdict["kept"]:
        target.unlink()
    log.info("onnx int8: %s", verdict)
    print(f"onnx int8: {'kept' if verdict['kept'] else 'not kept, the float graph serves'}: {verdict}", flush=True)
    return verdict
