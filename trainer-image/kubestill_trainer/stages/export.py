"""export: the StudentModel artifact.

export/model/   merged weights (safetensors) + tokenizer + kubestill.json (task, labels, spec, ...), and
                model.onnx from torch.onnx.export(dynamo=True, dynamic batch and sequence axes), checked against
                torch (max abs diff; opset and diff in kubestill.json "onnx"): written for the tasks Triton
                serves through ONNX Runtime (classification, embedding) unless output.serving.runtime is
                torch, and for any task listing onnx in output.formats
                model_int8.onnx beside it: ONNX Runtime's dynamic int8 quantisation, kept (and served) only
                where it agrees with model.onnx on held-out rows (export_onnx_int8; verdict in "onnx.int8")
export/sentence-transformers/, export/transformers/   the same student in the libraries' layouts
                (export_standard: which layout for which student, each checked against it)
export/int8/    dynamic int8 quantization (student.quantization.method int8), checked against fp32
export/gptq/    GPTQ (student.quantization.method gptq; generation students), checked against fp32
export/triton/  model.py (the generic python-backend model) + config.pbtxt (defaults from output.serving)
"""

from __future__ import annotations

import json
import logging
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kubestill.api.triton import render_config_pbtxt
from kubestill.api.v1alpha1.common import ServingRuntime
from kubestill.api.v1alpha1.distillationjob import DistillationJobSpec, ExportFormat, QuantizationMethod

from ..context import RunContext
from ..labelstore import load_labels
from ..serving.loader import INT8, INT8_WEIGHTS, load_for_serving, quantize_int8
from ..storage import write_json
from ..tasks.base import MODEL_CARD, DistillTask, TaskModel
from ..tasks.metrics import mean_cosine
from ..tasks.onnx_model import INT8_ONNX_FILE, ONNX_FILE
from .export_gptq import export_gptq
from .export_onnx_int8 import export_onnx_int8, held_out_texts
from .export_standard import export_standard

log = logging.getLogger(__name__)
ONNX_TOLERANCE = 1e-3


class _OnnxWrapper(nn.Module):
    """Positional tensors in, plain tensors out: what the ONNX exporter traces."""

    def __init__(self, task: DistillTask, model: TaskModel, names: list[str]) -> None:
        super().__init__()
        self.task, self.model, self.names = task, model, names

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.task.onnx_forward(self.model, dict(zip(self.names, tensors, strict=True)))


def export_onnx(task: DistillTask, model: TaskModel, out: Path) -> dict[str, Any]:
    """`out`/model.onnx, checked against torch on the export example and on a batch of another shape; raises
    ValueError past ONNX_TOLERANCE (max abs difference of the outputs). Returns what kubestill.json records."""
    features, output_names = task.onnx_example(model)
    names = list(features)
    wrapper = _OnnxWrapper(task, model.cpu().eval(), names).eval()
    batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("sequence", min=2, max=32768)
    dynamic = (tuple({0: batch, 1: seq} for _ in names),)  # one entry: the *tensors parameter
    args = tuple(features[n] for n in names)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.onnx"
    torch.onnx.export(wrapper, args, str(path), dynamo=True, input_names=names, output_names=output_names,
                      dynamic_shapes=dynamic, external_data=False)
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # Check on the example and on a batch of another shape (the dynamic axes must really be dynamic).
    from ..tasks.base import Row

    other = model.encode([Row(str(i), "check " * (3 + 4 * i)) for i in range(3)], 64)
    worst = 0.0
    for feats in (features, other):
        with torch.no_grad():
            expected = [t.numpy() for t in task.onnx_forward(model, feats)]
        got = session.run(output_names, {n: feats[n].numpy() for n in names})
        worst = max(worst, *(float(np.max(np.abs(e - g))) for e, g in zip(expected, got, strict=True)))
    print(f"onnx: max abs diff vs torch {worst:.3e} (tolerance {ONNX_TOLERANCE:g})", flush=True)
    if worst > ONNX_TOLERANCE:
        raise ValueError(f"ONNX export differs from torch by {worst:.3e} > {ONNX_TOLERANCE:g}; set "
                         "output.serving.runtime torch to serve the torch model without an ONNX export")
    import onnx

    opset = next(o.version for o in onnx.load(str(path), load_external_data=False).opset_import
                 if o.domain in ("", "ai.onnx"))
    return {"file": path.name, "opset": int(opset), "maxAbsDiff": worst, "tolerance": ONNX_TOLERANCE,
            "inputs": names, "outputs": output_names}


def wants_onnx(task: DistillTask, spec: DistillationJobSpec) -> bool:
    """Export model.onnx: asked for in output.formats, or served from it (see the module docstring)."""
    return ExportFormat.ONNX in spec.output.formats or (
        task.serves_onnx and spec.output.serving.runtime == ServingRuntime.AUTO)


def export_int8(ctx: RunContext, model_dir: Path, out: Path) -> dict[str, Any]:
    task, fp32 = load_for_serving(model_dir)
    int8 = quantize_int8(task.load_model(model_dir))
    shutil.rmtree(out, ignore_errors=True)
    # Not model.onnx either: it is the fp32 graph, and an int8 directory must serve int8.
    shutil.copytree(model_dir, out, ignore=shutil.ignore_patterns("model.safetensors", ONNX_FILE, INT8_ONNX_FILE))
    torch.save(int8.state_dict(), out / INT8_WEIGHTS)
    card = json.loads((out / MODEL_CARD).read_text())
    card["quantization"] = INT8
    (out / MODEL_CARD).write_text(json.dumps(card, indent=2) + "\n")
    # Compare with fp32 on the held-out rows: agreement (classification) or cosine (embedding).
    labels = load_labels(ctx.path("labels"))
    rows, _ = labels.subset("test")
    rows = rows[:256]
    _, reloaded = load_for_serving(out)
    a, b = task.predict(fp32, rows, 32), task.predict(reloaded, rows, 32)
    check: dict[str, Any] = {"dir": "int8", "rows": len(rows)}
    if "logits" in a:
        check["agreementWithFp32"] = float(np.mean(a["logits"].argmax(-1) == b["logits"].argmax(-1)))
    if "embedding" in a:
        check["cosineToFp32"] = mean_cosine(a["embedding"], b["embedding"])
    log.info("int8: %s", check)
    return check


def onnx_int8(ctx: RunContext, model_dir: Path) -> dict[str, Any]:
    """export_onnx_int8 on the job's held-out rows; a quantiser failure leaves the float graph serving."""
    try:
        return export_onnx_int8(model_dir, held_out_texts(ctx.path("labels")), ctx.spec.training.max_seq_length)
    except Exception as err:  # int8 is an optimisation: its failure must not fail the export
        (model_dir / INT8_ONNX_FILE).unlink(missing_ok=True)
        log.warning("no int8 graph, the float one serves: %s", err)
        return {"kept": False, "reason": f"{type(err).__name__}: {err}"[:2000]}


def run_export(ctx: RunContext) -> dict[str, Any]:
    spec = ctx.spec
    student_dir = ctx.path("train", "student")
    if not student_dir.exists():
        raise FileNotFoundError(f"{student_dir} is missing: run the train stage first")
    out = ctx.path("export")
    model_dir = out / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.copytree(student_dir, model_dir)
    card = json.loads((model_dir / MODEL_CARD).read_text())
    card.update({"task": str(spec.task), "maxSeqLength": spec.training.max_seq_length, "spec": spec.to_wire()})
    (model_dir / MODEL_CARD).write_text(json.dumps(card, indent=2) + "\n")
    summary: dict[str, Any] = {"model": "model"}
    task, model = load_for_serving(model_dir)
    summary.update(export_standard(model, out))  # export/sentence-transformers or export/transformers
    if wants_onnx(task, spec):
        try:
            card["onnx"] = export_onnx(task, model, model_dir)
            if task.serves_onnx:
                card["onnx"]["int8"] = onnx_int8(ctx, model_dir)
            summary["onnx"] = {**card["onnx"], "file": f"model/{ONNX_FILE}"}
        except Exception as err:  # any exporter failure: asked for, the stage fails; else torch serves
            if ExportFormat.ONNX in spec.output.formats:
                raise
            (model_dir / ONNX_FILE).unlink(missing_ok=True)
            summary["onnxSkipped"] = f"{type(err).__name__}: {err}"[:2000]
            log.warning("no model.onnx, Triton will serve the torch model: %s", summary["onnxSkipped"])
    quant = spec.student.quantization
    if quant is not None and quant.method == QuantizationMethod.INT8:
        summary["int8"] = export_int8(ctx, model_dir, out / "int8")
    if quant is not None and quant.method == QuantizationMethod.GPTQ:
        summary["gptq"] = export_gptq(ctx.path("labels"), quant, model_dir, out / "gptq")
    triton = out / "triton"
    triton.mkdir(parents=True, exist_ok=True)
    source = resources.files("kubestill_trainer.serving").joinpath("triton_model.py")
    (triton / "model.py").write_text(source.read_text())
    (triton / "config.pbtxt").write_text(render_config_pbtxt(
        spec.output.student_model_name, spec.task, spec.output.serving, str(model_dir.resolve()),
        card.get("labels") or ()))
    summary["triton"] = "triton"
    card["exports"] = summary
    (model_dir / MODEL_CARD).write_text(json.dumps(card, indent=2) + "\n")
    write_json(out / "export.json", summary)
    return summary
