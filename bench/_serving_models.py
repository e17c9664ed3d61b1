"""The models bench/serving.py serves: a teacher and its students, each trained and exported by the real
trainer stages (label, train, export), from the same jobs as bench/classification.py and bench/embedding.py.

Each model ends as a DistillationJob's `export/` directory (model/, triton/), the artifact a StudentModel
points at. The teacher is exported the same way: its directory stands in for the train stage's student.
A rerun in the same --workdir reuses what is already there.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import classification as cls_bench
import embedding as emb_bench
import reranking as rr_bench
from _common import bbc_rows, copy_labels, run_stage, shuffle_train_labels, write_jsonl
from kubestill_trainer.data import split_rows
from kubestill_trainer.fit_head import fit_teacher
from kubestill_trainer.stages.export import run_export
from kubestill_trainer.stages.label import run_label
from kubestill_trainer.stages.train import run_train
from kubestill_trainer.storage import resolve_uri
from kubestill_trainer.tasks.base import Row
from kubestill_trainer.tasks.embedding import load_sentence_encoder
from kubestill_trainer.tasks.reranking import candidates, load_reranker
from kubestill_trainer.tasks.reranking_data import bbc_title_lead_groups
from kubestill_trainer.tasks.reranking_data import write_jsonl as write_groups

CLS_MAX_LEN = 32  # as bench/classification.py on BBC titles
EMB_MAX_LEN = 128  # as bench/embedding.py
RR_MAX_LEN = 96  # as bench/reranking.py


@dataclass(frozen=True)
class Served:
    """One exported model: `export` is `<run>/export` (model/ + triton/), `texts` what clients send it (for a
    reranker the queries, `passages` the passage sent with each)."""

    name: str
    task: str
    description: str
    export: Path
    texts: list[str]
    teacher: bool = False
    passages: list[str] = field(default_factory=list)

    def requests(self) -> list[dict[str, str]]:
        """One request's row per text: {input tensor name: text} (kubestill.api.triton.TENSORS)."""
        if self.task == "reranking":
            return [{"QUERY": q, "PASSAGE": p} for q, p in zip(self.texts, self.passages, strict=True)]
        return [{"TEXT": t} for t in self.texts]


def _export_run(spec: dict[str, Any], run: Path) -> Path:
    """run_export once per run directory (with the job's defaults: model.onnx too, for these tasks)."""
    marker = run / "export" / "bench-exported"
    if not marker.exists():
        run_stage(run_export, spec, run)
        marker.touch()
    return run / "export"


def _as_student(source: Path, run: Path) -> None:
    """Put a teacher directory where the export stage reads the trained student."""
    target = run / "train" / "student"
    if not (target / "kubestill.json").exists():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)


@dataclass(frozen=True)
class ClassificationSetup:
    """The classification teacher, exported, and what its students share: the label run and the job spec."""

    teacher: Served
    labelled: Path  # the run directory whose labels/ the label stage wrote
    spec: Callable[[str, Path], dict[str, Any]]  # (student, run directory) -> the DistillationJob spec
    texts: list[str]  # the held-out test titles


def classification_setup(root: Path, rows_limit: int, epochs: int, first_student: str = "cut") -> ClassificationSetup:
    """BBC News titles: the MiniLM teacher with a fitted head, exported, and its labels for the students."""
    rows = bbc_rows("title")[:rows_limit]
    data = write_jsonl(root / "rows.jsonl", rows)
    split = split_rows([r.id for r in rows], 0.8, 0.1, cls_bench.SPLIT_SEED)
    train = [r for r in rows if split[r.id] == "train"]
    texts = [r.text for r in rows if split[r.id] == "test"]
    teacher_dir = root / "teacher-head"
    if not (teacher_dir / "kubestill.json").exists():
        fit_teacher(resolve_uri(cls_bench.MINILM), [r.text for r in train], [r.label or "" for r in train],
                    teacher_dir, CLS_MAX_LEN)
    labelled = root / "labels-run"

    def spec(student: str, run: Path) -> dict[str, Any]:
        return cls_bench.job(data, teacher_dir, run, student, True, 0, epochs, CLS_MAX_LEN)

    if not (labelled / "labels" / "rows.jsonl").exists():
        run_stage(run_label, spec(first_student, labelled), labelled)
    teacher_run = root / "teacher"
    _as_student(teacher_dir, teacher_run)
    teacher = Served("cls-teacher", "classification", "teacher MiniLM-L6 + fitted head",
                     _export_run(spec("cut", teacher_run), teacher_run), texts, teacher=True)
    return ClassificationSetup(teacher, labelled, spec, texts)


def classification_models(root: Path, students: list[str], rows_limit: int, epochs: int) -> list[Served]:
    """BBC News titles: the MiniLM teacher with a fitted head, and students cut from it."""
    setup = classification_setup(root, rows_limit, epochs, students[0] if students else "cut")
    return [setup.teacher, *_students(root, students, setup.labelled, setup.spec, "classification", "cls",
                                      setup.texts, {k: v[2] for k, v in cls_bench.STUDENTS.items()})]


def distilled_student(root: Path, setup: ClassificationSetup, student: str) -> Served:
    """`student` distilled by the train stage on the setup's labels, and exported (reused when done)."""
    [served] = _students(root, [student], setup.labelled, setup.spec, "classification", "cls", setup.texts,
                         {k: v[2] for k, v in cls_bench.STUDENTS.items()})
    return served


def shuffled_student(root: Path, setup: ClassificationSetup, student: str, seed: int) -> Served:
    """`student` trained by the train stage on the setup's labels shuffled among the train rows with `seed`
    (_common.shuffle_train_labels), and exported: a real model that learnt nothing true."""
    run = root / f"student-{student}-shuffled-{seed}"
    if not (run / "train" / "done.json").exists():
        copy_labels(setup.labelled, run)
        shuffle_train_labels(run, seed)
        run_stage(run_train, setup.spec(student, run), run)
    return Served(f"cls-{student}-shuffled", "classification",
                  f"student {cls_bench.STUDENTS[student][2]}, trained on labels shuffled (seed {seed})",
                  _export_run(setup.spec(student, run), run), setup.texts)


def _students(root: Path, students: list[str], labelled: Path, spec: Callable[[str, Path], dict[str, Any]],
              task: str, prefix: str, texts: list[str], descriptions: dict[str, str]) -> list[Served]:
    """Each student trained on the shared labels (once: a finished run is reused) and exported."""
    out = []
    for student in students:
        run = root / f"student-{student}"
        if not (run / "train" / "done.json").exists():
            shutil.rmtree(run / "labels", ignore_errors=True)
            shutil.copytree(labelled / "labels", run / "labels")
            run_stage(run_train, spec(student, run), run)
        out.append(Served(f"{prefix}-{student}", task, f"student {descriptions[student]}",
                          _export_run(spec(student, run), run), texts))
    return out


def embedding_models(root: Path, students: list[str], sentences: int, epochs: int) -> list[Served]:
    """BBC News sentences: all-MiniLM-L6-v2 and students cut from it."""
    articles = bbc_rows("title", pair="lead")
    body = {r.id: r.text for r in bbc_rows("body")}
    split = split_rows([r.id for r in articles], 0.8, 0.0, emb_bench.SPLIT_SEED)
    train = [r for r in articles if split[r.id] == "train"]
    texts = [t for r in articles if split[r.id] != "train" for t in (r.text, r.pair or "") if t]
    data = write_jsonl(root / "sentences.jsonl", emb_bench.sentences_of(train, body, sentences, emb_bench.SPLIT_SEED))
    labelled = root / "labels-run"

    def spec(student: str, run: Path) -> dict[str, Any]:
        return emb_bench.job(data, run, epochs, EMB_MAX_LEN, student)

    if not (labelled / "labels" / "rows.jsonl").exists():
        run_stage(run_label, spec(students[0] if students else "cut", labelled), labelled)
    teacher_run = root / "teacher"
    if not (teacher_run / "train" / "student" / "kubestill.json").exists():
        # all-MiniLM-L6-v2 in kubestill's own model-directory format (what the export stage copies).
        load_sentence_encoder(resolve_uri(emb_bench.MINILM), EMB_MAX_LEN).save(teacher_run / "train" / "student")
    teacher = Served("emb-teacher", "embedding", "teacher all-MiniLM-L6-v2",
                     _export_run(spec("cut", teacher_run), teacher_run), texts, teacher=True)
    return [teacher, *_students(root, students, labelled, spec, "embedding", "emb", texts,
                                {k: v[2] for k, v in emb_bench.STUDENTS.items()})]


def reranking_models(root: Path, groups: int, epochs: int) -> list[Served]:
    """BBC News headline -> lead-paragraph groups with TF-IDF hard negatives (bench/reranking.py): the teacher
    all-MiniLM-L6-v2 as a bi-encoder reranker, and the KD student of 2 layers cut from it (margin-mse +
    listwise-kl). Clients send (headline, one candidate lead) pairs of the held-out groups."""
    all_groups = bbc_title_lead_groups(8, limit=groups, seed=rr_bench.SEED)
    split = split_rows([g["id"] for g in all_groups], 0.8, 0.0, rr_bench.SEED)
    train = [g for g in all_groups if split[g["id"]] == "train"]
    test = [Row(g["id"], g["query"], g["passages"]) for g in all_groups if split[g["id"]] != "train"]
    queries = [r.text for r in test for _ in candidates(r)]
    passages = [p for r in test for p in candidates(r)]
    data = write_groups(train, root / "train_groups.jsonl")

    def spec(run: Path) -> dict[str, Any]:
        return rr_bench.job(data, run, epochs, RR_MAX_LEN, kd=True)

    student_run = root / "student-cut"
    if not (student_run / "labels" / "rows.jsonl").exists():
        run_stage(run_label, spec(student_run), student_run)
    if not (student_run / "train" / "done.json").exists():
        run_stage(run_train, spec(student_run), student_run)
    teacher_run = root / "teacher"
    if not (teacher_run / "train" / "student" / "kubestill.json").exists():
        load_reranker(resolve_uri(rr_bench.MINILM), RR_MAX_LEN).save(teacher_run / "train" / "student")
    return [Served("rr-teacher", "reranking", "teacher all-MiniLM-L6-v2 (bi-encoder reranker)",
                   _export_run(spec(teacher_run), teacher_run), queries, teacher=True, passages=passages),
            Served("rr-cut", "reranking", "student 2 layers cut from the teacher, KD (margin-mse + listwise-kl)",
                   _export_run(spec(student_run), student_run), queries, passages=passages)]

