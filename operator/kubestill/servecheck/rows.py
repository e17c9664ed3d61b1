"""The rows a serving check sends: one tuple of strings per request, one string per input tensor of the task
(kubestill.api.triton.TENSORS). Pure.

Without spec.servingCheck.texts the check cycles through SAMPLE_TEXTS: short English sentences of the lengths
the built-in demos classify and embed (6 to 20 words). They measure serving overhead and a typical short
input; a model fed long documents should be checked with texts like them, since latency grows with length.
"""

from __future__ import annotations

from collections.abc import Sequence

from kubestill.api.triton import TENSORS
from kubestill.api.v1alpha1.common import Task

SAMPLE_TEXTS: tuple[str, ...] = (
    "The delivery arrived two days late and the box was damaged.",
    "I love how quickly the support team answered my question.",
    "What time does the store open on Sunday mornings?",
    "The new update made the app slower on my phone.",
    "Great value for the price, I would buy it again.",
    "How do I reset my password if I no longer have the old email?",
    "The hotel room was clean but the street was very noisy at night.",
    "Shares of the company rose after its quarterly earnings beat expectations.",
    "The museum extends its opening hours during the summer festival.",
    "Can you recommend a vegetarian restaurant near the train station?",
    "The battery lasts a full day even with heavy use.",
    "Heavy rain is expected across the region for the rest of the week.",
    "The film was too long, but the soundtrack was wonderful.",
    "Our team won the match in the final minute of extra time.",
    "Please cancel my subscription at the end of this billing period.",
    "Scientists found water ice in a crater near the lunar south pole.",
)


def rows(task: Task | str, texts: Sequence[str] = ()) -> list[tuple[str, ...]]:
    """One row per text, in the order of the task's input tensors. Reranking pairs each text (the query) with
    the next one, wrapping around (its passage): a score is computed for every pair, relevant or not.

    >>> rows("embedding", ["a", "b"])
    [('a',), ('b',)]
    >>> rows("reranking", ["q1", "q2", "q3"])
    [('q1', 'q2'), ('q2', 'q3'), ('q3', 'q1')]
    >>> len(rows("classification")) == len(SAMPLE_TEXTS)
    True
    """
    source = list(texts) or list(SAMPLE_TEXTS)
    width = len(TENSORS[Task(task)].inputs)
    return [tuple(source[(i + k) % len(source)] for k in range(width)) for i in range(len(source))]


def input_names(task: Task | str) -> tuple[str, ...]:
    """The task's input tensor names, in the order of `rows`' strings.

    >>> input_names("reranking")
    ('QUERY', 'PASSAGE')
    """
    return tuple(t.name for t in TENSORS[Task(task)].inputs)
