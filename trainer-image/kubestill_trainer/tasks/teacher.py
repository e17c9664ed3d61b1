"""The teacher interface used by the label stage (and by evaluate for the teacher's latency).

It lives with the tasks that call it (`DistillTask.label(teacher, ...)`); the implementations in
`kubestill_trainer.teachers` import it from here, and the local teacher runs a task's model, so teachers sit
above tasks in the layers and no task imports a teacher implementation.

Three kinds implement it: a local Hugging Face model directory, a Triton endpoint and an OpenAI-compatible
endpoint. A task calls the capability it needs (`classify`, `embed`, `score`, `generate`); a teacher that
cannot provide it raises `TeacherUnsupported`, which the label stage reports as a configuration error.
All methods take and return whole batches: the label stage batches by `labeling.batchSize`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..outputs import Array


class TeacherUnsupported(Exception):
    """The teacher cannot produce what the task asks for (e.g. hidden states from an HTTP API)."""


class TeacherError(Exception):
    """A teacher call failed (network, bad response); the message says what and where."""


@dataclass
class ClassScores:
    """Class scores for a batch: `logits` [B, C] (log-probabilities when only probabilities are known),
    `labels` the class names in column order, `invalid` a reason per row the teacher answered unusably."""

    logits: Array
    labels: list[str]
    invalid: list[str | None] = field(default_factory=list)


@dataclass
class Generated:
    """One generated answer; top-k token log-probabilities when the teacher exposes them (local, OpenAI)."""

    text: str
    token_ids: list[int] | None = None
    topk_ids: Array | None = None  # [T, k] int64
    topk_logprobs: Array | None = None  # [T, k] float32


class Teacher:
    """Base class; every method raises `TeacherUnsupported` unless a subclass provides it."""

    kind: str = "teacher"

    @property
    def local_dir(self) -> Path | None:
        """A local model directory (students built from the teacher's layers need it), or None."""
        return None

    def classify(self, texts: Sequence[str]) -> ClassScores:
        raise TeacherUnsupported(f"a {self.kind} teacher cannot classify")

    def embed(self, texts: Sequence[str]) -> Array:
        """[B, D] float32 sentence embeddings (as the teacher produces them, not re-normalised)."""
        raise TeacherUnsupported(f"a {self.kind} teacher cannot embed")

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> Array:
        """[B] float32 relevance scores of (query, passage) pairs."""
        raise TeacherUnsupported(f"a {self.kind} teacher cannot score pairs")

    def generate(self, prompts: Sequence[str], max_new_tokens: int, top_k: int) -> list[Generated]:
        raise TeacherUnsupported(f"a {self.kind} teacher cannot generate")

    def close(self) -> None:
        """Release clients or models."""
