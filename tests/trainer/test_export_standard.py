"""The standard export layouts load with the libraries themselves, with no missing or unexpected weight, and
compute what kubestill's own loader computes on real text (BBC News titles): a static and a narrow projected
embedding student through sentence-transformers, a classifier with kubestill's head through sentence-transformers
(logits + labels.json), a classifier cut from a Hugging Face classifier through AutoModelForSequenceClassification,
a bi-encoder reranker whose scores are sentence-transformers' cosine similarities, a cross-encoder reranker whose
scores are sentence-transformers' CrossEncoder.predict, and generators (a layer-dropped student with a chat
template, a LoRA student kept as adapters) through AutoModelForCausalLM: their logits and greedy answers.

Each student comes out of the real command line (label, train, evaluate, export) on a few dozen rows, one epoch.
Tolerance: 1e-4 absolute (same weights and operations; padding differs between batch compositions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from .conftest import BBC, MINILM, run_trainer, write_job

pytestmark = pytest.mark.slow
TOLERANCE = 1e-4


def _train_and_export(tmp_path: Path, spec: dict[str, Any]) -> Path:
    """Run all four stages on `spec` (+ small data, one epoch, a gate any student passes); return export/."""
    work = tmp_path / "work"
    spec = {
        "data": {"uri": BBC, "fields": {"text": "title", "label": "label"}, "maxSamples": 48, "seed": 3},
        "training": {"epochs": 1, "batchSize": 16, "learningRate": 1e-3, "maxSeqLength": 32},
        "evaluation": {"minQualityRatio": 0.01},
        "output": {"studentModelName": "std", "artifactUri": f"file://{work}", "formats": ["safetensors"]},
        **spec,
    }
    done = run_trainer(["all", "--config", str(write_job(tmp_path / "job.yaml", spec))])
    assert done.returncode == 0, done.stderr[-3000:]
    return work / "export"


def _kubestill(export: Path) -> tuple[list[str], list[str], dict[str, np.ndarray]]:  # type: ignore[type-arg]
    """Texts (titles) and pairs (article leads, longer than maxSeqLength: truncated) of the held-out rows, and
    kubestill's own predictions for them (load_for_serving on export/model)."""
    from kubestill_trainer.labelstore import load_labels
    from kubestill_trainer.serving.loader import load_for_serving

    rows, _ = load_labels(export.parent / "labels").subset("test")
    assert len(rows) >= 5
    task, model = load_for_serving(export / "model")
    return [r.text for r in rows], [r.pair or "" for r in rows], task.predict(model, rows, 4)


def _assert_transformer_loads_cleanly(path: Path) -> None:
    """The Transformer module's weights (the directory's root) match the architecture key for key."""
    from transformers import AutoModel

    _, info = AutoModel.from_pretrained(str(path), output_loading_info=True)
    assert not any(info.values()), info  # missing, unexpected, mismatched keys and errors: all empty


def _sentence_transformer(path: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    _assert_transformer_loads_cleanly(path)
    return SentenceTransformer(str(path), device="cpu")


@pytest.mark.parametrize(("architecture", "output_dim", "modules"), [
    # A static student starts from Model2Vec (PCA coordinates): a Dense layer maps them back to the teacher's width.
    ({"numLayers": 0}, None, ["Transformer", "Pooling", "Dense", "Normalize"]),
    # Narrower than the teacher (128 vs 384): outputDim adds a projection back to the teacher's width.
    ({"numLayers": 1, "hiddenSize": 128}, 384, ["Transformer", "Pooling", "Dense", "Normalize"]),
], ids=["static", "narrow-projected"])
def test_embedding_student_loads_with_sentence_transformers(
    tmp_path: Path, architecture: dict[str, Any], output_dim: int | None, modules: list[str]
) -> None:
    dim = {"outputDim": output_dim} if output_dim else {}
    export = _train_and_export(tmp_path, {
        "task": "embedding", "teacher": {"modelUri": MINILM}, "student": {"architecture": architecture},
        "data": {"uri": BBC, "fields": {"text": "title", "pair": "lead"}, "maxSamples": 48, "seed": 3},
        "loss": {"terms": [{"name": "embedding-mse", **dim}, {"name": "embedding-cosine", **dim}]},
    })
    assert json.loads((export / "export.json").read_text())["sentenceTransformers"]["maxAbsDiff"] <= TOLERANCE
    texts, pairs, ours = _kubestill(export)
    path = export / "sentence-transformers"
    model = _sentence_transformer(path)
    assert [m["type"].rsplit(".", 1)[-1] for m in json.loads((path / "modules.json").read_text())] == modules
    got = model.encode(texts, convert_to_numpy=True)
    assert got.shape == ours["embedding"].shape == (len(texts), 384)
    np.testing.assert_allclose(got, ours["embedding"], atol=TOLERANCE)
    assert max(len(model.tokenizer(p)["input_ids"]) for p in pairs) > 32  # some leads are truncated (maxSeqLength)
    np.testing.assert_allclose(model.encode(pairs, convert_to_numpy=True), ours["pair_embedding"], atol=TOLERANCE)


def test_classifier_with_kubestill_head_loads_with_sentence_transformers(bbc_teacher: Path, tmp_path: Path) -> None:
    export = _train_and_export(tmp_path, {
        "task": "classification", "teacher": {"modelUri": f"file://{bbc_teacher}"},
        "student": {"architecture": {"numLayers": 1}},
        "loss": {"terms": [{"name": "logit-kl", "temperature": 2.0}]},
    })
    assert "transformers" not in json.loads((export / "export.json").read_text())
    texts, _, ours = _kubestill(export)
    path = export / "sentence-transformers"
    model = _sentence_transformer(path)
    logits = model.encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(logits, ours["logits"], atol=TOLERANCE)
    labels = json.loads((path / "labels.json").read_text())
    card = json.loads((export / "model" / "kubestill.json").read_text())
    assert [labels["id2label"][str(i)] for i in range(len(card["labels"]))] == card["labels"]
    assert {name: labels["label2id"][name] for name in card["labels"]} == {n: i for i, n in enumerate(card["labels"])}


@pytest.fixture()
def hf_teacher(tmp_path: Path) -> Path:
    """A Hugging Face BERT classifier over the five BBC topics: MiniLM's weights and a fresh classifier head
    (its quality does not matter here, only its class)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kubestill_trainer.storage import resolve_uri

    source = resolve_uri(MINILM)
    topics = ["business", "entertainment", "politics", "sports", "tech"]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(source), num_labels=5, id2label=dict(enumerate(topics)), label2id={t: i for i, t in enumerate(topics)})
    out = tmp_path / "hf-teacher"
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(out))
    return out


def test_hf_classifier_loads_with_auto_model_for_sequence_classification(hf_teacher: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    export = _train_and_export(tmp_path, {
        "task": "classification", "teacher": {"modelUri": f"file://{hf_teacher}"},
        "student": {"architecture": {"numLayers": 1}},
        "loss": {"terms": [{"name": "logit-kl", "temperature": 2.0}]},
        # The teacher's head is untrained (gold accuracy near 0 gives no quality ratio): gate on imitation.
        "evaluation": {"minQualityRatio": 0.01, "primaryMetric": "agreement"},
    })
    assert "sentenceTransformers" not in json.loads((export / "export.json").read_text())
    texts, _, ours = _kubestill(export)
    path = export / "transformers"
    model, info = AutoModelForSequenceClassification.from_pretrained(str(path), output_loading_info=True)
    assert not any(info.values()), info
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    with torch.no_grad():
        logits = model.eval()(**tokenizer(texts, padding=True, truncation=True, max_length=32,
                                          return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(logits, ours["logits"], atol=TOLERANCE)
    card = json.loads((export / "model" / "kubestill.json").read_text())
    assert [model.config.id2label[i] for i in range(len(card["labels"]))] == card["labels"]
    assert model.config.label2id == {name: i for i, name in enumerate(card["labels"])}


def test_bi_encoder_reranker_scores_with_sentence_transformers(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from kubestill_trainer.labelstore import load_labels
    from kubestill_trainer.serving.loader import load_for_serving
    from kubestill_trainer.tasks.reranking import candidates
    from kubestill_trainer.tasks.reranking_data import bbc_title_lead_groups, write_jsonl

    data = write_jsonl(bbc_title_lead_groups(group_size=4, limit=32, seed=1), tmp_path / "groups.jsonl")
    export = _train_and_export(tmp_path, {
        "task": "reranking", "teacher": {"modelUri": MINILM},
        "student": {"architecture": {"numLayers": 1}},
        "data": {"uri": f"file://{data}", "seed": 3, "fields": {"text": "query", "pair": "passages", "label": "label"}},
        "loss": {"terms": [{"name": "margin-mse"}]},
    })
    assert json.loads((export / "export.json").read_text())["sentenceTransformers"]["score"] == "cosine"
    rows, _ = load_labels(export.parent / "labels").subset("test")
    assert len(rows) >= 3
    task, own = load_for_serving(export / "model")
    ours = task.predict(own, rows, 8)["scores"]
    _assert_transformer_loads_cleanly(export / "sentence-transformers")
    model = SentenceTransformer(str(export / "sentence-transformers"), device="cpu")
    for row, expected in zip(rows, ours, strict=True):
        passages = candidates(row)
        query = model.encode([row.text], convert_to_tensor=True)
        got = model.similarity(query, model.encode(passages, convert_to_tensor=True))[0].numpy()
        np.testing.assert_allclose(got, expected[: len(passages)], atol=TOLERANCE)


@pytest.fixture()
def plain_minilm(tmp_path: Path) -> Path:
    """The last layer of all-MiniLM-L6-v2 (with its embeddings) as a plain Hugging Face directory, no modules.json:
    a `baseModelUri` that makes a cross-encoder student (mean pooling, a fresh Linear head)."""
    from transformers import AutoModel, AutoTokenizer

    from kubestill_trainer.storage import resolve_uri
    from kubestill_trainer.tasks.encoder import cut_from_teacher

    source = resolve_uri(MINILM)
    out = tmp_path / "minilm-plain"
    cut_from_teacher(AutoModel.from_pretrained(str(source)), [5]).save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(out))
    return out


def test_cross_encoder_reranker_scores_with_cross_encoder(plain_minilm: Path, tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    from kubestill_trainer.labelstore import load_labels
    from kubestill_trainer.serving.loader import load_for_serving
    from kubestill_trainer.tasks.reranking import RerankModel, candidates
    from kubestill_trainer.tasks.reranking_data import bbc_title_lead_groups, write_jsonl

    data = write_jsonl(bbc_title_lead_groups(group_size=4, limit=32, seed=1), tmp_path / "groups.jsonl")
    export = _train_and_export(tmp_path, {
        "task": "reranking", "teacher": {"modelUri": MINILM},  # a bi-encoder teacher, a cross-encoder student
        "student": {"baseModelUri": f"file://{plain_minilm}"},
        "data": {"uri": f"file://{data}", "seed": 3, "fields": {"text": "query", "pair": "passages", "label": "label"}},
        "loss": {"terms": [{"name": "margin-mse"}]},
    })
    entry = json.loads((export / "export.json").read_text())["sentenceTransformers"]
    assert entry["class"] == "CrossEncoder" and entry["maxAbsDiff"] <= TOLERANCE
    rows, _ = load_labels(export.parent / "labels").subset("test")
    assert len(rows) >= 3
    task, own = load_for_serving(export / "model")
    assert isinstance(own, RerankModel) and own.mode == "cross" and own.pooling == "mean"
    ours = task.predict(own, rows, 8)["scores"]
    path = export / "sentence-transformers"
    _assert_transformer_loads_cleanly(path)
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((path / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Dense"]
    model = CrossEncoder(str(path), device="cpu")  # nothing passed: the saved activation is the identity
    assert isinstance(model.activation_fn, torch.nn.Identity) and model.num_labels == 1
    pairs = [(row.text, p) for row in rows for p in candidates(row)]
    assert max(len(model.tokenizer(q, p)["input_ids"]) for q, p in pairs) > 32  # lead paragraphs are truncated
    got = model.predict(pairs, convert_to_numpy=True)
    expected = np.concatenate([s[: len(candidates(r))] for r, s in zip(rows, ours, strict=True)])
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)
    print(f"cross-encoder: max abs diff {np.max(np.abs(got - expected)):.3e} over {len(pairs)} pairs")
    for row, scores in zip(rows, ours, strict=True):  # and so the same ranking
        ranked = [r["corpus_id"] for r in model.rank(row.text, candidates(row))]
        assert ranked == list(np.argsort(-scores[: len(candidates(row))], kind="stable"))


# A chat template of the simplest kind: kubestill wraps the prompt in it, and so must the exported tokenizer.
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


@pytest.fixture()
def tiny_teacher(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A random 2-layer Llama with a byte-level BPE tokenizer trained here (tiny_lm), with a chat template when
    the test's parameter asks for one."""
    from . import tiny_lm

    tok = tiny_lm.tokenizer(300, "bpe")
    if request.param:
        tok.chat_template = CHAT_TEMPLATE
    return tiny_lm.save(tmp_path / "tiny-llama", tiny_lm.llama(tok), tok)


@pytest.mark.parametrize(("tiny_teacher", "student", "adapters"), [
    (True, {"architecture": {"numLayers": 1}}, False),
    (False, {"lora": {"r": 4, "alpha": 8, "dropout": 0.0, "merge": False}}, True),
], ids=["layer-dropped-chat", "lora-adapter"], indirect=["tiny_teacher"])
def test_generator_loads_with_auto_model_for_causal_lm(
    tiny_teacher: Path, tmp_path: Path, student: dict[str, Any], adapters: bool
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kubestill_trainer.labelstore import load_labels
    from kubestill_trainer.serving.loader import load_for_serving
    from kubestill_trainer.tasks.base import Row
    from kubestill_trainer.tasks.generation import GenerationModel

    from .test_generation_e2e import prompts_file
    from .tiny_lm import generation_spec

    work = tmp_path / "work"
    spec = generation_spec(tiny_teacher, tiny_teacher, prompts_file(tmp_path / "prompts.jsonl", 24), work)
    spec["student"] = {"baseModelUri": f"file://{tiny_teacher}", **student} if "lora" in student else student
    # sequence-kd moves LoRA adapters off zero where token-kl alone would not (a student that starts as its teacher
    # is at token-kl's minimum), at a learning rate that makes the merge matter (checked below).
    spec["loss"] = {"terms": [{"name": "token-kl"}, {"name": "sequence-kd"}]}
    spec["training"]["learningRate"] = 1e-2
    spec["evaluation"] = {"minQualityRatio": 0.01}
    done = run_trainer(["all", "--config", str(write_job(tmp_path / "job.yaml", spec))])
    assert done.returncode == 0, done.stderr[-3000:]
    export = work / "export"
    card = json.loads((export / "model" / "kubestill.json").read_text())
    assert card["adapter"] is adapters  # kubestill serves the LoRA student as base + adapters, unmerged
    entry = json.loads((export / "export.json").read_text())["transformers"]
    assert entry["class"] == "AutoModelForCausalLM" and entry["maxAbsDiff"] <= TOLERANCE
    assert entry["adaptersMerged"] is adapters and entry["chat"] is not adapters

    rows, _ = load_labels(work / "labels").subset("test")
    assert len(rows) >= 3
    task, own = load_for_serving(export / "model")
    assert isinstance(own, GenerationModel) and own.chat is not adapters
    path = export / "transformers"
    model, info = AutoModelForCausalLM.from_pretrained(str(path), output_loading_info=True)
    assert not any(info.values()), info
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    # The prompt as a user of the layout writes it: the chat template when there is one, the last 32 tokens.
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": r.text}], tokenize=False,
                                           add_generation_prompt=True) if own.chat else r.text for r in rows]
    tokenizer.truncation_side = "left"
    assert max(len(tokenizer(t)["input_ids"]) for t in texts) > 32  # some prompts are truncated

    # Next-token logits after each prompt: kubestill's forward (one right-padded batch) vs the library, one by one.
    with torch.no_grad():
        ours = own(own.encode([Row(r.id, r.text) for r in rows], 32)).logits[:, 0].numpy()
        got = np.stack([model(**tokenizer(t, add_special_tokens=not own.chat, truncation=True, max_length=32,
                                          return_tensors="pt")).logits[0, -1].numpy() for t in texts])
    assert got.shape == ours.shape == (len(rows), len(tokenizer))
    np.testing.assert_allclose(got, ours, atol=TOLERANCE)
    print(f"causal LM: max abs diff {np.max(np.abs(got - ours)):.3e} over {got.size} logits")
    # Not the teacher's (for LoRA: its base, to which the adapters must have been added) by far more than that.
    teacher = AutoModelForCausalLM.from_pretrained(str(tiny_teacher)).eval()
    with torch.no_grad():
        base = np.stack([teacher(**tokenizer(t, add_special_tokens=not own.chat, truncation=True, max_length=32,
                                             return_tensors="pt")).logits[0, -1].numpy() for t in texts])
    assert np.max(np.abs(base - ours)) > 100 * TOLERANCE

    # Greedy answers: generate() with the saved generation config alone, as kubestill's predict answers.
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, add_special_tokens=not own.chat, truncation=True, max_length=32, padding=True,
                    return_tensors="pt")
    with torch.no_grad():
        new = model.generate(**enc)[:, enc["input_ids"].shape[1]:].tolist()
    eos = tokenizer.eos_token_id
    answers = [row[: row.index(eos) + 1] if eos in row else row for row in new]
    expected = [[int(t) for t in row if t >= 0] for row in task.predict(own, rows, len(rows))["token_ids"]]
    assert answers == expected
    config = model.generation_config  # what made generate() greedy, 6 new tokens at most (maxNewTokens)
    assert config.do_sample is False and config.max_new_tokens == 6 and all(0 < len(a) <= 6 for a in answers)
