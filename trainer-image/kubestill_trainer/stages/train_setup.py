"""What one run of the train stage trains with: the labelled examples, the student, the live teacher and the
weighted loss on the process's device, and the optimiser with its schedule. The loop itself is stages/train.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import distributed
from ..context import RunContext
from ..data_checks import data_need
from ..labelstore import CONFIDENCE, load_labels
from ..losses import LossDims, WeightedLoss
from ..outputs import Array
from ..storage import resolve_uri
from ..tasks.base import Row, TaskModel
from .schedule import lr_factor, plan_steps

log = logging.getLogger(__name__)


def use_eager_attention(model: nn.Module) -> None:
    """Attention maps are only returned by the eager attention implementation."""
    from transformers import PreTrainedModel

    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            module.set_attn_implementation("eager")


@dataclass
class Examples:
    """The labelled examples of one run, after the task's own expansion (`DistillTask.training_examples`)."""

    meta: dict[str, Any]
    labelled_train: list[Row]  # the train split as labelled: what the tokenizer check reads
    rows: list[Row]
    targets: dict[str, Array]
    confidence: Array  # [len(rows)] float32: the teacher's confidence, 1 for examples the task added
    val_rows: list[Row]
    val_targets: dict[str, Array]


@dataclass
class Models:
    """The student, the live teacher (when a loss reads its internals) and the weighted loss, on the device."""

    model: TaskModel
    forward_model: nn.Module  # the student, or its DistributedDataParallel wrapper under torchrun
    teacher: TaskModel | None
    needs: frozenset[str]  # teacher internals the losses read live ("hidden_states", "attentions")
    loss_fn: WeightedLoss
    dist_info: distributed.DistInfo
    head_init: dict[str, Any] | None = None  # what `DistillTask.init_head` did, for train/done.json


@dataclass
class Optimisation:
    """AdamW and its LambdaLR schedule over the trainable parameters, with the run's step plan."""

    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    per_epoch: int  # optimiser steps per epoch (per process)
    total: int  # optimiser steps of the whole run


def load_examples(ctx: RunContext) -> Examples:
    """labels/ read back for training: targets converted by the task, the train and validation splits expanded
    by it. Raises ValueError when the train split is empty."""
    labels = load_labels(ctx.path("labels"))
    labels.targets = ctx.task.read_targets(labels.meta, labels.targets, ctx.spec.labeling.temperature)
    train_rows, train_targets = labels.subset("train")
    confidence = train_targets.pop(CONFIDENCE)
    rows, targets = ctx.task.training_examples(train_rows, train_targets)
    confidence = np.concatenate([confidence, np.ones(len(rows) - len(confidence), np.float32)])
    if not rows:
        raise ValueError("the train split is empty: add data or raise data.splits.train")
    val_rows, val_targets = labels.subset("validation")
    val_targets.pop(CONFIDENCE)
    val_rows, val_targets = ctx.task.training_examples(val_rows, val_targets)
    return Examples(labels.meta, train_rows, rows, targets, confidence, val_rows, val_targets)


def build_models(ctx: RunContext, data: Examples) -> Models:
    """Seeded student (its fresh head fitted where the task says so, fake-quantized under QAT), the live
    teacher when a loss needs one, and the loss with its learned projections sized from both; everything moved
    to the process's device."""
    spec, meta = ctx.spec, data.meta
    torch.manual_seed(spec.training.seed)
    teacher_dir = resolve_uri(spec.teacher.model_uri) if spec.teacher.model_uri else None
    model = ctx.task.build_student(meta, teacher_dir)
    # Only below the student's data need (the label stage's data-size check), where training cannot move the
    # student far from its start: there a head fitted on that start is the best head it gets (FAQ topics, 402
    # rows: 0.43 -> 0.88 of the teacher). Above it KD trains the table from a random head further (BBC titles,
    # 1,780 rows: 1.02 of the teacher from a random head, 0.91 from a fitted one, hard or soft targets alike).
    # Before QAT wraps the head and before DDP's wrapper broadcasts rank 0's weights; a resumed run then loads
    # its checkpoint over it (for a static student this costs seconds).
    head_init = None
    if len(data.rows) < data_need(spec.student).rows:
        with torch.random.fork_rng(devices=[]):  # the run's random stream as it would be without the fit
            head_init = ctx.task.init_head(model, data.rows, data.targets, meta)
    if head_init is not None:
        log.info("train: the student's fresh head fitted on its own features before training: %s", head_init)
    quant = spec.student.quantization
    if quant is not None and quant.aware:  # fake-quantized Linear layers while training (see qat)
        from ..qat import prepare_qat

        log.info("train: quantization-aware, %d Linear layers fake-quantized", prepare_qat(model, quant))
    # Under torchrun (spec.resources.train.gpus > 1): one replica per process, rank 0 writes.
    dist_info = distributed.init(ctx.device)
    ctx.device = dist_info.device
    needs = WeightedLoss(spec.loss.terms, LossDims()).needs_teacher
    teacher = _live_teacher(ctx, teacher_dir, needs)
    if "attentions" in needs:
        use_eager_attention(model)
        if teacher is not None:
            use_eager_attention(teacher)
    loss_fn = WeightedLoss(spec.loss.terms, _loss_dims(model, teacher))
    model.to(ctx.device)
    forward_model = distributed.wrap(model, dist_info)
    loss_fn.to(ctx.device)
    return Models(model, forward_model, teacher, needs, loss_fn, dist_info, head_init)


def _live_teacher(ctx: RunContext, teacher_dir: Path | None, needs: frozenset[str]) -> TaskModel | None:
    if not needs:
        return None
    if teacher_dir is None:
        raise ValueError(f"spec.loss: {sorted(needs)} need a local teacher (teacher.modelUri)")
    return ctx.task.load_model(teacher_dir).to(ctx.device).eval()


def _loss_dims(model: TaskModel, teacher: TaskModel | None) -> LossDims:
    return LossDims(student_hidden=model.hidden_size, teacher_hidden=teacher.hidden_size if teacher else None,
                    student_layers=model.num_layers, teacher_layers=teacher.num_layers if teacher else None,
                    student_embedding=model.embedding_dim,
                    teacher_embedding=teacher.embedding_dim if teacher else None)


def build_optimisation(ctx: RunContext, models: Models, examples: int) -> Optimisation:
    """AdamW over the student's and the loss's trainable parameters; warm-up then decay per `lr_factor`."""
    tr = ctx.spec.training
    params = [p for p in [*models.model.parameters(), *models.loss_fn.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tr.learning_rate, weight_decay=tr.weight_decay)
    per_epoch, total = plan_steps(examples // models.dist_info.world_size, tr.batch_size, tr.gradient_accumulation,
                                  tr.epochs, tr.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, tr.warmup_ratio))
    return Optimisation(params, optimizer, scheduler, per_epoch, total)
