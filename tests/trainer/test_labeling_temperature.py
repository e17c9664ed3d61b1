"""labeling.temperature has one meaning in every task (issue #13, fault 8): the temperature of the confidence the
filter and the curriculum read. Stored targets are the teacher's raw scores (logits, scores, log-probabilities at
temperature 1) whatever it says, so the distillation loss applies its own temperature once: under token-kl the
student's optimum at inference temperature 1 is softmax(teacher), from labels made at any labeling temperature
(before: softmax(teacher / labeling.temperature), the teacher softened twice). Labels an older trainer wrote at
labeling.temperature (no `topkTemperature` in meta.json) are read back at temperature 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kubestill.api.v1alpha1 import DistillationJobSpec
from kubestill_trainer.losses.token_kl import token_kl
from kubestill_trainer.tasks import task_class
from kubestill_trainer.tasks.base import Row
from kubestill_trainer.tasks.generation import GenerationModel
from kubestill_trainer.tasks.teacher import ClassScores, Teacher
from kubestill_trainer.teachers.local import LocalTeacher

from . import tiny_lm

TOPK_TEMPERATURE = "topkTemperature"  # labels/meta.json: the temperature of the stored log-probabilities
V = 400  # the teacher's vocabulary: topK = V keeps whole distributions
ROWS = [Row(str(i), text) for i, text in enumerate(tiny_lm.CORPUS[::37][:6])]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok = tiny_lm.tokenizer(V, "bpe")
    model = tiny_lm.llama(tok)
    with torch.no_grad():  # a peaked teacher, as trained ones are: temperature changes it visibly
        model.lm_head.weight.mul_(20.0)
    return tiny_lm.save(tmp_path_factory.mktemp("teacher") / "teacher", model, tok)


def _spec(teacher: Path, tmp: Path, **labeling: Any) -> DistillationJobSpec:
    raw = tiny_lm.generation_spec(teacher, teacher, tmp / "unused.jsonl", tmp / "work",
                                  **{"topK": V, "maxNewTokens": 3, **labeling})
    return DistillationJobSpec.model_validate(raw)


def _label(teacher: Path, tmp: Path, temperature: float) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, Any]]:
    task = task_class("generation")(_spec(teacher, tmp, temperature=temperature))
    local = LocalTeacher(teacher, task.load_model(teacher), 32)
    meta = task.label_meta(local, ROWS)
    batch = task.label(local, ROWS, meta)
    return batch.targets, batch.confidence, meta


def _teacher_logits(teacher: Path, tmp: Path, token_ids: np.ndarray) -> torch.Tensor:
    """The teacher's raw next-token logits at each answer position, by a plain teacher-forced forward pass."""
    task = task_class("generation")(_spec(teacher, tmp))
    model = task.load_model(teacher)
    assert isinstance(model, GenerationModel)
    rows, _ = task.training_examples(ROWS, {"token_ids": token_ids})
    with torch.no_grad():
        out = model(model.encode(rows, 32)).logits
    assert out is not None
    return out.float()


def _optimum(ids: torch.Tensor, logprobs: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """The student's next-token distribution (at inference temperature 1) that minimises token-kl."""
    z = torch.zeros(*ids.shape[:2], V, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.3)
    for _ in range(400):
        opt.zero_grad()
        token_kl(z, ids, logprobs, mask, temperature).backward()
        opt.step()
    return torch.softmax(z.detach(), -1)


@pytest.mark.parametrize("labeling_temperature", [1.0, 2.0, 0.5])
def test_token_kl_optimum_is_the_teacher_at_any_labeling_temperature(teacher_dir: Path, tmp_path: Path,
                                                                     labeling_temperature: float) -> None:
    targets, _, meta = _label(teacher_dir, tmp_path, labeling_temperature)
    logits = _teacher_logits(teacher_dir, tmp_path, targets["token_ids"])
    mask = torch.from_numpy(targets["token_ids"] >= 0)
    teacher_p = torch.softmax(logits, -1)[mask]
    ids, lp = torch.from_numpy(targets["topk_ids"]), torch.from_numpy(targets["topk_logprobs"])
    for loss_temperature in (1.0, 2.0):
        student_p = _optimum(ids, lp, mask, loss_temperature)[mask]
        gap = float((student_p - teacher_p).abs().max())
        assert gap < 0.01, f"labeling T {labeling_temperature}, loss T {loss_temperature}: optimum off by {gap:.3f}"
    stored_p = torch.zeros_like(logits).scatter_(-1, ids, lp.exp())[mask]
    assert (stored_p - teacher_p).abs().max() < 1e-4, "stored targets are not the teacher's raw distribution"
    assert meta[TOPK_TEMPERATURE] == 1.0


def test_confidence_is_what_the_labeling_temperature_is_for(teacher_dir: Path, tmp_path: Path) -> None:
    """Same targets at any labeling temperature; the confidence is the teacher's own tokens' geometric-mean
    probability at that temperature."""
    by_t = {t: _label(teacher_dir, tmp_path, t) for t in (1.0, 3.0)}
    for key in ("token_ids", "topk_ids", "topk_logprobs"):
        np.testing.assert_array_equal(by_t[1.0][0][key], by_t[3.0][0][key])
    targets = by_t[1.0][0]
    logits = _teacher_logits(teacher_dir, tmp_path, targets["token_ids"])
    tokens = torch.from_numpy(targets["token_ids"]).clamp_min(0)
    mask = torch.from_numpy(targets["token_ids"] >= 0).float()
    for t, (_, confidence, meta) in by_t.items():
        own = torch.gather(torch.log_softmax(logits / t, -1), -1, tokens.unsqueeze(-1)).squeeze(-1)
        want = torch.exp((own * mask).sum(1) / mask.sum(1))
        np.testing.assert_allclose(confidence, want.numpy(), atol=1e-4)
        assert meta["confidenceTemperature"] == t
    assert (by_t[3.0][1] < by_t[1.0][1]).all()  # a softer teacher is less sure of its own tokens


def test_labels_of_an_older_trainer_are_read_at_temperature_one(teacher_dir: Path, tmp_path: Path) -> None:
    """Before the format marker, top-k log-probabilities were stored as log_softmax(logits / labeling.temperature)."""
    tau = 2.0
    targets, _, meta = _label(teacher_dir, tmp_path, tau)
    logits = _teacher_logits(teacher_dir, tmp_path, targets["token_ids"])
    old_lp, old_ids = torch.log_softmax(logits / tau, -1).topk(V, -1)
    old = {**targets, "topk_ids": old_ids.numpy(), "topk_logprobs": old_lp.numpy()}
    old_meta = {k: v for k, v in meta.items() if k not in (TOPK_TEMPERATURE, "confidenceTemperature")}
    old_meta["teacher"] = "local model"
    task = task_class("generation")(_spec(teacher_dir, tmp_path, temperature=tau))
    read = task.read_targets(old_meta, dict(old), tau)
    mask = torch.from_numpy(targets["token_ids"] >= 0)
    student_p = _optimum(old_ids, torch.from_numpy(read["topk_logprobs"]), mask, 1.0)[mask]
    assert float((student_p - torch.softmax(logits, -1)[mask]).abs().max()) < 0.01
    # New labels (with the marker) are never touched.
    new_meta = {**old_meta, TOPK_TEMPERATURE: 1.0}
    assert task.read_targets(new_meta, dict(old), tau)["topk_logprobs"] is old["topk_logprobs"]


class _FixedTeacher(Teacher):
    kind = "fixed"

    def __init__(self, logits: np.ndarray) -> None:
        self.logits = logits

    def classify(self, texts: Any) -> ClassScores:
        return ClassScores(self.logits[: len(texts)], ["a", "b", "c"])

    def score(self, queries: Any, passages: Any) -> np.ndarray:
        return self.logits.reshape(-1)[: len(queries)]


@pytest.mark.parametrize("task_name", ["classification", "reranking"])
def test_other_tasks_store_raw_scores_too(task_name: str, tmp_path: Path) -> None:
    logits = np.array([[4.0, 1.0, 0.0], [0.5, 0.0, 2.5]], dtype=np.float32)
    rows = [Row("0", "q0", json.dumps(["p0", "p1", "p2"])), Row("1", "q1", json.dumps(["p3", "p4", "p5"]))]
    stored, confidence = [], []
    for t in (1.0, 4.0):
        raw = {"task": task_name, "teacher": {"modelUri": "file:///t"}, "student": {"architecture": {"numLayers": 1}},
               "data": {"uri": "file:///d.jsonl", "fields": {"pair": "p"} if task_name == "reranking" else {}},
               "labeling": {"temperature": t},
               "loss": {"terms": [{"name": "logit-kl" if task_name == "classification" else "margin-mse"}]},
               "output": {"studentModelName": "s", "artifactUri": f"file://{tmp_path}"}}
        task = task_class(task_name)(DistillationJobSpec.model_validate(raw))
        teacher = _FixedTeacher(logits)
        batch = task.label(teacher, rows, task.label_meta(teacher, rows))
        stored.append(batch.targets["logits" if task_name == "classification" else "scores"])
        confidence.append(batch.confidence)
    np.testing.assert_array_equal(stored[0], stored[1])
    np.testing.assert_array_equal(stored[0], logits)
    assert (confidence[1] < confidence[0]).all()
