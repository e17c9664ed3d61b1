"""export/sentence-transformers and export/transformers: the student in layouts the libraries load themselves.

export/model is kubestill's own directory (one `model.safetensors` for the whole task model, keys prefixed
`encoder.`); sentence-transformers or transformers loading it report every weight MISSING and run random ones.
The layouts written here load with no missing or unexpected key and compute what kubestill computes:

- embedding student (`SentenceEncoder`) -> `sentence-transformers/`: Transformer + Pooling (mean or CLS, ours)
  [+ Dense, identity activation, when the student projects] [+ Normalize when it normalises].
  `SentenceTransformer(path).encode(texts)` returns our embeddings. A static student (numLayers 0) exports the
  same way: its encoder is the teacher's embedding block (token + position + type embeddings, LayerNorm) with no
  layer, which a Transformer module of 0 layers reproduces exactly; sentence-transformers' StaticEmbedding
  would drop the position embeddings and the LayerNorm and give other vectors.
- classifier cut from a Hugging Face classifier (`HFClassifier`) -> `transformers/`:
  `AutoModelForSequenceClassification` with `id2label` / `label2id`, the very class kubestill runs.
- classifier with kubestill's head (`EncoderClassifier`: mean or CLS pooling -> one Linear) ->
  `sentence-transformers/` with the head as a Dense layer (identity activation): `encode(texts)` returns the
  logits, and `labels.json` names their columns. No stock `*ForSequenceClassification` class computes this: BERT's
  runs its pooler (Linear + tanh) on the CLS token before the classifier, and none mean-pools.
- bi-encoder reranker (`RerankModel`, mode bi) -> `sentence-transformers/` of its encoder: our score is the cosine
  of query and passage embeddings, which is `model.similarity` (the layout's similarity function is cosine).
- cross-encoder reranker (`RerankModel`, mode cross: the pair encoded jointly, mean or CLS pooling, one
  Linear(hidden, 1), no activation) -> `sentence-transformers/` loaded by sentence-transformers' `CrossEncoder` (a
  chain of modules since 5.4, sentence-transformers PR #3554; the trainer pins 6.x): Transformer (feature
  extraction) + Pooling + Dense(hidden -> 1, identity activation, output "scores"), with `activation_fn`
  torch.nn.Identity saved in config_sentence_transformers.json. `CrossEncoder(path).predict([(query, passage), ...])`
  returns our scores, [N] float32, raw (CrossEncoder's default for one label would be a sigmoid: other values, the
  same ranking). The pair is tokenized as ours is (query, passage; truncation longest_first at maxSeqLength). No
  stock `*ForSequenceClassification` class computes this score: BERT's runs its pooler (Linear + tanh) on the CLS
  token before the classifier and none mean-pools, so an `AutoModelForSequenceClassification` directory (what
  CrossEncoder reads by default) would score something else.
- generator (`GenerationModel`: a causal LM, layer-dropped or a base model, LoRA adapters merged first: the
  adapters are added into the float base weights, as `GenerationModel.plain_model` does for export/model, whether
  or not the student kept them apart) -> `transformers/`: `AutoModelForCausalLM` + `AutoTokenizer` (our pad token:
  eos where the model had none), and a generation_config.json for what kubestill serves: greedy
  (`do_sample` false), `maxNewTokens` new tokens, our eos and pad ids. The summary says whether prompts go through
  the chat template (`chat`: `apply_chat_template([{"role": "user", "content": prompt}],
  add_generation_prompt=True)`, no special tokens added again) and `maxPromptTokens` (kubestill keeps a longer
  prompt's last tokens: truncation_side left). Checked on the logits ([positions, vocabulary] float32) of every
  prompt token of the check texts, the loaded tokenizer giving our token ids exactly.

Each layout is loaded back with its library and compared with kubestill's model on a few texts (or pairs) of
different lengths: an export that differs by more than STANDARD_TOLERANCE raises instead of being written silently.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import CrossEncoder, SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ..losses.extras import RESPONSE_MASK
from ..tasks.base import EXPORT_EXAMPLE_ROWS, Row, TaskModel
from ..tasks.classification import EncoderClassifier, HFClassifier
from ..tasks.embedding import SentenceEncoder
from ..tasks.generation import GenerationModel
from ..tasks.generation_lm import prompt_ids
from ..tasks.reranking import RerankModel

SENTENCE_TRANSFORMERS_DIR = "sentence-transformers"
TRANSFORMERS_DIR = "transformers"
LABELS_FILE = "labels.json"
# Same weights and operations on both sides; only padding differs (sentence-transformers batches by length), which
# moves float32 results by about 1e-6.
STANDARD_TOLERANCE = 1e-4
# Different lengths (padding), and one longer than any maxSeqLength (truncation: sentence-transformers keeps the
# student's limit as the tokenizer's model_max_length).
CHECK_TEXTS = (*EXPORT_EXAMPLE_ROWS, "Short.", " ".join(["A sentence repeated until it must be truncated."] * 120))
# (query, passage) pairs of a cross-encoder: the long text once as the passage and once as the query (truncation
# cuts the longer side first), short with long and short with short.
CHECK_PAIRS = tuple(zip(CHECK_TEXTS, reversed(CHECK_TEXTS), strict=True))


def label_maps(labels: list[str]) -> dict[str, dict[str, Any]]:
    """`id2label` / `label2id` as transformers writes them to config.json.

    >>> label_maps(["sport", "tech"])
    {'id2label': {'0': 'sport', '1': 'tech'}, 'label2id': {'sport': 0, 'tech': 1}}
    """
    return {"id2label": {str(i): name for i, name in enumerate(labels)},
            "label2id": {name: i for i, name in enumerate(labels)}}


def _ours(model: TaskModel, texts: tuple[str, ...], max_length: int) -> np.ndarray:  # type: ignore[type-arg]
    """kubestill's output for `texts`: the embedding, or the logits of a classifier ([N, D] float32)."""
    model = model.cpu().eval()
    with torch.no_grad():
        out = model(model.encode([Row(str(i), t) for i, t in enumerate(texts)], max_length))
    tensor = out.embedding if out.embedding is not None else out.logits
    assert tensor is not None
    return np.asarray(tensor.float().numpy())


def _check(name: str, expected: np.ndarray, got: np.ndarray) -> float:  # type: ignore[type-arg]
    if expected.shape != got.shape:
        raise ValueError(f"{name} export: output shape {got.shape} differs from kubestill's {expected.shape}")
    worst = float(np.max(np.abs(expected - got)))
    print(f"{name}: max abs diff vs kubestill {worst:.3e} (tolerance {STANDARD_TOLERANCE:g})", flush=True)
    if not worst <= STANDARD_TOLERANCE:  # not `>`: a NaN anywhere must fail too
        raise ValueError(f"{name} export differs from kubestill's model by {worst:.3e} > {STANDARD_TOLERANCE:g}")
    return worst


def _write_sentence_transformer(
    encoder: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pooling: str, max_length: int,
    tail: list[nn.Module], out: Path, cross: bool = False,
) -> None:
    """Transformer (from `encoder`, saved to a scratch directory it is read from) + Pooling + `tail`, saved as a
    SentenceTransformer, or as a CrossEncoder with an identity activation when `cross`."""
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        encoder.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        transformer = Transformer(scratch, max_seq_length=max_length)
        modules = [transformer, Pooling(int(encoder.config.hidden_size), pooling_mode=pooling), *tail]
        if cross:
            CrossEncoder(modules=modules, activation_fn=nn.Identity(), device="cpu").save(str(out))
        else:
            SentenceTransformer(modules=modules, device="cpu").save(str(out))


def _dense(linear: nn.Linear, output: str | None = None) -> Dense:
    """`linear` as a Dense module (identity activation) writing its result to feature `output` (default: the
    sentence embedding it reads)."""
    return Dense(linear.in_features, linear.out_features, bias=linear.bias is not None,
                 activation_function=nn.Identity(), init_weight=linear.weight.detach().clone(),
                 init_bias=None if linear.bias is None else linear.bias.detach().clone(), module_output_name=output)


def export_sentence_encoder(model: SentenceEncoder, out: Path) -> dict[str, Any]:
    """An embedding student as a sentence-transformers directory; returns the summary entry.

    Raises ValueError when `SentenceTransformer(out).encode` differs from the student by > STANDARD_TOLERANCE.
    """
    tail: list[nn.Module] = [_dense(model.dense)] if model.dense is not None else []
    if model.normalize:
        tail.append(Normalize())
    _write_sentence_transformer(model.encoder, model.tokenizer, model.pooling, model.max_length, tail, out)
    loaded = SentenceTransformer(str(out), device="cpu")
    got = loaded.encode(list(CHECK_TEXTS), convert_to_numpy=True)
    worst = _check("sentence-transformers", _ours(model, CHECK_TEXTS, model.max_length), got)
    return {"dir": out.name, "library": "sentence-transformers", "class": "SentenceTransformer", "maxAbsDiff": worst}


def export_encoder_classifier(model: EncoderClassifier, out: Path) -> dict[str, Any]:
    """A classifier with kubestill's head as a sentence-transformers directory whose `encode` returns the
    logits ([N, len(labels)]); `labels.json` holds `id2label` / `label2id`. Raises ValueError as above."""
    _write_sentence_transformer(model.encoder, model.tokenizer, model.pooling, model.max_length,
                                [_dense(model.head)], out)
    (out / LABELS_FILE).write_text(json.dumps(label_maps(model.labels), indent=2) + "\n")
    loaded = SentenceTransformer(str(out), device="cpu")
    got = loaded.encode(list(CHECK_TEXTS), convert_to_numpy=True)
    worst = _check("sentence-transformers classifier", _ours(model, CHECK_TEXTS, model.max_length), got)
    return {"dir": out.name, "library": "sentence-transformers", "class": "SentenceTransformer", "output": "logits",
            "labels": LABELS_FILE, "maxAbsDiff": worst}


def export_hf_classifier(model: HFClassifier, out: Path) -> dict[str, Any]:
    """A Hugging Face classifier as `AutoModelForSequenceClassification` + tokenizer, with our labels in
    `id2label` / `label2id`. Raises ValueError when its logits differ from the student's."""
    model.model.config.update(label_maps(model.labels))
    model.model.save_pretrained(str(out))
    model.tokenizer.save_pretrained(str(out))
    loaded = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    enc = tokenizer(list(CHECK_TEXTS), padding=True, truncation=True, max_length=model.max_length,
                    return_tensors="pt")
    with torch.no_grad():
        got = loaded(**enc).logits.float().numpy()
    worst = _check("transformers", _ours(model, CHECK_TEXTS, model.max_length), got)
    return {"dir": out.name, "library": "transformers", "class": "AutoModelForSequenceClassification",
            "maxAbsDiff": worst}


def _cross_scores(model: RerankModel, pairs: tuple[tuple[str, str], ...]) -> np.ndarray:  # type: ignore[type-arg]
    """kubestill's scores of (query, passage) pairs, [N] float32: one row per pair, one candidate each."""
    model = model.cpu().eval()
    rows = [Row(str(i), query, json.dumps([passage])) for i, (query, passage) in enumerate(pairs)]
    with torch.no_grad():
        scores = model(model.encode(rows, model.max_length)).scores
    assert scores is not None
    return np.asarray(scores[:, 0].float().numpy())


def export_cross_encoder(model: RerankModel, out: Path) -> dict[str, Any]:
    """A cross-encoder reranker as a sentence-transformers CrossEncoder directory whose `predict(pairs)` returns
    our raw scores ([N] float32). Raises ValueError when they differ from the student's by > STANDARD_TOLERANCE."""
    assert model.encoder is not None and model.head is not None
    _write_sentence_transformer(model.encoder, model.tokenizer, model.pooling, model.max_length,
                                [_dense(model.head, "scores")], out, cross=True)
    loaded = CrossEncoder(str(out), device="cpu")
    got = loaded.predict([list(p) for p in CHECK_PAIRS], convert_to_numpy=True)
    worst = _check("sentence-transformers cross-encoder", _cross_scores(model, CHECK_PAIRS), np.asarray(got))
    return {"dir": out.name, "library": "sentence-transformers", "class": "CrossEncoder", "output": "scores",
            "activation": "identity", "maxAbsDiff": worst}


def _greedy_config(model: GenerationModel, lm: PreTrainedModel) -> Any:
    """`lm`'s generation config (a copy) set to what kubestill serves: greedy, maxNewTokens, our eos and pad."""
    config: Any = copy.deepcopy(lm.generation_config)  # GenerationConfig's methods are untyped
    config.update(do_sample=False, temperature=None, top_p=None, top_k=None, max_new_tokens=model.max_new_tokens,
                  eos_token_id=model.tokenizer.eos_token_id, pad_token_id=model.tokenizer.pad_token_id)
    config._from_model_config = False  # a config of its own: generate() must not rebuild it from config.json
    return config


def _lm_logits(model: GenerationModel, prompts: list[list[int]]) -> np.ndarray:  # type: ignore[type-arg]
    """kubestill's logits at every token of `prompts` (token ids), [sum of their lengths, vocabulary] float32:
    `GenerationModel.forward` on one right-padded batch, every position read."""
    model = model.cpu().eval()
    width = max(len(p) for p in prompts)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(prompts), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, : len(p)], mask[i, : len(p)] = torch.tensor(p), True
    feats = {"input_ids": ids, "attention_mask": mask.long(),
             "response_positions": torch.arange(width).expand(len(prompts), width), RESPONSE_MASK: mask}
    with torch.no_grad():
        logits = model(feats).logits
    assert logits is not None
    return np.asarray(logits[mask].float().numpy())


def export_causal_lm(model: GenerationModel, out: Path) -> dict[str, Any]:
    """A generator as a transformers directory: `AutoModelForCausalLM` (LoRA adapters merged) + `AutoTokenizer` +
    a greedy generation config. Raises ValueError when loading reports a missing, unexpected or mismatched
    weight, when the loaded tokenizer gives other token ids than ours, or when its logits differ from the
    student's by > STANDARD_TOLERANCE."""
    from ..lora import is_peft

    adapters = is_peft(model.lm)
    lm = model.plain_model()
    lm.save_pretrained(str(out))
    model.tokenizer.save_pretrained(str(out))
    _greedy_config(model, lm).save_pretrained(str(out))
    auto: Any = AutoModelForCausalLM  # transformers' auto classes are untyped
    loaded, info = auto.from_pretrained(str(out), output_loading_info=True)
    bad = {k: sorted(v) for k, v in info.items() if v}
    if bad:
        raise ValueError(f"transformers export: AutoModelForCausalLM does not load it cleanly: {bad}")
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    ours = [prompt_ids(model.tokenizer, t, model.chat, model.max_length) for t in CHECK_TEXTS]
    theirs = [prompt_ids(tokenizer, t, model.chat, model.max_length) for t in CHECK_TEXTS]
    if theirs != ours:
        raise ValueError("transformers export: its tokenizer gives other token ids than kubestill's")
    with torch.no_grad():
        got = [loaded.eval()(input_ids=torch.tensor([p])).logits[0].float().numpy() for p in theirs]
    expected = _lm_logits(model, ours)
    worst = _check("transformers causal LM", expected, np.concatenate(got))
    return {"dir": out.name, "library": "transformers", "class": "AutoModelForCausalLM", "chat": model.chat,
            "maxPromptTokens": model.max_length, "maxNewTokens": model.max_new_tokens, "decoding": "greedy",
            "adaptersMerged": adapters, "maxAbsDiff": worst}


def export_standard(model: TaskModel, export_dir: Path) -> dict[str, Any]:
    """Write the standard layout of `model` under `export_dir` (see the module docstring).

    Returns the entries for export.json: {"sentenceTransformers": {...}} (with "class": SentenceTransformer or
    CrossEncoder) or {"transformers": {...}} (with "class": AutoModelForSequenceClassification or
    AutoModelForCausalLM), or {"standard": "none: ..."} for a kind without one (none is known today).
    """
    st_dir, hf_dir = export_dir / SENTENCE_TRANSFORMERS_DIR, export_dir / TRANSFORMERS_DIR
    for stale in (st_dir, hf_dir):
        shutil.rmtree(stale, ignore_errors=True)
    if isinstance(model, SentenceEncoder):
        return {"sentenceTransformers": export_sentence_encoder(model, st_dir)}
    if isinstance(model, EncoderClassifier):
        return {"sentenceTransformers": export_encoder_classifier(model, st_dir)}
    if isinstance(model, HFClassifier):
        return {"transformers": export_hf_classifier(model, hf_dir)}
    if isinstance(model, RerankModel) and model.bi is not None:
        return {"sentenceTransformers": {**export_sentence_encoder(model.bi, st_dir), "score": "cosine"}}
    if isinstance(model, RerankModel):
        return {"sentenceTransformers": export_cross_encoder(model, st_dir)}
    if isinstance(model, GenerationModel):
        return {"transformers": export_causal_lm(model, hf_dir)}
    return {"standard": f"none: no standard layout for {type(model).__name__} yet (only export/model)"}
