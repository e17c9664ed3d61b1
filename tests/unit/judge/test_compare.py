"""The judge's comparisons per task (kubestill.judge.compare): worked examples, and the answers that cannot be
compared, each with the reason it is counted under."""

from __future__ import annotations

import doctest
from types import ModuleType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from kubestill.api import text_metrics
from kubestill.api.text_metrics import lcs_length, rouge_l
from kubestill.api.v1alpha1.common import Task
from kubestill.judge import compare as compare_module
from kubestill.judge.compare import CompareSettings, Sample, compare
from kubestill.judge.metrics import JudgeMetrics
from kubestill.judge.tensors import Incomparable, completion_texts, streamed_completion

SETTINGS = CompareSettings(cosine_threshold=0.9)


def v2(**outputs: tuple[list[int], list[Any]]) -> dict[str, Any]:
    return {"model_name": "m", "outputs": [
        {"name": name, "datatype": "FP32", "shape": shape, "data": data} for name, (shape, data) in outputs.items()]}


def chat(*texts: str) -> dict[str, Any]:
    return {"object": "chat.completion", "choices": [
        {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
        for i, t in enumerate(texts)]}


@pytest.mark.parametrize(
    ("task", "teacher", "student", "expected"),
    [
        (Task.CLASSIFICATION, v2(LABEL=([2, 1], ["a", "b"])), v2(LABEL=([2, 1], ["a", "c"])),
         [Sample(True, "a"), Sample(False, "b")]),
        # No LABEL: argmax of PROBABILITIES, the class index as the label.
        (Task.CLASSIFICATION, v2(PROBABILITIES=([2, 3], [0.1, 0.7, 0.2, 0.5, 0.3, 0.2])),
         v2(PROBABILITIES=([2, 3], [0.2, 0.6, 0.2, 0.1, 0.1, 0.8])), [Sample(True, "1"), Sample(False, "0")]),
        # Nested data reads like flat data.
        (Task.CLASSIFICATION, v2(LABEL=([1, 1], [["x"]])), v2(LABEL=([1, 1], ["x"])), [Sample(True, "x")]),
        # cos([3,4],[4,3]) = 24/25 = 0.96 >= 0.9; cos([1,0],[-1,0]) = -1.
        (Task.EMBEDDING, v2(EMBEDDING=([2, 2], [3, 4, 1, 0])), v2(EMBEDDING=([2, 2], [4, 3, -1, 0])),
         [Sample(True, score=0.96), Sample(False, score=-1.0)]),
        # Same order: tau 1; the student swaps the last two of four: 5 of 6 pairs concordant, tau = (5-1)/6.
        (Task.RERANKING, v2(SCORE=([4, 1], [4, 3, 2, 1])), v2(SCORE=([4, 1], [9, 5, 1, 2])),
         [Sample(True, score=4 / 6)]),
        (Task.RERANKING, v2(SCORE=([3, 1], [1, 2, 3])), v2(SCORE=([3, 1], [3, 2, 1])), [Sample(False, score=-1.0)]),
        # A constant list has no ranking: tau undefined (None), top-1 still compared (argmax is the first).
        (Task.RERANKING, v2(SCORE=([2, 1], [1, 0])), v2(SCORE=([2, 1], [5, 5])), [Sample(True, score=None)]),
        (Task.GENERATION, chat("Paris", "the cat sat on the mat"), chat("Paris ", "The cat is on the mat."),
         [Sample(True, score=1.0), Sample(False, score=5 / 6)]),
        # OpenAI completions (choices[].text) and the v2 TEXT output of kubestill's generation contract.
        (Task.GENERATION, {"choices": [{"index": 0, "text": "a b c d"}]}, v2(TEXT=([1, 1], ["a x c y"])),
         [Sample(False, score=0.5)]),
    ],
)
def test_comparisons(task: Task, teacher: dict[str, Any], student: dict[str, Any], expected: list[Sample]) -> None:
    got = compare(task, teacher, student, SETTINGS)
    assert [(s.agree, s.label) for s in got] == [(e.agree, e.label) for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert (g.score is None) == (e.score is None)
        if e.score is not None:
            assert g.score == pytest.approx(e.score)


@pytest.mark.parametrize(
    ("task", "teacher", "student", "reason"),
    [
        (Task.CLASSIFICATION, {"error": "model not ready"}, v2(LABEL=([1, 1], ["a"])), "malformed"),
        (Task.CLASSIFICATION, v2(LABEL=([1, 1], ["a"])), v2(SCORE=([1, 1], [1.0])), "missing_output"),
        (Task.CLASSIFICATION, v2(LABEL=([2, 1], ["a", "b"])), v2(LABEL=([1, 1], ["a"])), "shape"),
        (Task.CLASSIFICATION, v2(LABEL=([3, 1], ["a", "b"])), v2(LABEL=([1, 1], ["a"])), "shape"),
        (Task.EMBEDDING, v2(EMBEDDING=([1, 2], [1, 0])), v2(EMBEDDING=([1, 3], [1, 0, 0])), "shape"),
        (Task.EMBEDDING, v2(EMBEDDING=([1, 2], [1, 0])), v2(EMBEDDING=([1, 2], [0, 0])), "zero_vector"),
        (Task.EMBEDDING, v2(EMBEDDING=([1, 2], [1, 0])), v2(EMBEDDING=([1, 2], ["x", 0])), "malformed"),
        (Task.RERANKING, v2(SCORE=([1, 1], [0.3])), v2(SCORE=([1, 1], [0.2])), "single_passage"),
        (Task.GENERATION, chat("a"), {"choices": []}, "malformed"),
        (Task.GENERATION, chat("a"), chat("a", "b"), "shape"),
        (Task.GENERATION, chat("a"), {"choices": [{"index": 0, "message": {"content": None}}]}, "malformed"),
        (Task.GENERATION, chat("a"), ["not", "an", "object"], "malformed"),
        (Task.CLASSIFICATION, v2(LABEL=(["x"], ["a"])), v2(LABEL=([1], ["a"])), "malformed"),  # shape of strings
        (Task.RERANKING, v2(SCORE=([2, 0], [])), v2(SCORE=([2, 0], [])), "malformed"),  # empty rows
    ],
)
def test_answers_that_cannot_be_compared(task: Task, teacher: dict[str, Any], student: dict[str, Any],
                                         reason: str) -> None:
    with pytest.raises(Incomparable) as raised:
        compare(task, teacher, student, SETTINGS)
    assert raised.value.reason == reason


def test_identical_answers_always_agree_with_full_scores() -> None:
    body = v2(EMBEDDING=([1, 3], [0.1, -0.2, 0.3]))
    assert compare(Task.EMBEDDING, body, body, SETTINGS)[0].score == pytest.approx(1.0)
    ranking = v2(SCORE=([3, 1], [0.2, 0.9, 0.1]))
    assert compare(Task.RERANKING, ranking, ranking, SETTINGS) == [Sample(True, score=1.0)]


@pytest.mark.parametrize(
    ("reference", "candidate", "score"),
    [
        ("", "", 1.0),
        ("a", "", 0.0),
        ("a b", "c d", 0.0),
        ("Police killed the gunman", "police kill the gunman", 0.75),  # Lin 2004's example: LCS 3 of 4
        ("Police killed the gunman", "the gunman kill police", 0.5),  # Lin's S3: LCS "the gunman", 2 of 4
        ("A B C D", "a b", 2 / 3),  # recall 1/2, precision 1: F1 = 2/3
    ],
)
def test_rouge_l_worked_examples(reference: str, candidate: str, score: float) -> None:
    assert rouge_l(reference, candidate) == pytest.approx(score)


def test_lcs_is_symmetric_and_bounded() -> None:
    a, b = list("XMJYAUZ"), list("MZJAWXU")
    assert lcs_length(a, b) == lcs_length(b, a) == 4  # "MJAU" (CLRS, sec. 15.4)
    assert lcs_length(a, []) == 0


def test_cosine_threshold_is_validated() -> None:
    with pytest.raises(ValueError, match="cosine_threshold"):
        CompareSettings(cosine_threshold=1.5)


@pytest.mark.parametrize("module", [compare_module, text_metrics], ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0


def test_metrics_observe_scores_per_task_and_bound_classes() -> None:
    registry = CollectorRegistry()
    metrics = JudgeMetrics(Task.EMBEDDING, registry)
    metrics.observe("eu", [Sample(True, score=0.96), Sample(False, score=0.5)])
    assert registry.get_sample_value("kubestill_judge_cosine_count", {"task": "embedding", "segment": "eu"}) == 2
    assert registry.get_sample_value("kubestill_judge_cosine_bucket",
                                     {"task": "embedding", "segment": "eu", "le": "0.95"}) == 1
    assert registry.get_sample_value("kubestill_judge_samples_total",
                                     {"task": "embedding", "segment": "eu", "result": "disagree"}) == 1
    classes = JudgeMetrics(Task.CLASSIFICATION, CollectorRegistry(), max_classes=1)
    classes.observe("", [Sample(True, "a"), Sample(False, "b")])
    assert classes.registry.get_sample_value("kubestill_judge_class_samples_total",
                                             {"segment": "", "label": "other", "result": "disagree"}) == 1


@pytest.mark.parametrize(
    ("raw", "texts"),
    [
        # completions streams carry `text`; two choices interleave; comments and event names are skipped.
        (": keep-alive\nevent: message\ndata: {\"choices\": [{\"index\": 1, \"text\": \"b\"}]}\n\n"
         "data: {\"choices\": [{\"index\": 0, \"text\": \"a\"}]}\n\n"
         "data: {\"choices\": [{\"index\": 1, \"text\": \"c\", \"finish_reason\": \"stop\"}]}\n\ndata: [DONE]\n\n",
         ["a", "bc"]),
        # nothing after [DONE] counts; a usage-only event (no choices) adds nothing.
        ("data: {\"choices\": [{\"index\": 0, \"delta\": {\"content\": \"x\"}}]}\n\ndata: {\"usage\": {}}\n\n"
         "data: [DONE]\n\ndata: {\"choices\": [{\"index\": 0, \"delta\": {\"content\": \"y\"}}]}\n\n", ["x"]),
    ],
)
def test_streamed_completions_add_up(raw: str, texts: list[str]) -> None:
    assert completion_texts(streamed_completion(raw)) == texts


@pytest.mark.parametrize("raw", ["data: {oops\n\n", "data: [DONE]\n\n", ""])
def test_unreadable_streams_are_incomparable(raw: str) -> None:
    with pytest.raises(Incomparable, match="malformed"):
        streamed_completion(raw)


def test_each_segment_has_both_results_at_zero_from_its_first_sample_on() -> None:
    """A series the canary's increase() has seen once counts nothing: both results exist before they count."""
    registry = CollectorRegistry()
    metrics = JudgeMetrics(Task.EMBEDDING, registry)

    def value(segment: str, result: str) -> float | None:
        return registry.get_sample_value("kubestill_judge_samples_total",
                                         {"task": "embedding", "segment": segment, "result": result})

    assert (value("", "agree"), value("", "disagree"), value("eu", "agree")) == (0, 0, None)
    assert registry.get_sample_value("kubestill_judge_cosine_count", {"task": "embedding", "segment": ""}) == 0
    metrics.observe("eu", [Sample(True, score=0.99)])
    assert (value("eu", "agree"), value("eu", "disagree")) == (1, 0)
