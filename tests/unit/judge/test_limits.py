"""The judge's bounds (kubestill.judge.limits, settings, request): the rate over a long run, the sampled share,
the label cardinality, the segment sources, and the settings it refuses."""

from __future__ import annotations

import doctest
import math
import random
import re
from types import ModuleType
from typing import Any

import pytest

from kubestill.api import judge as judge_settings
from kubestill.api.judge import JudgeSettings
from kubestill.api.v1alpha1.common import Task
from kubestill.judge import limits, request
from kubestill.judge.limits import BoundedLabels, Sampler, TokenBucket
from kubestill.judge.request import segment_of


@pytest.mark.parametrize(("rate", "offered"), [(5.0, 50.0), (10.0, 10.0), (10.0, 3.0), (0.5, 20.0)])
def test_bucket_admits_at_most_rate_times_time_plus_burst(rate: float, offered: float) -> None:
    t = [0.0]
    bucket = TokenBucket(rate=rate, burst=max(1.0, rate), now=lambda: t[0])
    admitted, duration = 0, 60.0
    for i in range(int(offered * duration)):
        t[0] = i / offered
        admitted += bucket.take()
    assert admitted <= rate * duration + max(1.0, rate)
    # Below the rate everything passes; above it the bucket passes the rate (it does not starve either).
    assert admitted >= min(offered, rate) * duration - 1


def test_sampler_keeps_its_share_within_sampling_error() -> None:
    sampler = Sampler(percent=10.0, rng=random.Random(3))
    kept = sum(sampler.keep() for _ in range(10_000))
    assert abs(kept - 1000) <= 3 * math.sqrt(10_000 * 0.1 * 0.9)
    assert all(Sampler(100.0).keep() for _ in range(100))


def test_bounded_labels_keep_the_first_values() -> None:
    labels = BoundedLabels(limit=3)
    assert [labels.get(str(i % 5)) for i in range(10)] == ["0", "1", "2", "other", "other"] * 2


@pytest.mark.parametrize(
    ("headers", "body", "segment"),
    [
        ({"x-kubestill-segment": "eu"}, {"parameters": {"segment": "us"}}, "eu"),  # the header wins
        ({}, {"parameters": {"segment": "us"}}, "us"),
        ({}, {"metadata": {"segment": "b2b"}}, "b2b"),
        ({}, {"segment": 7}, "7"),
        ({}, {"parameters": {"segment": ["not", "a", "name"]}}, ""),
        ({}, None, ""),
        ({"X-Kubestill-Segment": ""}, {}, ""),
    ],
)
def test_segment_sources(headers: dict[str, str], body: Any, segment: str) -> None:
    assert segment_of(headers, body, "X-Kubestill-Segment", "segment") == segment


@pytest.mark.parametrize(
    ("override", "name"),
    [
        ({"baseline": "teacher:8000"}, "baseline"),
        ({"candidate": "ftp://x"}, "candidate"),
        ({"sample": 0.0}, "sample"),
        ({"sample": 101.0}, "sample"),
        ({"max_rps": 0.0}, "max_rps"),
        ({"timeout": -1.0}, "timeout"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_segments": 0}, "max_segments"),
        ({"cosine_threshold": 1.1}, "cosine_threshold"),
    ],
)
def test_settings_refuse_out_of_range_values_naming_them(override: dict[str, Any], name: str) -> None:
    values: dict[str, Any] = {"task": Task.EMBEDDING, "baseline": "http://t:8000", "candidate": "http://s:8000"}
    with pytest.raises(ValueError, match=name):
        JudgeSettings(**(values | override))


@pytest.mark.parametrize("module", [limits, request, judge_settings], ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0


def test_settings_travel_through_the_environment_unchanged() -> None:
    settings = JudgeSettings(Task.RERANKING, "http://teacher-triton:8000", "http://student-triton:8000",
                             sample=12.5, max_rps=3.0, timeout=2.0, max_in_flight=8, segment_header="",
                             segment_field="tenant", max_segments=5, cosine_threshold=0.8)
    assert JudgeSettings.from_env(settings.to_env()) == settings
    assert JudgeSettings.from_env({"KUBESTILL_JUDGE_TASK": "generation", "KUBESTILL_JUDGE_BASELINE": "http://t",
                                   "KUBESTILL_JUDGE_CANDIDATE": "http://s"}).max_rps == 10.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "missing KUBESTILL_JUDGE_TASK, KUBESTILL_JUDGE_BASELINE, KUBESTILL_JUDGE_CANDIDATE"),
        ({"KUBESTILL_JUDGE_TASK": "ner"}, "KUBESTILL_JUDGE_TASK='ner': one of classification"),
        ({"KUBESTILL_JUDGE_MAX_IN_FLIGHT": "1.5"}, "KUBESTILL_JUDGE_MAX_IN_FLIGHT='1.5'"),
    ],
)
def test_settings_from_env_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        JudgeSettings.from_env(env)
