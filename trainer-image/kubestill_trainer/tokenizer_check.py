"""Does a `student.baseModelUri` student read the teacher's tokens as the teacher meant them?

Two things in a job depend on the tokenizers agreeing, and both fail silently (or with a bare IndexError)
when they do not:
- generation stores the teacher's token ids (its answers, its top-k next tokens) and the student is trained
  on them as if they were its own ids;
- hidden-mse and attention-mse (any task) compare the two models position by position, which only means
  something when both split the text into the same tokens.

"Same tokenizer", as checked here before any model is loaded (label and train stages):
1. every teacher token has the same id in the student's vocabulary (a student may have extra tokens of its
   own at new ids: the teacher never emits them);
2. the end-of-sequence token is the same id (generation stops and is scored on it); padding is not
   compared, it is masked everywhere;
3. a sample of the job's own texts tokenizes to the same ids (catches a different normaliser, merges or
   added special tokens with an identical vocabulary);
4. generation: the student's output layer has a row for every teacher token.
Students cut from the teacher (`student.architecture`) use the teacher's tokenizer object itself, so they
are not checked; other tasks with only output-level losses (logits, embeddings, scores) compare no tokens
and may use any tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from kubestill.api.v1alpha1.distillationjob import DistillationJobSpec

from .storage import resolve_uri
from .tasks.base import DistillTask, Row

POSITIONAL = frozenset({"hidden_states", "attentions"})  # teacher internals compared token by token
SAMPLE = 5  # differing tokens shown in a message
PROBE_ROWS = 32


def _show(token: str) -> str:
    return repr(token)


def tokenizer_differences(teacher: PreTrainedTokenizerBase, student: PreTrainedTokenizerBase,
                          probe: Sequence[str] = (), student_output_rows: int | None = None) -> list[str]:
    """What differs, one phrase per rule broken (empty when the student reads the teacher's ids as meant)."""
    problems: list[str] = []
    t_vocab = teacher.get_vocab()
    vocabulary = _vocabulary_difference(t_vocab, student.get_vocab())
    if vocabulary:
        problems.append(vocabulary)
    if teacher.eos_token_id != student.eos_token_id:
        problems.append(f"end-of-sequence token: teacher {teacher.eos_token!r} (id {teacher.eos_token_id}), "
                        f"student {student.eos_token!r} (id {student.eos_token_id})")
    if not problems:
        tokenization = _probe_difference(teacher, student, probe)
        if tokenization:
            problems.append(tokenization)
    if student_output_rows is not None and student_output_rows < len(t_vocab):
        problems.append(f"output layer: the student has {student_output_rows} rows for the teacher's "
                        f"{len(t_vocab)} tokens")
    return problems


def _vocabulary_difference(t_vocab: dict[str, int], s_vocab: dict[str, int]) -> str | None:
    """Rule 1: teacher tokens at another id (or missing) in the student, with up to SAMPLE examples."""
    moved = sorted(((i, tok) for tok, i in t_vocab.items() if s_vocab.get(tok) != i))
    if not moved:
        return None
    s_tokens = {i: tok for tok, i in s_vocab.items()}
    examples = []
    for i, tok in moved[:: max(1, len(moved) // SAMPLE)][:SAMPLE]:  # spread over the ids, not just bytes
        s_id = s_vocab.get(tok)
        there = f"student id {s_id}" if s_id is not None else "not in the student's vocabulary"
        examples.append(f"{_show(tok)}: teacher id {i}, {there}"
                        + (f" (student id {i} is {_show(s_tokens[i])})" if i in s_tokens else ""))
    return (f"vocabulary: teacher {len(t_vocab)} tokens, student {len(s_vocab)}; {len(moved)} "
            f"teacher tokens map differently, e.g. {'; '.join(examples)}")


def _probe_difference(teacher: PreTrainedTokenizerBase, student: PreTrainedTokenizerBase, probe: Sequence[str]
                      ) -> str | None:
    """Rule 3: the first probe text the two tokenize differently."""
    for text in probe:
        t_ids, s_ids = teacher(text)["input_ids"], student(text)["input_ids"]
        if t_ids != s_ids:
            return f"tokenization: {text[:60]!r} is {t_ids[:12]} for the teacher, {s_ids[:12]} for the student"
    return None


def _output_rows(path: Path) -> int | None:
    """The vocab_size of a causal LM's config (its output rows), read without loading weights."""
    from transformers import AutoConfig

    from .tasks.generation_lm import gguf_file

    gguf = gguf_file(path)
    auto: Any = AutoConfig  # transformers' auto classes are untyped
    config = auto.from_pretrained(str(path), gguf_file=gguf) if gguf else auto.from_pretrained(str(path))
    config = getattr(config, "text_config", None) or config
    rows = getattr(config, "vocab_size", None)
    return int(rows) if rows else None


def check_student_tokenizer(spec: DistillationJobSpec, task: DistillTask, rows: Sequence[Row]) -> None:
    """Raise ValueError naming student.baseModelUri when its tokenizer cannot stand in for the teacher's
    here (see the module docstring). Loads tokenizers and configs only: call it before any model."""
    from .losses import loss_class

    positional = [str(t.name) for t in spec.loss.terms
                  if t.weight > 0 and loss_class(t.name).needs_teacher & POSITIONAL]
    reads_ids = task.reads_teacher_token_ids
    base_uri = spec.student.base_model_uri
    if base_uri is None or spec.teacher.model_uri is None or not (reads_ids or positional):
        # An architecture student has the teacher's tokenizer; a remote teacher's tokens are not local
        # (no remote teacher returns generation token ids today, and hidden states need a local one).
        return
    teacher_dir, student_dir = resolve_uri(spec.teacher.model_uri), resolve_uri(base_uri)
    teacher_tok, student_tok = task.load_tokenizer(teacher_dir), task.load_tokenizer(student_dir)
    probe = [t for r in rows[:PROBE_ROWS] for t in (r.text, r.pair) if t]
    problems = tokenizer_differences(teacher_tok, student_tok, probe,
                                     _output_rows(student_dir) if reads_ids else None)
    if problems:
        raise ValueError(_mismatch_message(spec, task, positional, problems))


def _mismatch_message(spec: DistillationJobSpec, task: DistillTask, positional: list[str], problems: list[str]
                      ) -> str:
    """Why the tokenizers must agree for this job, what differs, and the ways out."""
    reads_ids = task.reads_teacher_token_ids
    why = []
    if reads_ids:
        why.append(f"{task.task} trains the student on the teacher's token ids (its answers and top-k)")
    if positional:
        why.append(f"{' and '.join(positional)} compare the two models token by token")
    return (
        f"student.baseModelUri {spec.student.base_model_uri}: its tokenizer is not the teacher's "
        f"({spec.teacher.model_uri}), and {' and '.join(why)}: {'; '.join(problems)}. Start from a model of the "
        "teacher's tokenizer family, or cut the student from the teacher (student.architecture)"
        + (", or drop the token-by-token losses" if positional and not reads_ids else "") + ".")
