"""The teacher's answer against the student's, per task (issue #17). Pure: parsed JSON bodies in, one Sample per
compared item out, or Incomparable when the answers cannot be compared.

- classification: top-1 agreement per row, keyed by the teacher's class (LABEL; argmax of PROBABILITIES when a
  server sends no LABEL);
- embedding: cosine of the student's vector to the teacher's per row; agreement = cosine >= threshold;
- reranking: one request is one query's passages (a batch of QUERY/PASSAGE rows, one SCORE each); agreement =
  the same top passage, with Kendall's tau-b between the two score lists (scipy.stats.kendalltau);
- generation: exact match (surrounding whitespace ignored) per choice, with ROUGE-L F1
  (kubestill.api.text_metrics.rouge_l).

The tensors are kubestill.api.triton.TENSORS' (what every served student answers with).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from kubestill.api.text_metrics import rouge_l
from kubestill.api.v1alpha1.common import Task

from .tensors import Incomparable, Tensor, completion_texts, numbers, output, v2_outputs

Body = Mapping[str, Any]


@dataclass(frozen=True)
class Sample:
    """One compared item: whether the two agree, the teacher's class (classification) and the task's score
    (embedding: cosine; reranking: Kendall's tau-b, None when undefined; generation: ROUGE-L F1)."""

    agree: bool
    label: str | None = None
    score: float | None = None


@dataclass(frozen=True)
class CompareSettings:
    """How answers are judged. `cosine_threshold` in [-1, 1]: embedding agreement."""

    cosine_threshold: float = 0.9

    def __post_init__(self) -> None:
        if not -1.0 <= self.cosine_threshold <= 1.0:
            raise ValueError(f"cosine_threshold must be in [-1, 1], got {self.cosine_threshold}")


def _paired_rows(teacher: Tensor, student: Tensor) -> list[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    t_rows, s_rows = teacher.rows(), student.rows()
    if len(t_rows) != len(s_rows):
        raise Incomparable("shape", f"{teacher.name}: {len(t_rows)} rows from the teacher, {len(s_rows)} from "
                                    "the student")
    return list(zip(t_rows, s_rows, strict=True))


def _labels(body: Body) -> list[str]:
    tensors = v2_outputs(body)
    if "LABEL" in tensors:
        return [_decode(row[0]) for row in tensors["LABEL"].rows()]
    probabilities = output(tensors, "PROBABILITIES")
    return [str(int(np.argmax(numbers(row, "PROBABILITIES")))) for row in probabilities.rows()]


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def classification(teacher: Body, student: Body, settings: CompareSettings) -> list[Sample]:
    """Top-1 agreement per row, labelled with the teacher's class.

    >>> out = lambda *labels: {"outputs": [{"name": "LABEL", "shape": [len(labels), 1], "data": list(labels)}]}
    >>> classification(out("sport", "tech"), out("sport", "business"), CompareSettings())
    [Sample(agree=True, label='sport', score=None), Sample(agree=False, label='tech', score=None)]
    """
    t_labels, s_labels = _labels(teacher), _labels(student)
    if len(t_labels) != len(s_labels):
        raise Incomparable("shape", f"{len(t_labels)} labels from the teacher, {len(s_labels)} from the student")
    return [Sample(t == s, label=t) for t, s in zip(t_labels, s_labels, strict=True)]


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity of two vectors of the same length; Incomparable("shape") or ("zero_vector")."""
    if len(a) != len(b):
        raise Incomparable("shape", f"EMBEDDING: dimension {len(a)} from the teacher, {len(b)} from the student")
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = float(np.linalg.norm(va) * np.linalg.norm(vb))
    if norms == 0.0 or not math.isfinite(norms):
        raise Incomparable("zero_vector", "EMBEDDING: a zero or non-finite vector has no direction")
    return float(np.dot(va, vb) / norms)


def embedding(teacher: Body, student: Body, settings: CompareSettings) -> list[Sample]:
    """Cosine to the teacher's vector per row; agreement when it is at least `cosine_threshold`.

    >>> out = lambda *rows: {"outputs": [{"name": "EMBEDDING", "shape": [len(rows), 2], "data": sum(rows, [])}]}
    >>> embedding(out([1, 0], [0, 1]), out([1, 1], [0, 2]), CompareSettings(cosine_threshold=0.9))
    [Sample(agree=False, label=None, score=0.7071067811865475), Sample(agree=True, label=None, score=1.0)]
    """
    pairs = _paired_rows(output(v2_outputs(teacher), "EMBEDDING"), output(v2_outputs(student), "EMBEDDING"))
    samples = []
    for t_row, s_row in pairs:
        c = cosine(numbers(t_row, "EMBEDDING"), numbers(s_row, "EMBEDDING"))
        samples.append(Sample(c >= settings.cosine_threshold, score=c))
    return samples


def reranking(teacher: Body, student: Body, settings: CompareSettings) -> list[Sample]:
    """One Sample per request: the same top passage or not, and Kendall's tau-b of the two score lists (None
    when one list is constant). Fewer than two passages rank nothing: Incomparable("single_passage").

    >>> out = lambda *s: {"outputs": [{"name": "SCORE", "shape": [len(s), 1], "data": list(s)}]}
    >>> reranking(out(0.9, 0.1, 0.5), out(2.0, -1.0, 0.3), CompareSettings())
    [Sample(agree=True, label=None, score=1.0)]
    >>> reranking(out(0.9, 0.1, 0.5), out(0.2, 0.1, 3.0), CompareSettings())[0].agree
    False
    """
    pairs = _paired_rows(output(v2_outputs(teacher), "SCORE"), output(v2_outputs(student), "SCORE"))
    if len(pairs) < 2:
        raise Incomparable("single_passage", "a ranking needs at least two passages")
    t_scores = [numbers(t, "SCORE")[0] for t, _ in pairs]
    s_scores = [numbers(s, "SCORE")[0] for _, s in pairs]
    tau = float(stats.kendalltau(t_scores, s_scores).statistic)
    top_agrees = int(np.argmax(t_scores)) == int(np.argmax(s_scores))
    return [Sample(top_agrees, score=tau if math.isfinite(tau) else None)]


def generation(teacher: Body, student: Body, settings: CompareSettings) -> list[Sample]:
    """Exact match per choice (whitespace around the text ignored), scored by ROUGE-L F1 to the teacher's text.

    >>> chat = lambda text: {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
    >>> generation(chat("Paris."), chat(" Paris.\\n"), CompareSettings())
    [Sample(agree=True, label=None, score=1.0)]
    """
    t_texts, s_texts = completion_texts(teacher), completion_texts(student)
    if len(t_texts) != len(s_texts):
        raise Incomparable("shape", f"{len(t_texts)} choices from the teacher, {len(s_texts)} from the student")
    return [Sample(t.strip() == s.strip(), score=rouge_l(t, s)) for t, s in zip(t_texts, s_texts, strict=True)]


COMPARISONS: dict[Task, Callable[[Body, Body, CompareSettings], list[Sample]]] = {
    Task.CLASSIFICATION: classification,
    Task.EMBEDDING: embedding,
    Task.RERANKING: reranking,
    Task.GENERATION: generation,
}


def compare(task: Task, teacher: Any, student: Any, settings: CompareSettings) -> list[Sample]:
    """The task's comparison of the teacher's (baseline's) answer with the student's (candidate's): parsed JSON
    of any shape. Raises Incomparable, never anything else for a body it cannot read."""
    if not isinstance(teacher, Mapping) or not isinstance(student, Mapping):
        raise Incomparable("malformed", "an answer is not a JSON object")
    try:
        return COMPARISONS[task](teacher, student, settings)
    except Incomparable:
        raise
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
        # Foreign JSON can be wrong in more ways than the readers name (a shape of strings, an empty row); it is
        # still an answer that cannot be compared, not a crash of the judge.
        raise Incomparable("malformed", f"{type(exc).__name__}: {exc}") from exc
