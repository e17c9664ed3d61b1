"""train: the student minimises the spec's weighted registered losses against the teacher's targets.

Checkpoints every `training.checkpointEverySteps` (model, loss projections, optimiser, schedule, RNG,
history) make a killed run resume where it stopped (from the bucket, when the workdir is s3://);
progress.json is rewritten every few seconds.
Output: train/student/ (a model directory), train/history.json (learning curve), train/done.json; the
checkpoint (and the best epoch's weights, with training.keepBest) are removed once done.json is written.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kubestill.api.v1alpha1.distillationjob import Curriculum

from .. import distributed
from ..context import RunContext
from ..losses import WeightedLoss
from ..outputs import Array, LossInputs, ModelOutputs
from ..progress import ProgressWriter, progress_at
from ..storage import write_json
from ..tasks.base import Row, TaskModel
from ..tokenizer_check import check_student_tokenizer
from .checkpoint import load_checkpoint, save_checkpoint
from .schedule import epoch_order, epochs_since_best
from .train_setup import Examples, build_models, build_optimisation, load_examples

log = logging.getLogger(__name__)


class Batcher:
    """Turns example indices into model features, stored-target tensors and hard labels."""

    def __init__(self, ctx: RunContext, rows: list[Row], targets: dict[str, Array], meta: dict[str, Any]):
        self.ctx, self.rows, self.targets, self.meta = ctx, rows, targets, meta

    def inputs(self, model: TaskModel, idx: list[int], teacher: TaskModel | None, needs: frozenset[str]
               ) -> tuple[dict[str, torch.Tensor], LossInputs]:
        dev = self.ctx.device
        rows = [self.rows[i] for i in idx]
        max_len = self.ctx.spec.training.max_seq_length
        feats = {k: v.to(dev) for k, v in model.encode(rows, max_len).items()}
        tgt = {k: torch.from_numpy(np.ascontiguousarray(v[idx])).to(dev) for k, v in self.targets.items()}
        t_out = self.ctx.task.teacher_outputs(tgt)
        if teacher is not None:
            with torch.no_grad():
                t_feats = {k: v.to(dev) for k, v in teacher.encode(rows, max_len).items()}
                _same_tokens(feats, t_feats, self.ctx.spec.student.base_model_uri)
                live = teacher(t_feats, output_hidden_states="hidden_states" in needs,
                               output_attentions="attentions" in needs)
            t_out.hidden_states, t_out.attentions = live.hidden_states, live.attentions
        labels = self.ctx.task.hard_labels(rows, tgt, self.meta)
        return feats, LossInputs(student=ModelOutputs(), teacher=t_out,
                                 labels=None if labels is None else labels.to(dev),
                                 attention_mask=feats.get("attention_mask"))


def _same_tokens(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], base_uri: str | None) -> None:
    """The live teacher must read the very token sequence the student reads: hidden-mse and attention-mse
    compare them position by position. `tokenizer_check` refuses a different tokenizer up front; this
    catches what it cannot see (a different prompt template, special tokens added on one side only)."""
    for key in student.keys() & teacher.keys():
        if key.endswith("input_ids") and not torch.equal(student[key], teacher[key]):
            s, t = student[key], teacher[key]
            raise ValueError(
                f"the teacher and the student (student.baseModelUri {base_uri or 'unset: cut from the teacher'}) "
                f"read different token sequences for the same rows ({key} {tuple(t.shape)} vs {tuple(s.shape)}, "
                f"first row teacher {t[0, :12].tolist()}, student {s[0, :12].tolist()}); the losses that "
                "compare hidden states or attentions token by token cannot be used with this pair")


def _step_loss(model: nn.Module, loss_fn: WeightedLoss, feats: dict[str, torch.Tensor], inputs: LossInputs,
               needs_student: frozenset[str]) -> tuple[torch.Tensor, dict[str, float]]:
    inputs.student = model(feats, output_hidden_states="hidden_states" in needs_student,
                           output_attentions="attentions" in needs_student)
    total, parts = loss_fn(inputs)
    return total, parts


@dataclass
class _RunState:
    """What a checkpoint restores besides the weights, plus how the loop ended."""

    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per optimiser step
    val_history: list[dict[str, Any]] = field(default_factory=list)  # one entry per epoch
    last_loss: float | None = None
    stopped_early: bool = False


def run_train(ctx: RunContext) -> dict[str, Any]:
    """The train stage: train/student/, train/history.json and train/done.json (its summary, returned).
    Raises ValueError for an unusable spec or data (empty split, a loss that needs a local teacher, ...)."""
    out_dir = ctx.path("train")
    done_file = out_dir / "done.json"
    if done_file.exists() and (out_dir / "student").exists():
        log.info("train: already done (%s); nothing to do", done_file)
        return dict(json.loads(done_file.read_text()))
    data = load_examples(ctx)
    check_student_tokenizer(ctx.spec, ctx.task, data.labelled_train)  # before any model is loaded
    trainer = _Trainer(ctx, data, out_dir)
    trainer.resume()
    trainer.run()
    best = trainer.restore_best()
    summary = trainer.summary(best)
    if trainer.models.dist_info.is_main:
        trainer.write_outputs(best, summary, done_file)
    distributed.finish(trainer.models.dist_info)
    return summary


class _Trainer:
    """One run of the train stage, in named steps: resume, run (epochs of optimiser steps, validation after
    each epoch), restore_best, summary, write_outputs."""

    def __init__(self, ctx: RunContext, data: Examples, out_dir: Path) -> None:
        tr = ctx.spec.training
        self.ctx, self.data, self.out_dir = ctx, data, out_dir
        self.models = build_models(ctx, data)
        self.opt = build_optimisation(ctx, self.models, len(data.rows))
        self.ckpt_dir, self.best_dir = out_dir / "checkpoint", out_dir / "best"
        self.patience = tr.early_stopping_patience
        self.select_best = tr.keep_best or self.patience is not None
        if self.select_best and not data.val_rows:
            raise ValueError("training.keepBest / earlyStoppingPatience: the validation split is empty")
        self.state = _RunState()
        self.batcher = Batcher(ctx, data.rows, data.targets, data.meta)
        self.val_batcher = Batcher(ctx, data.val_rows, data.val_targets, data.meta)
        self.order_conf = data.confidence if tr.curriculum == Curriculum.CONFIDENCE else None
        self.progress = ProgressWriter(ctx.path("progress.json"), ctx.report)
        self.start_step, self.started, self.t0 = 0, datetime.now(UTC), time.monotonic()

    def resume(self) -> None:
        """Restore the last checkpoint of a killed run, if any (weights, loss, optimiser, schedule, RNG)."""
        m, o, s = self.models, self.opt, self.state
        state = load_checkpoint(self.ckpt_dir)
        if state is not None:
            m.model.load_state_dict(state["model"])
            m.loss_fn.load_state_dict(state["loss"])
            o.optimizer.load_state_dict(state["optimizer"])
            o.scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            s.step, s.history, s.val_history = int(state["step"]), list(state["history"]), list(state["val_history"])
            log.info("train: resumed from checkpoint at step %d of %d", s.step, o.total)
        if m.dist_info.is_main:  # rank 0 alone writes (and so clears) train/
            _drop_best_after(self.best_dir, s.step)
        self.start_step, self.started = s.step, datetime.now(UTC)
        s.last_loss = s.history[-1]["loss"] if s.history else None

    def run(self) -> None:
        """Epochs until the planned steps are done or early stopping says so."""
        s = self.state
        log.info("train: %d examples, %d steps (%d per epoch), device %s, resume at %d",
                 len(self.data.rows), self.opt.total, self.opt.per_epoch, self.ctx.device, s.step)
        self.t0 = time.monotonic()
        while s.step < self.opt.total and not s.stopped_early:
            self._epoch()

    def _epoch(self) -> None:
        """The rest of the current epoch (all of it unless resumed mid-epoch), then its validation."""
        s, o, tr = self.state, self.opt, self.ctx.spec.training
        epoch = s.step // o.per_epoch
        order = distributed.shard(epoch_order(len(self.data.rows), tr.seed, epoch, self.order_conf),
                                  self.models.dist_info)
        self.models.model.train()
        chunk_size = tr.batch_size * tr.gradient_accumulation
        for k in range(s.step % o.per_epoch, o.per_epoch):
            chunk = order[k * chunk_size : (k + 1) * chunk_size]
            if s.step >= o.total or not chunk:
                break
            self._optimizer_step(chunk)
            self._after_step()
        if self.data.val_rows and (s.step % o.per_epoch == 0 or s.step >= o.total):
            self._validate()

    def _optimizer_step(self, chunk: list[int]) -> None:
        """One optimiser step over `chunk` (gradient accumulation over micro-batches of training.batchSize)."""
        m, o, s, micro = self.models, self.opt, self.state, self.ctx.spec.training.batch_size
        parts_sum: dict[str, float] = {}
        total_loss = 0.0
        micro_batches = [chunk[i : i + micro] for i in range(0, len(chunk), micro)]
        for idx in micro_batches:
            feats, inputs = self.batcher.inputs(m.model, idx, m.teacher, m.needs)
            loss, parts = _step_loss(m.forward_model, m.loss_fn, feats, inputs, m.needs)
            (loss / len(micro_batches)).backward()  # type: ignore[no-untyped-call]
            total_loss += float(loss.detach()) / len(micro_batches)
            for name, v in parts.items():
                parts_sum[name] = parts_sum.get(name, 0.0) + v / len(micro_batches)
        torch.nn.utils.clip_grad_norm_(o.params, 1.0)
        o.optimizer.step()
        o.scheduler.step()
        o.optimizer.zero_grad(set_to_none=True)
        s.step += 1
        s.last_loss = total_loss
        s.history.append({"step": s.step, "loss": total_loss, "lr": o.scheduler.get_last_lr()[0], **parts_sum})

    def _after_step(self) -> None:
        """Progress (every few seconds, and at the last step) and the periodic checkpoint; rank 0 only."""
        s, o, m = self.state, self.opt, self.models
        if not m.dist_info.is_main:
            return
        self.progress.maybe_write(progress_at(s.step, o.total, o.per_epoch, s.last_loss, self.started,
                                              self.start_step, datetime.now(UTC)), force=s.step == o.total)
        if s.step % self.ctx.spec.training.checkpoint_every_steps == 0 and s.step < o.total:
            save_checkpoint(self.ckpt_dir, {
                "model": m.model.state_dict(), "loss": m.loss_fn.state_dict(), "optimizer": o.optimizer.state_dict(),
                "scheduler": o.scheduler.state_dict(), "rng": torch.get_rng_state(), "step": s.step,
                "history": s.history, "val_history": s.val_history})
            self.ctx.workdir.checkpointed(self.ckpt_dir)  # durable in the bucket when the workdir is one

    def _validate(self) -> None:
        """Validation loss after an epoch; with best-epoch selection, keep the best weights and decide (on
        rank 0, for every process) whether to stop early."""
        s, m = self.state, self.models
        loss = _validation_loss(m.model, m.loss_fn, self.val_batcher, m.teacher, m.needs,
                                self.ctx.spec.training.batch_size)
        s.val_history.append({"step": s.step, "loss": loss})
        log.info("train: step %d/%d, loss %.4f, validation loss %.4f", s.step, self.opt.total, s.last_loss or 0.0,
                 loss)
        if not self.select_best:
            return
        since = epochs_since_best([v["loss"] for v in s.val_history])
        if since == 0 and m.dist_info.is_main:
            save_checkpoint(self.best_dir, {"model": m.model.state_dict(), "step": s.step})
            self.ctx.workdir.checkpointed(self.best_dir)
        stop = self.patience is not None and since >= self.patience and s.step < self.opt.total
        s.stopped_early = distributed.main_says(stop, m.dist_info)
        if s.stopped_early:
            log.info("train: early stop at step %d: no lower validation loss for %d epochs", s.step, since)

    def restore_best(self) -> dict[str, Any] | None:
        """With best-epoch selection: the best validation entry, its weights loaded into the student (rank 0).
        Raises RuntimeError when those weights are missing from train/best."""
        s = self.state
        best = min(s.val_history, key=lambda v: v["loss"]) if self.select_best and s.val_history else None
        if best is not None and self.models.dist_info.is_main:
            kept = load_checkpoint(self.best_dir)
            if kept is None or int(kept["step"]) != int(best["step"]):
                raise RuntimeError(f"train: the best epoch's weights (step {best['step']}) are missing from "
                                   f"{self.best_dir}")
            self.models.model.load_state_dict(kept["model"])
            log.info("train: kept the weights of step %d (validation loss %.4f)", best["step"], best["loss"])
        return best

    def summary(self, best: dict[str, Any] | None) -> dict[str, Any]:
        """done.json: steps, loss, throughput (steps per second of this process's stretch), best epoch."""
        s, elapsed = self.state, time.monotonic() - self.t0
        return {"steps": s.step, "totalSteps": self.opt.total, "examples": len(self.data.rows),
                "finalLoss": s.last_loss, "resumedFrom": self.start_step, "seconds": round(elapsed, 2),
                "stepsPerSecond": round((s.step - self.start_step) / elapsed, 3) if elapsed > 0 else None,
                "processes": self.models.dist_info.world_size, "stoppedEarly": s.stopped_early,
                "bestStep": best["step"] if best else None, "bestValidationLoss": best["loss"] if best else None,
                "headInit": self.models.head_init}

    def write_outputs(self, best: dict[str, Any] | None, summary: dict[str, Any], done_file: Path) -> None:
        """train/student, history.json and done.json (last: its presence means done); checkpoints removed."""
        s = self.state
        if s.stopped_early:
            self.progress.maybe_write(progress_at(s.step, s.step, self.opt.per_epoch, s.last_loss, self.started,
                                                  self.start_step, datetime.now(UTC)), force=True)
        self.models.model.save(self.out_dir / "student")
        write_json(self.out_dir / "history.json", {"train": s.history, "validation": s.val_history, "best": best})
        write_json(done_file, summary)
        # Resume state is dead weight once done.json exists (optimiser moments alone are twice the model).
        for path in (self.ckpt_dir, self.best_dir):
            _remove_checkpoint(path)


def _drop_best_after(best_dir: Path, step: int) -> None:
    """A resumed run replays the steps after its checkpoint: best weights saved in that replayed stretch
    belong to the run that was killed, and the replay decides again."""
    kept = load_checkpoint(best_dir)
    if kept is not None and int(kept["step"]) > step:
        _remove_checkpoint(best_dir)


def _remove_checkpoint(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".old"), path.with_name(path.name + ".tmp")):
        shutil.rmtree(p, ignore_errors=True)


@torch.no_grad()
def _validation_loss(model: TaskModel, loss_fn: WeightedLoss, batcher: Batcher, teacher: TaskModel | None,
                     needs: frozenset[str], micro: int) -> float:
    model.eval()
    losses, n = 0.0, 0
    for i in range(0, len(batcher.rows), micro):
        idx = list(range(i, min(i + micro, len(batcher.rows))))
        feats, inputs = batcher.inputs(model, idx, teacher, needs)
        loss, _ = _step_loss(model, loss_fn, feats, inputs, needs)
        losses += float(loss) * len(idx)
        n += len(idx)
    model.train()
    return losses / max(1, n)
