"""The metric names a DistillationJob may give as evaluation.primaryMetric or evaluation.metrics (the operator's
METRICS_BY_TASK, checked by the CRD's CEL rule at admission) are exactly those each task's evaluation measures,
and each task's default primary metric is one of them: the table and the trainer cannot drift apart."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from kubestill.api.v1alpha1 import DistillationJobSpec
from kubestill.api.v1alpha1.common import Task
from kubestill.api.v1alpha1.distillationjob import METRICS_BY_TASK
from kubestill_trainer.tasks import Row, task_class

# What a task reports beside its metrics, which no gate could be computed on: the share of rows with a gold label
# (classification), the mean continuation length (generation).
NOT_METRICS = {"gold_labels", "mean_length"}


def _spec(task: Task) -> DistillationJobSpec:
    fields = {"text": "text", "label": "label", **({"pair": "pair"} if task in (Task.EMBEDDING, Task.RERANKING)
                                                   else {})}
    loss = {Task.CLASSIFICATION: "logit-kl", Task.EMBEDDING: "embedding-mse", Task.RERANKING: "margin-mse",
            Task.GENERATION: "token-kl"}[task]
    return DistillationJobSpec.model_validate({
        "task": task.value, "teacher": {"modelUri": "file:///t"}, "student": {"baseModelUri": "file:///s"},
        "data": {"uri": "file:///d.jsonl", "fields": fields}, "loss": {"terms": [{"name": loss}]},
        "output": {"studentModelName": "s", "artifactUri": "file:///o"}})


def _measured(task: Task) -> dict[str, float]:
    """What the task's evaluation returns for three test rows, its student and its teacher disagreeing a little."""
    rng = np.random.default_rng(0)
    impl = task_class(task)(_spec(task))
    preds: dict[str, Any]
    if task == Task.CLASSIFICATION:
        rows = [Row(str(i), f"text {i}", label=label) for i, label in enumerate(["a", "b", "a"])]
        preds, teacher, meta = {"logits": rng.normal(size=(3, 2))}, {"logits": rng.normal(size=(3, 2))}, {
            "labels": ["a", "b"]}
    elif task == Task.EMBEDDING:
        rows = [Row(str(i), f"text {i}", pair=f"pair {i}") for i in range(3)]
        preds = {"embedding": rng.normal(size=(3, 4)), "pair_embedding": rng.normal(size=(3, 4))}
        teacher, meta = {k: rng.normal(size=(3, 4)) for k in preds}, {}
    elif task == Task.RERANKING:
        rows = [Row(str(i), f"query {i}", pair=json.dumps(["p0", "p1", "p2"]), label="0") for i in range(3)]
        preds, teacher, meta = {"scores": rng.normal(size=(3, 3))}, {"scores": rng.normal(size=(3, 3))}, {}
    else:
        rows = [Row(str(i), f"prompt {i}") for i in range(3)]
        preds = {"token_ids": np.array([[1, 2, 3], [4, 5, -1], [6, -1, -1]])}
        teacher, meta = {"token_ids": np.array([[1, 2, 4], [4, 5, -1], [7, 8, -1]])}, {"eosTokenId": 0}
    return impl.metrics(preds, teacher, rows, meta)


@pytest.mark.parametrize("task", list(Task), ids=[t.value for t in Task])
def test_the_names_a_job_may_use_are_what_its_task_measures(task: Task) -> None:
    measured = _measured(task)
    assert sorted(set(measured) - NOT_METRICS) == sorted(METRICS_BY_TASK[task]), measured
    assert task_class(task).primary_metric in METRICS_BY_TASK[task]
