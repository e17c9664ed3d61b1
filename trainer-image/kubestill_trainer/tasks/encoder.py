"""Transformer encoders shared by the encoder tasks: loading, cutting a student from the teacher's layers
(as DistilBERT did), pooling, and the on-disk format of a kubestill model directory.

A kubestill model directory holds the encoder's `config.json`, the tokenizer, `model.safetensors` (the
whole task model: encoder + head) and `kubestill.json` (task, labels, pooling, ... : how to load and call it).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from kubestill.api.triton import MODEL_CARD


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(path))


def load_encoder(path: Path) -> PreTrainedModel:
    """A pretrained encoder from a HF directory (a sentence-transformers directory's root works too)."""
    return AutoModel.from_pretrained(str(path), attn_implementation="sdpa")  # type: ignore[no-any-return]


def encoder_from_config(path: Path) -> PreTrainedModel:
    """An encoder with random weights from the config in `path` (weights are loaded by the task model)."""
    config = AutoConfig.from_pretrained(str(path))
    return AutoModel.from_config(config, attn_implementation="sdpa")  # type: ignore[no-untyped-call,no-any-return]


def set_attention(model: PreTrainedModel, eager: bool) -> None:
    """Attention maps need the eager implementation; sdpa is faster otherwise."""
    model.set_attn_implementation("eager" if eager else "sdpa")


def layer_list(model: PreTrainedModel) -> nn.ModuleList:
    """The transformer block list of an encoder (BERT: encoder.layer), found by its length."""
    n = int(model.config.num_hidden_layers)
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"cannot find the {n} transformer layers of {type(model).__name__}")


def evenly_spaced(num_layers: int, teacher_layers: int) -> list[int]:
    """0-based teacher layers for a student of `num_layers`: first and last kept, the rest spread."""
    if num_layers == 1:
        return [teacher_layers - 1]
    return [round(i * (teacher_layers - 1) / (num_layers - 1)) for i in range(num_layers)]


def cut_from_teacher(teacher: PreTrainedModel, layers: list[int]) -> PreTrainedModel:
    """A student with the teacher's embeddings and the listed (0-based) teacher layers, in order."""
    total = int(teacher.config.num_hidden_layers)
    bad = [i for i in layers if not 0 <= i < total]
    if bad:
        raise ValueError(f"student.architecture.fromTeacherLayers {bad}: the teacher has layers 0..{total - 1}")
    student = copy.deepcopy(teacher)
    target = layer_list(student)
    # Take the blocks from the student's own copy so they share its config object (attention settings such
    # as set_attn_implementation("eager") are read from it); a block listed twice gets its own copy.
    used: set[int] = set()
    blocks = []
    for i in layers:
        blocks.append(target[i] if i not in used else copy.deepcopy(target[i], {id(student.config): student.config}))
        used.add(i)
    kept = nn.ModuleList(blocks)
    # Replace the block list in place (its parent holds it under some attribute name).
    for _, module in student.named_modules():
        for attr, child in list(module.named_children()):
            if child is target:
                setattr(module, attr, kept)
    student.config.num_hidden_layers = len(layers)
    for i, block in enumerate(kept):  # some architectures keep the layer index for caches
        if hasattr(block, "layer_idx"):
            setattr(block, "layer_idx", i)  # noqa: B010 - typed as a Module attribute
    return student


def smaller_encoder(teacher: PreTrainedModel, num_layers: int, hidden_size: int | None) -> PreTrainedModel:
    """A randomly initialised encoder of the teacher's family, narrower and/or shallower."""
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = num_layers
    if hidden_size is not None and hidden_size != config.hidden_size:
        heads = max(1, hidden_size // 64)
        if hidden_size % heads:
            raise ValueError(f"student.architecture.hiddenSize {hidden_size} is not a multiple of 64")
        config.hidden_size = hidden_size
        config.num_attention_heads = heads
        config.intermediate_size = 4 * hidden_size
    return AutoModel.from_config(config, attn_implementation="sdpa")  # type: ignore[no-untyped-call,no-any-return]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the real tokens' states ([B, S, D], [B, S] -> [B, D])."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1e-9)


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "mean":
        return mean_pool(hidden, mask)
    if mode == "cls":
        return hidden[:, 0]
    raise ValueError(f"unknown pooling {mode!r} (mean or cls)")


def tokenize(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int, pairs: list[str] | None = None
) -> dict[str, torch.Tensor]:
    enc = tokenizer(texts, pairs, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def encoder_inputs(encoder: PreTrainedModel, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The features this encoder accepts (token_type_ids only where the architecture has them)."""
    keep = {"input_ids", "attention_mask"}
    if getattr(encoder.config, "type_vocab_size", 0):
        keep.add("token_type_ids")
    return {k: v for k, v in features.items() if k in keep}


def save_model_dir(
    path: Path, model: nn.Module, encoder: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
    card: Mapping[str, Any],
) -> None:
    """Write a kubestill model directory (see the module docstring)."""
    path.mkdir(parents=True, exist_ok=True)
    encoder.config.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / MODEL_CARD).write_text(json.dumps(dict(card), indent=2) + "\n")


def read_card(path: Path) -> dict[str, Any] | None:
    """The kubestill.json of a model directory, or None for a plain Hugging Face directory."""
    card = path / MODEL_CARD
    return json.loads(card.read_text()) if card.exists() else None


def load_state(model: nn.Module, path: Path) -> None:
    """Load model.safetensors; an int8 export has none (its loader quantizes the skeleton, then loads)."""
    weights = path / "model.safetensors"
    if weights.exists() or not (path / "model_int8.pt").exists():
        model.load_state_dict(load_file(str(weights)))


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
