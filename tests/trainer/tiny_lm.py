"""Tiny random models with tokenizers trained here on a few hundred lines (seconds, nothing downloaded): the
causal LM teacher/student pairs of the tokenizer and temperature tests (from ../shared/cases/turn2/07's
make_models.py), and an exported classifier artifact for the serving tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CORPUS = [f"news item {i}: markets rise as rates fall and sport teams win the cup {i % 7}" for i in range(200)] + \
    [f"write one sentence about topic {w}" for w in ["business", "sport", "tech", "politics", "entertainment"]] * 20


def tokenizer(vocab: int, kind: str, lowercase: bool = False, bos: bool = False) -> Any:
    """A fast tokenizer: byte-level BPE ("bpe", the teacher's) or WordPiece ("wp"); `bos` prepends <s> to every
    text it encodes with special tokens (as Llama's do), without a chat template."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<eos>", "<pad>", *(["<s>"] if bos else [])]
    if kind == "bpe":
        t = Tokenizer(models.BPE(unk_token="<unk>"))
        t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        t.decoder = decoders.ByteLevel()
        tr: Any = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        t = Tokenizer(models.WordPiece(unk_token="<unk>"))
        t.pre_tokenizer = pre_tokenizers.Whitespace()
        t.decoder = decoders.WordPiece()
        tr = trainers.WordPieceTrainer(vocab_size=vocab, special_tokens=specials)
    t.train_from_iterator(CORPUS, tr)
    if lowercase:
        t.normalizer = normalizers.Lowercase()
    if bos:
        t.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                         special_tokens=[("<s>", t.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>", eos_token="<eos>", pad_token="<pad>",
                                   **({"bos_token": "<s>"} if bos else {}))


def llama(tok: Any, vocab_size: int | None = None, seed: int = 0) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab_size or len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None))


def gpt2(tok: Any, vocab_size: int | None = None, seed: int = 0) -> Any:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(
        vocab_size=vocab_size or len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=128,
        eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))


def save(path: Path, model: Any, tok: Any) -> Path:
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def prompts(path: Path, n: int = 40) -> Path:
    path.write_text("".join(json.dumps({"id": str(i), "prompt": c}) + "\n" for i, c in enumerate(CORPUS[:n])))
    return path


def generation_spec(teacher: Path, student: Path, data: Path, work: Path, **labeling: Any) -> dict[str, Any]:
    """The job of the case's YAML files (a baseModelUri student)."""
    return {
        "task": "generation",
        "teacher": {"modelUri": f"file://{teacher}"},
        "student": {"baseModelUri": f"file://{student}"},
        "data": {"uri": f"file://{data}", "fields": {"text": "prompt"}},
        "labeling": {"batchSize": 8, "maxNewTokens": 6, "topK": 8, "dropEmpty": False, **labeling},
        "loss": {"terms": [{"name": "token-kl"}]},
        "training": {"epochs": 1, "batchSize": 8, "maxSeqLength": 32},
        "evaluation": {"minQualityRatio": 0.05},
        "output": {"studentModelName": "gen", "artifactUri": f"file://{work}"},
    }


def classifier_artifact(export: Path, labels: list[str]) -> Path:
    """An export directory as the export stage writes it, for a random tiny BERT classifier: `model/` (weights,
    tokenizer, kubestill.json with its class order `labels` and a spec) and `triton/model.py`."""
    from importlib import resources

    import torch
    from transformers import BertConfig, BertModel

    from kubestill_trainer.tasks.classification import EncoderClassifier

    torch.manual_seed(0)
    tok = tokenizer(120, "wp")
    encoder = BertModel(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32, max_position_embeddings=64, pad_token_id=tok.pad_token_id))
    EncoderClassifier(encoder, tok, labels, "mean", 32).save(export / "model")
    card = json.loads((export / "model" / "kubestill.json").read_text())
    card["spec"] = {"task": "classification", "teacher": {"modelUri": "file:///x"},
                    "student": {"architecture": {"numLayers": 1}}, "data": {"uri": "file:///x.jsonl"},
                    "loss": {"terms": [{"name": "logit-kl"}]},
                    "output": {"studentModelName": "s", "artifactUri": "file:///o"}}
    (export / "model" / "kubestill.json").write_text(json.dumps(card))
    (export / "triton").mkdir(parents=True, exist_ok=True)
    source = resources.files("kubestill_trainer.serving").joinpath("triton_model.py")
    (export / "triton" / "model.py").write_text(source.read_text())
    return export
