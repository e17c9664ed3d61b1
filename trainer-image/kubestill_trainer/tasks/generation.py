"""Generation: a causal LM student learns to answer prompts like the teacher.

Label: the teacher answers each prompt greedily (`labeling.maxNewTokens`) and keeps, per generated token,
its `labeling.topK` most likely next tokens with their raw log-probabilities (temperature 1, whatever
`labeling.temperature` says: that one only sets the temperature of the confidence the filter reads).
Targets (row-aligned, padded to maxNewTokens): `token_ids` [N, T] (-1 padding), `topk_ids` /
`topk_logprobs` [N, T, k]. labels/meta.json says `topkTemperature: 1`; labels written before it (no such
key) hold log_softmax(logits / labeling.temperature) and are read back at temperature 1 (`read_targets`).
Train: the student reads prompt + the teacher's answer (teacher forcing); `token-kl` matches its next-token
distribution to the teacher's top-k at every answer position, `sequence-kd` is cross-entropy on the
teacher's tokens; hidden-mse / attention-mse run the local teacher on the same sequence.
Students: `architecture` drops decoder layers of the teacher (keeps embeddings, norm and LM head), or a
`baseModelUri` model, optionally with LoRA / QLoRA adapters (`student.lora`).
Evaluate: greedy answers of the student vs the teacher's, on tokens: exact match, first-token agreement,
token F1, ROUGE-L (primary). Served as PROMPT -> TEXT.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from kubestill.api.v1alpha1.common import Task
from kubestill.api.v1alpha1.distillationjob import LoRASpec

from ..losses.extras import RESPONSE_MASK, TOKEN_IDS, TOPK_IDS, TOPK_LOGPROBS
from ..outputs import Array, ModelOutputs
from .base import MODEL_CARD, DistillTask, Features, LabelBatch, Predictions, Row, TaskModel, register_task, texts_of
from .generation_lm import drop_layers, generate, load_causal_lm, load_tokenizer, prompt_ids
from .generation_metrics import generation_metrics
from .teacher import Generated, Teacher

log = logging.getLogger(__name__)

FORMAT = "kubestill-causal-lm"
MISSING_LOGPROB = -1e4  # top-k slots a teacher did not fill (an API returning fewer alternatives)
# labels/meta.json key: the temperature of the stored top-k log-probabilities. Always 1 since it exists.
TOPK_TEMPERATURE = "topkTemperature"


def response_tokens(row: Row) -> list[int] | None:
    """The teacher's answer tokens that `training_examples` put in `pair` (a JSON list of ints)."""
    if not row.pair or not row.pair.startswith("["):
        return None
    try:
        value = json.loads(row.pair)
    except ValueError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, int) for v in value) else None


class GenerationModel(TaskModel):
    task = Task.GENERATION

    def __init__(
        self, lm: nn.Module, tokenizer: PreTrainedTokenizerBase, max_length: int, max_new_tokens: int,
        chat: bool = True, base_path: Path | None = None, merge: bool = True,
    ) -> None:
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_new_tokens = max_new_tokens
        self.chat = chat
        self.base_path = base_path  # where a LoRA base comes from (merged at save time)
        self.merge = merge

    @property
    def config(self) -> Any:
        return self.lm.config

    def encode(self, rows: Sequence[Row], max_length: int) -> Features:
        tok = self.tokenizer
        t = self.max_new_tokens
        seqs, starts, answers = [], [], []
        for r in rows:
            # The end of a long prompt (what the answer follows), read exactly as decoding reads it.
            ids = prompt_ids(tok, r.text, self.chat, max_length)
            answer = (response_tokens(r) or [])[:t]
            seqs.append(ids + answer)
            starts.append(len(ids))
            answers.append(len(answer))
        width = max(len(s) for s in seqs)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            input_ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        j = torch.arange(t)
        start = torch.tensor(starts).unsqueeze(1)
        # The logits at position p predict token p + 1: answer token j is predicted at start - 1 + j.
        positions = (start - 1 + j).clamp(0, width - 1)
        response = j.unsqueeze(0) < torch.tensor(answers).unsqueeze(1)
        return {"input_ids": input_ids, "attention_mask": mask, "response_positions": positions,
                RESPONSE_MASK: response}

    def forward(
        self, features: Features, *, output_hidden_states: bool = False, output_attentions: bool = False
    ) -> ModelOutputs:
        out = self.lm(input_ids=features["input_ids"], attention_mask=features["attention_mask"],
                      output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                      use_cache=False)
        pos = features["response_positions"]
        logits = torch.gather(out.logits, 1, pos.unsqueeze(-1).expand(-1, -1, out.logits.shape[-1]))
        return ModelOutputs(logits=logits, hidden_states=out.hidden_states, attentions=out.attentions,
                            extra={RESPONSE_MASK: features[RESPONSE_MASK]})

    def plain_model(self) -> PreTrainedModel:
        """The model to export: adapters merged into a float base when there are any (see `lora`)."""
        from ..lora import is_peft, merged_copy

        if not is_peft(self.lm):
            return self.lm  # type: ignore[return-value]
        base = self.base_path
        if base is None:
            raise ValueError("a LoRA student needs its base model path to merge")
        return merged_copy(self.lm, lambda: load_causal_lm(base))

    def save(self, path: Path) -> None:
        from ..lora import is_peft, save_adapter

        path.mkdir(parents=True, exist_ok=True)
        card: dict[str, Any] = {"task": "generation", "format": FORMAT, "maxSeqLength": self.max_length,
                                "maxNewTokens": self.max_new_tokens, "chat": self.chat, "adapter": False}
        if is_peft(self.lm) and not self.merge:
            save_adapter(self.lm, path / "adapter")
            card.update(adapter=True, baseModel=str(self.base_path))
        else:
            self.plain_model().save_pretrained(str(path))
        self.tokenizer.save_pretrained(str(path))
        (path / MODEL_CARD).write_text(json.dumps(card, indent=2) + "\n")

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.config.num_hidden_layers)


def _remote_answers(answers: Sequence[Generated], k: int, temperature: float
                    ) -> tuple[list[list[int]], torch.Tensor, torch.Tensor, torch.Tensor]:
    """A remote teacher's answers as the local path gives them: token ids per row, top-k ids and
    log-probabilities [B, T, k] (MISSING_LOGPROB where the API gave none) and the chosen tokens' [B, T]."""
    tokens = [list(a.token_ids or []) for a in answers]
    width = max([len(x) for x in tokens] or [1])
    topk_ids = torch.zeros(len(answers), width, k, dtype=torch.long)
    topk_lp = torch.full((len(answers), width, k), MISSING_LOGPROB)
    for i, a in enumerate(answers):
        if a.topk_ids is not None and a.topk_logprobs is not None:
            n, kk = min(width, a.topk_ids.shape[0]), min(k, a.topk_ids.shape[1])
            topk_ids[i, :n, :kk] = torch.as_tensor(a.topk_ids[:n, :kk])
            topk_lp[i, :n, :kk] = torch.as_tensor(a.topk_logprobs[:n, :kk])
    # Only the top-k is known: the chosen (top-1) token's share of it at the confidence temperature.
    chosen_lp = topk_lp[..., 0] if temperature == 1.0 else torch.log_softmax(topk_lp / temperature, dim=-1)[..., 0]
    return tokens, topk_ids, topk_lp, chosen_lp


def _confidence(tokens: Sequence[Sequence[int]], chosen_lp: torch.Tensor, eos: int | None, max_new_tokens: int,
                drop_empty: bool) -> tuple[Array, list[str | None]]:
    """Per row: the geometric-mean probability (at labeling.temperature) of the teacher's own tokens, [B]
    float32 (1 for an empty answer), and why the answer is unusable (None: usable)."""
    invalid: list[str | None] = []
    conf = np.ones(len(tokens), dtype=np.float32)
    for i, row in enumerate(tokens):
        content = [x for x in row if x != eos]
        invalid.append("empty teacher answer" if drop_empty and not content else
                       "the teacher returned text without token ids" if not row else None)
        m = min(len(row), max_new_tokens, chosen_lp.shape[1])
        if m:
            conf[i] = float(np.exp(chosen_lp[i, :m].double().mean().item()))
    return conf, invalid


def load_generation_model(path: Path, max_length: int, max_new_tokens: int) -> GenerationModel:
    """A saved student (merged, or base + adapter) or a plain Hugging Face / GGUF causal LM directory."""
    card_file = path / MODEL_CARD
    card = json.loads(card_file.read_text()) if card_file.exists() else {}
    tok = load_tokenizer(path)
    # A plain model directory is chat-formatted when its tokenizer has a template, as a student built from
    # it is (`Generation._wrap`): teacher and student must read the same token sequence.
    chat = bool(card.get("chat", bool(getattr(tok, "chat_template", None))))
    if card.get("quantization") == "gptq":  # export/gptq: gptqmodel's packed low-bit weights
        from ..quantize_gptq import load_gptq

        model = GenerationModel(load_gptq(path), tok, max_length, max_new_tokens, chat)
    elif card.get("adapter"):
        from ..lora import load_adapter

        base = Path(card["baseModel"])
        lm: nn.Module = load_adapter(load_causal_lm(base), path / "adapter")
        model = GenerationModel(lm, tok, max_length, max_new_tokens, chat, base, False)
    else:
        model = GenerationModel(load_causal_lm(path), tok, max_length, max_new_tokens,
                                chat)
    if card:
        model.max_new_tokens = int(card.get("maxNewTokens", max_new_tokens))
    return model.eval()


def _pad_targets(tokens: list[list[int]], topk_ids: torch.Tensor, topk_lp: torch.Tensor, t: int, k: int
                 ) -> dict[str, Array]:
    n = len(tokens)
    ids = np.full((n, t), -1, dtype=np.int64)
    tk_ids = np.zeros((n, t, k), dtype=np.int64)
    tk_lp = np.full((n, t, k), MISSING_LOGPROB, dtype=np.float32)
    for i, row in enumerate(tokens):
        m = min(len(row), t)
        ids[i, :m] = row[:m]
        kk = min(k, topk_ids.shape[-1])
        if kk:
            tk_ids[i, :m, :kk] = topk_ids[i, :m, :kk].numpy()
            tk_lp[i, :m, :kk] = topk_lp[i, :m, :kk].numpy()
        else:  # no distribution from the teacher: its own token with certainty
            tk_ids[i, :m, 0] = row[:m]
            tk_lp[i, :m, 0] = 0.0
    return {"token_ids": ids, "topk_ids": tk_ids, "topk_logprobs": tk_lp}


@register_task(Task.GENERATION)
class Generation(DistillTask):
    primary_metric = "rougeL"
    reads_teacher_token_ids = True

    @property
    def _lora(self) -> LoRASpec | None:
        return self.spec.student.lora

    # --- label -----------------------------------------------------------------------------------------

    def _student_tokenizer(self) -> PreTrainedTokenizerBase | None:
        """The tokenizer of student.baseModelUri (None without one), loaded once."""
        if not hasattr(self, "_student_tok"):
            from ..storage import resolve_uri

            uri = self.spec.student.base_model_uri
            self._student_tok = load_tokenizer(resolve_uri(uri)) if uri else None
        return self._student_tok

    def _in_student_tokens(self, answers: Sequence[Generated], max_new_tokens: int) -> list[Generated]:
        """A remote teacher's answers (text only) as token ids of the student's tokenizer, at most
        `max_new_tokens`, closed by its EOS when the answer ended before that: sequence-level KD (Kim & Rush,
        EMNLP 2016) trains the student on the teacher's text, which needs no shared vocabulary. Answers that
        come with token ids, and all of them when the student has no base model, are left as they are."""
        tok = self._student_tokenizer()
        if tok is None:
            return list(answers)
        out = []
        for a in answers:
            if a.token_ids is None:
                ids = list(tok(a.text, add_special_tokens=False)["input_ids"])[:max_new_tokens]
                if len(ids) < max_new_tokens and tok.eos_token_id is not None:
                    ids.append(int(tok.eos_token_id))
                a = Generated(text=a.text, token_ids=ids)
            out.append(a)
        return out

    def label_meta(self, teacher: Teacher, rows: Sequence[Row]) -> dict[str, Any]:
        model = getattr(teacher, "model", None)
        if isinstance(model, GenerationModel):
            eos = model.tokenizer.eos_token_id
        else:  # a remote teacher's text is stored in the student's tokens (label)
            tok = self._student_tokenizer()
            eos = tok.eos_token_id if tok is not None else None
        return {"eosTokenId": eos, "maxNewTokens": self.spec.labeling.max_new_tokens,
                "topK": self.spec.labeling.top_k, TOPK_TEMPERATURE: 1.0,
                "confidenceTemperature": self.spec.labeling.temperature}

    def label(self, teacher: Teacher, rows: Sequence[Row], meta: Mapping[str, Any]) -> LabelBatch:
        lab = self.spec.labeling
        t, k = lab.max_new_tokens, lab.top_k
        prompts = [r.text for r in rows]
        model = getattr(teacher, "model", None)
        if isinstance(model, GenerationModel):
            gen = generate(model.lm, model.tokenizer, prompts, t, top_k=k,  # type: ignore[arg-type]
                           max_prompt_tokens=self.spec.training.max_seq_length, chat=model.chat,
                           confidence_temperature=lab.temperature)
            tokens, topk_ids, topk_lp = gen.token_ids, gen.topk_ids, gen.topk_logprobs
            chosen_lp = gen.chosen_logprobs
            eos = model.tokenizer.eos_token_id
        else:
            answers = self._in_student_tokens(teacher.generate(prompts, t, k), t)
            tokens, topk_ids, topk_lp, chosen_lp = _remote_answers(answers, k, lab.temperature)
            eos = meta.get("eosTokenId")
        targets = _pad_targets(tokens, topk_ids, topk_lp, t, k)
        conf, invalid = _confidence(tokens, chosen_lp, eos, t, lab.drop_empty)
        return LabelBatch(targets=targets, confidence=conf, invalid=invalid)

    def read_targets(self, meta: Mapping[str, Any], targets: dict[str, Array], spec_temperature: float
                     ) -> dict[str, Array]:
        """Labels without `topkTemperature` were written by a trainer that stored
        log_softmax(logits / labeling.temperature): times that temperature they are the raw logits up to a
        per-position constant, which token-kl's renormalisation over the top-k cancels. The temperature they
        used is not on disk: the spec's is taken (the label stage ran with it unless the spec was edited
        between the stages)."""
        if TOPK_TEMPERATURE in meta or spec_temperature == 1.0 or meta.get("teacher") != "local model":
            return targets  # remote teachers' log-probabilities were always stored as the API returned them
        log.warning("labels/meta.json has no %s: top-k log-probabilities from an older trainer, stored at "
                    "labeling.temperature %s; reading them at temperature 1", TOPK_TEMPERATURE, spec_temperature)
        lp = targets["topk_logprobs"]
        return {**targets, "topk_logprobs": np.where(lp > MISSING_LOGPROB, lp * spec_temperature, lp)
                .astype(np.float32)}

    def training_examples(
        self, rows: Sequence[Row], targets: Mapping[str, Array]
    ) -> tuple[list[Row], dict[str, Array]]:
        """Each prompt carries the teacher's answer tokens (in `pair`) for teacher forcing."""
        ids = targets["token_ids"]
        out = [Row(r.id, r.text, json.dumps([int(x) for x in ids[i] if x >= 0]), r.label, r.segment)
               for i, r in enumerate(rows)]
        return out, dict(targets)

    # --- models ----------------------------------------------------------------------------------------

    def _wrap(self, lm: nn.Module, tok: PreTrainedTokenizerBase, base: Path | None) -> GenerationModel:
        return GenerationModel(lm, tok, self.spec.training.max_seq_length, self.spec.labeling.max_new_tokens,
                               chat=bool(getattr(tok, "chat_template", None)), base_path=base,
                               merge=self._lora.merge if self._lora else True)

    def build_student(self, meta: Mapping[str, Any], teacher_dir: Path | None) -> TaskModel:
        student = self.spec.student
        if student.architecture is not None:
            arch = student.architecture
            if teacher_dir is None:
                raise ValueError("student.architecture needs a local teacher (teacher.modelUri)")
            if arch.hidden_size is not None:
                raise ValueError("student.architecture.hiddenSize: generation students are cut from the "
                                 "teacher's layers and keep its width; leave hiddenSize empty")
            teacher = load_causal_lm(teacher_dir)
            from .encoder import evenly_spaced

            keep = arch.from_teacher_layers or evenly_spaced(arch.num_layers, int(teacher.config.num_hidden_layers))
            return self._wrap(drop_layers(teacher, keep), load_tokenizer(teacher_dir), None).train()
        assert student.base_model_uri is not None
        from ..storage import resolve_uri

        base = resolve_uri(student.base_model_uri)
        tok = load_tokenizer(base)
        if self._lora is None:
            return self._wrap(load_causal_lm(base), tok, None).train()
        from ..lora import apply_lora, load_4bit

        if self._lora.qlora and any(base.glob("*.gguf")):
            raise ValueError("student.lora.qlora: load the 4-bit base from a Hugging Face directory, not a "
                             "GGUF file (convert it first, e.g. kubestill_trainer.tasks.generation_lm."
                             "convert_to_hf)")
        lm = load_4bit(base) if self._lora.qlora else load_causal_lm(base)
        return self._wrap(apply_lora(lm, self._lora), tok, base).train()

    def load_model(self, path: Path) -> TaskModel:
        return load_generation_model(path, self.spec.training.max_seq_length, self.spec.labeling.max_new_tokens)

    def load_tokenizer(self, path: Path) -> PreTrainedTokenizerBase:
        return load_tokenizer(path)

    # --- train -----------------------------------------------------------------------------------------

    def teacher_outputs(self, targets: Mapping[str, torch.Tensor]) -> ModelOutputs:
        ids = targets["token_ids"].long()
        mask = ids >= 0
        return ModelOutputs(extra={TOPK_IDS: targets["topk_ids"].long(), TOPK_LOGPROBS: targets["topk_logprobs"],
                                   TOKEN_IDS: ids.masked_fill(~mask, -100), RESPONSE_MASK: mask})

    def hard_labels(
        self, rows: Sequence[Row], targets: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
    ) -> torch.Tensor | None:
        ids = targets["token_ids"].long()
        return ids.masked_fill(ids < 0, -100)

    # --- evaluate --------------------------------------------------------------------------------------

    def _generate(self, model: TaskModel, prompts: list[str], batch_size: int) -> list[list[int]]:
        assert isinstance(model, GenerationModel)
        model.eval()
        out: list[list[int]] = []
        for i in range(0, len(prompts), batch_size):
            gen = generate(model.lm, model.tokenizer, prompts[i : i + batch_size],  # type: ignore[arg-type]
                           model.max_new_tokens, max_prompt_tokens=model.max_length, chat=model.chat)
            out.extend(gen.token_ids)
        return out

    def predict(self, model: TaskModel, rows: Sequence[Row], batch_size: int) -> Predictions:
        tokens = self._generate(model, [r.text for r in rows], batch_size)
        t = self.spec.labeling.max_new_tokens
        ids = np.full((len(rows), t), -1, dtype=np.int64)
        for i, row in enumerate(tokens):
            ids[i, : min(len(row), t)] = row[:t]
        return {"token_ids": ids}

    def teacher_predictions(self, targets: Mapping[str, Array]) -> Predictions:
        return {"token_ids": np.asarray(targets["token_ids"])}

    def metrics(
        self, predictions: Predictions, teacher: Predictions, rows: Sequence[Row], meta: Mapping[str, Any]
    ) -> dict[str, float]:
        eos = meta.get("eosTokenId")
        return generation_metrics(predictions["token_ids"], teacher["token_ids"], None if eos is None else int(eos))

    # --- serve -----------------------------------------------------------------------------------------

    def serve(self, model: TaskModel, inputs: Mapping[str, Array]) -> dict[str, Array]:
        assert isinstance(model, GenerationModel)
        prompts = texts_of(inputs["PROMPT"])
        tokens = self._generate(model, prompts, max(1, len(prompts)))
        texts = [str(model.tokenizer.decode(t, skip_special_tokens=True)).strip() for t in tokens]
        return {"TEXT": np.array([t.encode("utf-8") for t in texts], dtype=object).reshape(-1, 1)}
