"""LoRA and QLoRA students (peft): low-rank adapters on a frozen base model, merged into the base weights
at save time when `student.lora.merge` (the servable artifact is then a plain model).

QLoRA loads the frozen base in 4-bit NF4 with bitsandbytes (Dettmers et al. 2023); this works on the CPU
too (bitsandbytes >= 0.45 ships CPU kernels). Merging into a 4-bit base would re-quantize the merged
weights, so the merge reloads the base in float and adds the trained adapters to it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from kubestill.api.v1alpha1.distillationjob import LoRASpec

# Adapter targets when `targetModules` is empty: every projection of the attention and MLP blocks.
DEFAULT_TARGETS: dict[str, list[str]] = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "bert": ["query", "key", "value", "dense"],
}


def target_modules(model: nn.Module, spec: LoRASpec) -> list[str]:
    """The module names to adapt: the spec's, the architecture's defaults, else every Linear but the head."""
    if spec.target_modules:
        return list(spec.target_modules)
    model_type = str(getattr(getattr(model, "config", None), "model_type", ""))
    if model_type in DEFAULT_TARGETS:
        return DEFAULT_TARGETS[model_type]
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    return sorted(names - {"lm_head", "classifier", "score", "head"})


def load_4bit(path: Path) -> PreTrainedModel:
    """The base model in 4-bit NF4 (QLoRA), computing in float32 on the CPU and bfloat16 on a GPU."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    cuda = torch.cuda.is_available()
    config = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.bfloat16 if cuda else torch.float32)
    return AutoModelForCausalLM.from_pretrained(
        str(path), quantization_config=config, device_map="cuda" if cuda else "cpu", dtype=torch.float32)


def apply_lora(model: PreTrainedModel, spec: LoRASpec, task_type: str = "CAUSAL_LM") -> nn.Module:
    """Wrap `model` with trainable adapters; every base weight is frozen."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if spec.qlora:
        # Casts norms to float32 and enables input gradients, as the QLoRA recipe needs.
        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model, use_gradient_checkpointing=False)
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=target_modules(model, spec), task_type=task_type)
    return get_peft_model(model, config)


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")


def merged_copy(peft_model: nn.Module, load_float_base: Callable[[], PreTrainedModel]) -> PreTrainedModel:
    """A plain model with the adapters added into float base weights; `peft_model` is left as it was.

    The adapters are copied onto a freshly loaded float base (always right, and needed for QLoRA whose
    base is 4-bit), then merged there."""
    from peft import get_peft_model, set_peft_model_state_dict
    from peft.utils import get_peft_model_state_dict

    base = load_float_base()
    wrapped: Any = peft_model
    fresh: Any = get_peft_model(base, wrapped.peft_config["default"])
    set_peft_model_state_dict(fresh, get_peft_model_state_dict(wrapped))
    merged: PreTrainedModel = fresh.merge_and_unload()
    return merged


def save_adapter(peft_model: nn.Module, path: Path) -> None:
    """Write only the adapters (adapter_config.json + adapter_model.safetensors) into `path`."""
    peft_model.save_pretrained(str(path))  # type: ignore[operator]


def load_adapter(base: PreTrainedModel, path: Path) -> nn.Module:
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(path))
