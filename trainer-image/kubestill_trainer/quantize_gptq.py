"""GPTQ post-training quantization of a causal-LM student (Frantar et al. 2022) with `gptqmodel`, the
maintained successor of AutoGPTQ; it quantizes on the CPU too (minutes for a 100M-parameter model).

`student.quantization: {method: gptq, bits: 4, groupSize: 64}` -> export/gptq/: a gptqmodel checkpoint
(packed int weights + scales, quantize_config.json), the tokenizer and a kubestill.json with
`"quantization": "gptq"`, loadable for serving by `load_gptq`. The calibration texts are the job's own
prompts (train split), so the quantizer sees the activations the model will serve.

gptqmodel is optional: the `gptq` extra (`pip install 'kubestill[trainer,gptq]'`), in an environment of its own,
since it requires numpy >= 2 while tritonserver's python backend stub needs numpy < 2 (scripts/setup.sh builds
both venvs; the images carry no GPTQ). The export stage fails with an actionable message when it is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from kubestill.api.v1alpha1.distillationjob import QuantizationSpec

GPTQ = "gptq"
DEFAULT_BITS = 4


class GPTQUnavailable(RuntimeError):
    """gptqmodel is not installed or cannot run here."""


def _import() -> Any:
    # gptqmodel reads these at import: use both cores for packing, and never write under $HOME by surprise.
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(os.cpu_count() or 1))
    os.environ.setdefault("HF_HOME", str(Path(tempfile.gettempdir()) / "kubestill-hf"))
    try:
        import gptqmodel
    except ImportError as e:
        raise GPTQUnavailable(
            "student.quantization.method gptq needs the gptqmodel package in the trainer's environment "
            f"(pip install 'kubestill[trainer,gptq]', numpy 2; the project's trainer image has none): {e}") from None
    return gptqmodel


def quantize_gptq(model_dir: Path, out: Path, quant: QuantizationSpec, calibration: list[str],
                  batch_size: int = 4) -> dict[str, Any]:
    """Quantize the Hugging Face causal LM in `model_dir` into `out`; returns a summary for export.json."""
    card_file = model_dir / "kubestill.json"
    card = json.loads(card_file.read_text()) if card_file.exists() else {}
    if card.get("task", "generation") != "generation":
        raise ValueError(f"student.quantization.method gptq applies to generation students (causal LMs), "
                         f"not {card.get('task')}; use int8 for encoders")
    texts = [t for t in calibration if len(t.split()) >= 4]
    if len(texts) < 8:
        raise ValueError(f"GPTQ needs at least 8 calibration texts of 4+ words; the train split has {len(texts)}")
    gptqmodel = _import()
    bits = quant.bits or DEFAULT_BITS
    config = gptqmodel.QuantizeConfig(bits=bits, group_size=quant.group_size, offload_to_disk=False)
    start = time.monotonic()
    model = gptqmodel.GPTQModel.load(str(model_dir), config, device="cpu")
    model.quantize(texts, batch_size=batch_size)
    shutil.rmtree(out, ignore_errors=True)
    model.save(str(out))
    seconds = time.monotonic() - start
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (model_dir / name).exists() and not (out / name).exists():
            shutil.copy2(model_dir / name, out / name)
    card.update(quantization=GPTQ, bits=bits, groupSize=quant.group_size)
    (out / "kubestill.json").write_text(json.dumps(card, indent=2) + "\n")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    return {"dir": out.name, "bits": bits, "groupSize": quant.group_size, "calibrationTexts": len(texts),
            "seconds": round(seconds, 1), "sizeMb": round(size, 2)}


def load_gptq(path: Path) -> Any:
    """The quantized Hugging Face model (gptqmodel's quantized Linear kernels; CPU or GPU)."""
    gptqmodel = _import()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return gptqmodel.GPTQModel.load(str(path), device=device).model
