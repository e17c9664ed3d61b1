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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kubestill.api.v1alpha1.distillationjob import Curriculum

from .. import distributed
from ..context import RunContext
from ..labelstore import CONFIDENCE, load_labels
from ..losses import LossDims, WeightedLoss
from ..outputs import Array, LossInputs, ModelOutputs
from ..progress import ProgressWriter, progress_at
from ..storage import resolve_uri, write_json
from ..tasks.base import Row, TaskModel
from ..tokenizer_check import check_student_tokenizer
from .checkpoint import load_checkpoint, save_checkpoint
from .schedule import epoch_order, epochs_since_best, lr_factor, plan_steps

log = logging.getLogger(__name__)


def use_eager_attention(model: nn.Module) -> None:
    """Attention maps are only returned by the eager attention implementation."""
    from transformers import PreTrainedModel

    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            module.set_attn_implementation("eager")


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


def run_train(ctx: RunContext) -> dict[str, Any]:
    spec, tr = ctx.spec, ctx.spec.training
    out_dir = ctx.path("train")
    done_file = out_dir / "done.json"
    if done_file.exists() and (out_dir / "student").exists():
        log.info("train: already done (%s); nothing to do", done_file)
        return dict(json.loads(done_file.read_text()))
    labels = load_labels(ctx.path("labels"))
    labels.targets = ctx.task.read_targets(labels.meta, labels.targets, spec.labeling.temperature)
    train_rows, train_targets = labels.subset("train")
    confidence = train_targets.pop(CONFIDENCE)
    rows, targets = ctx.task.training_examples(train_rows, train_targets)
    confidence = np.concatenate([confidence, np.ones(len(rows) - len(confidence), np.float32)])
    if not rows:
        raise ValueError("the train split is empty: add data or raise data.splits.train")
    val_rows, val_targets = labels.subset("validation")
    val_targets.pop(CONFIDENCE)
    val_rows, val_targets = ctx.task.training_examples(val_rows, val_targets)

    check_student_tokenizer(spec, ctx.task, train_rows)  # before any model is loaded
    torch.manual_seed(tr.seed)
    teacher_dir = resolve_uri(spec.teacher.model_uri) if spec.teacher.model_uri else None
    model = ctx.task.build_student(labels.meta, teacher_dir)
    quant = spec.student.quantization
    if quant is not None and quant.aware:  # fake-quantized Linear layers while training (see qat)
        from ..qat import prepare_qat

        log.info("train: quantization-aware, %d Linear layers fake-quantized", prepare_qat(model, quant))
    # Under torchrun (spec.resources.train.gpus > 1): one replica per process, rank 0 writes.
    dist_info = distributed.init(ctx.device)
    ctx.device = dist_info.device
    needs = WeightedLoss(spec.loss.terms, LossDims()).needs_teacher
    teacher: TaskModel | None = None
    if needs:
        if teacher_dir is None:
            raise ValueError(f"spec.loss: {sorted(needs)} need a local teacher (teacher.modelUri)")
        teacher = ctx.task.load_model(teacher_dir).to(ctx.device).eval()
    if "attentions" in needs:
        use_eager_attention(model)
        if teacher is not None:
            use_eager_attention(teacher)
    dims = LossDims(student_hidden=model.hidden_size, teacher_hidden=teacher.hidden_size if teacher else None,
                    student_layers=model.num_layers, teacher_layers=teacher.num_layers if teacher else None,
                    student_embedding=model.embedding_dim,
                    teacher_embedding=teacher.embedding_dim if teacher else None)
    loss_fn = WeightedLoss(spec.loss.terms, dims)
    model.to(ctx.device)
    forward_model = distributed.wrap(model, dist_info)
    loss_fn.to(ctx.device)
    params = [p for p in [*model.parameters(), *loss_fn.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tr.learning_rate, weight_decay=tr.weight_decay)
    per_epoch, total = plan_steps(len(rows) // dist_info.world_size, tr.batch_size, tr.gradient_accumulation,
                                  tr.epochs, tr.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, tr.warmup_ratio))

    step, history, val_history = 0, [], []
    ckpt_dir, best_dir = out_dir / "checkpoint", out_dir / "best"
    patience = tr.early_stopping_patience
    select_best = tr.keep_best or patience is not None
    if select_best and not val_rows:
        raise ValueError("training.keepBest / earlyStoppingPatience: the validation split is empty")
    state = load_checkpoint(ckpt_dir)
    if state is not None:
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        step, history, val_history = int(state["step"]), list(state["history"]), list(state["val_history"])
        log.info("train: resumed from checkpoint at step %d of %d", step, total)
    if dist_info.is_main:  # rank 0 alone writes (and so clears) train/
        _drop_best_after(best_dir, step)
    start_step, started = step, datetime.now(UTC)
    progress = ProgressWriter(ctx.path("progress.json"), ctx.report)
    batcher = Batcher(ctx, rows, targets, labels.meta)
    val_batcher = Batcher(ctx, val_rows, val_targets, labels.meta)
    needs_student = needs  # the student returns what the teacher is compared on
    order_conf = confidence if tr.curriculum == Curriculum.CONFIDENCE else None
    micro = tr.batch_size
    last_loss: float | None = history[-1]["loss"] if history else None
    log.info("train: %d examples, %d steps (%d per epoch), device %s, resume at %d",
             len(rows), total, per_epoch, ctx.device, step)
    t0 = time.monotonic()
    stopped_early = False
    while step < total and not stopped_early:
        epoch = step // per_epoch
        order = distributed.shard(epoch_order(len(rows), tr.seed, epoch, order_conf), dist_info)
        model.train()
        for k in range(step % per_epoch, per_epoch):
            if step >= total:
                break
            chunk = order[k * micro * tr.gradient_accumulation : (k + 1) * micro * tr.gradient_accumulation]
            if not chunk:
                break
            parts_sum: dict[str, float] = {}
            total_loss = 0.0
            micro_batches = [chunk[i : i + micro] for i in range(0, len(chunk), micro)]
            for idx in micro_batches:
                feats, inputs = batcher.inputs(model, idx, teacher, needs)
                loss, parts = _step_loss(forward_model, loss_fn, feats, inputs, needs_student)
                (loss / len(micro_batches)).backward()  # type: ignore[no-untyped-call]
                total_loss += float(loss.detach()) / len(micro_batches)
                for name, v in parts.items():
                    parts_sum[name] = parts_sum.get(name, 0.0) + v / len(micro_batches)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            last_loss = total_loss
            history.append({"step": step, "loss": total_loss, "lr": scheduler.get_last_lr()[0], **parts_sum})
            now = datetime.now(UTC)
            if dist_info.is_main:
                progress.maybe_write(progress_at(step, total, per_epoch, last_loss, started, start_step, now),
                                     force=step == total)
            if step % tr.checkpoint_every_steps == 0 and step < total and dist_info.is_main:
                save_checkpoint(ckpt_dir, {
                    "model": model.state_dict(), "loss": loss_fn.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "step": step,
                    "history": history, "val_history": val_history})
                ctx.workdir.checkpointed(ckpt_dir)  # durable in the bucket when the workdir is one
        if val_rows and (step % per_epoch == 0 or step >= total):
            val_history.append({"step": step, "loss": _validation_loss(model, loss_fn, val_batcher, teacher, needs,
                                                                        micro)})
            log.info("train: step %d/%d, loss %.4f, validation loss %.4f", step, total, last_loss or 0.0,
                     val_history[-1]["loss"])
            if select_best:
                since = epochs_since_best([v["loss"] for v in val_history])
                if since == 0 and dist_info.is_main:
                    save_checkpoint(best_dir, {"model": model.state_dict(), "step": step})
                    ctx.workdir.checkpointed(best_dir)
                stopped_early = distributed.main_says(patience is not None and since >= patience and step < total,
                                                      dist_info)
                if stopped_early:
                    log.info("train: early stop at step %d: no lower validation loss for %d epochs", step, since)
    best = min(val_history, key=lambda v: v["loss"]) if select_best and val_history else None
    if best is not None and dist_info.is_main:
        kept = load_checkpoint(best_dir)
        if kept is None or int(kept["step"]) != int(best["step"]):
            raise RuntimeError(f"train: the best epoch's weights (step {best['step']}) are missing from {best_dir}")
        model.load_state_dict(kept["model"])
        log.info("train: kept the weights of step %d (validation loss %.4f)", best["step"], best["loss"])
    elapsed = time.monotonic() - t0
    summary = {"steps": step, "totalSteps": total, "examples": len(rows), "finalLoss": last_loss,
               "resumedFrom": start_step, "seconds": round(elapsed, 2),
               "stepsPerSecond": round((step - start_step) / elapsed, 3) if elapsed > 0 else None,
               "processes": dist_info.world_size, "stoppedEarly": stopped_early,
               "bestStep": best["step"] if best else None, "bestValidationLoss": best["loss"] if best else None}
    if dist_info.is_main:
        if stopped_early:
            progress.maybe_write(progress_at(step, step, per_epoch, last_loss, started, start_step,
                                             datetime.now(UTC)), force=True)
        model.save(out_dir / "student")
        write_json(out_dir / "history.json", {"train": history, "validation": val_history, "best": best})
        write_json(done_file, summary)
        # Resume state is dead weight once done.json exists (optimiser moments alone are twice the model).
        for path in (ckpt_dir, best_dir):
            _remove_checkpoint(path)
    distributed.finish(dist_info)
    return summary


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
