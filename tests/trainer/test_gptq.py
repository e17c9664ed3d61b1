"""GPTQ 4-bit on the CPU with gptqmodel: a 4-layer cut of SmolLM2 quantized on real text, saved, reloaded
through the generation task's loader, and compared with the float model (size and logits)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kubestill.api.v1alpha1.distillationjob import QuantizationSpec

from .test_generation_e2e import smollm2  # noqa: F401 - the session fixture (GGUF -> safetensors)

pytestmark = pytest.mark.slow


def _calibration() -> list[str]:
    from kubestill_trainer.tasks.reranking_data import _articles, bbc_dir

    return [a["lead"] for a in _articles(bbc_dir())[:48]]


def test_gptq_4bit_student_loads_and_stays_close_to_float(smollm2: Path, tmp_path: Path) -> None:  # noqa: F811
    pytest.importorskip("gptqmodel", reason="GPTQ needs gptqmodel (installed by scripts/setup.sh)")
    from kubestill_trainer.latency import dir_size_mb
    from kubestill_trainer.quantize_gptq import quantize_gptq
    from kubestill_trainer.tasks.generation import load_generation_model
    from kubestill_trainer.tasks.generation_lm import drop_layers, load_causal_lm, load_tokenizer

    fp_dir = tmp_path / "fp"
    drop_layers(load_causal_lm(smollm2), [0, 10, 20, 29]).save_pretrained(str(fp_dir))
    load_tokenizer(smollm2).save_pretrained(str(fp_dir))
    (fp_dir / "kubestill.json").write_text(json.dumps({"task": "generation", "format": "kubestill-causal-lm",
                                                       "maxNewTokens": 8, "chat": True}))
    summary = quantize_gptq(fp_dir, tmp_path / "gptq", QuantizationSpec(method="gptq", bits=4, group_size=64),
                            _calibration())
    assert summary["bits"] == 4 and summary["calibrationTexts"] >= 8
    qcfg = json.loads((tmp_path / "gptq" / "quantize_config.json").read_text())
    assert qcfg["bits"] == 4 and qcfg["group_size"] == 64
    assert dir_size_mb(tmp_path / "gptq") < 0.5 * dir_size_mb(fp_dir)

    quantized = load_generation_model(tmp_path / "gptq", 64, 8)
    fp = load_generation_model(fp_dir, 64, 8)
    assert quantized.num_layers == 4
    text = "The government said on Monday that the economy grew faster than expected in the last quarter."
    ids = fp.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a = fp.lm(input_ids=ids).logits[0].float()
        b = quantized.lm(input_ids=ids).logits[0].float()
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1).mean()
    assert float(cosine) > 0.9, float(cosine)
