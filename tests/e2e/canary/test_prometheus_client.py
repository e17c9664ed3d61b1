"""clients/prometheus against Debian's real Prometheus: numbers, no data, NaN, several series, unreachable."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kubestill.clients.prometheus import Prometheus, PrometheusError
from kubestill.dev.controlplane import free_port
from kubestill.dev.prometheus import PrometheusProcess, start_prometheus

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusProcess]:
    rules = {"groups": [{"name": "t", "interval": "1s", "rules": [{"alert": "AlwaysOn", "expr": "vector(1)",
                                                                   "labels": {"service": "student"}}]}]}
    with start_prometheus({}, rules, workdir=Path(tmp_path_factory.mktemp("prom"))) as running:
        yield running


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("vector(0.25)", 0.25),
        ("scalar(vector(3))", 3.0),
        ('sum(up{job="nothing"})', None),  # empty vector: no data
        ("vector(0) / vector(0)", None),  # NaN (0/0, e.g. a ratio with no traffic): no data
    ],
)
def test_query_value(prom: PrometheusProcess, query: str, expected: float | None) -> None:
    assert Prometheus().query_value(prom.url, query) == expected


def test_queries_pinned_to_one_time_are_evaluated_there(prom: PrometheusProcess) -> None:
    """A round's queries share one evaluation time (a numerator and its denominator asked separately must not
    straddle a scrape): `time()` answers the pinned instant, to the millisecond, not Prometheus's now."""
    at = datetime.now(UTC) - timedelta(seconds=90)
    client = Prometheus()
    assert client.query_value(prom.url, "time()", at) == pytest.approx(at.timestamp(), abs=1e-3)
    assert client.query_value(prom.url, "time()", at) == client.query_value(prom.url, "time()", at)


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ('label_replace(vector(1), "a", "x", "", "") or label_replace(vector(2), "a", "y", "", "")', "2 series"),
        ("sum(", "HTTP Status Code 400"),
    ],
)
def test_query_errors(prom: PrometheusProcess, query: str, words: str) -> None:
    with pytest.raises(PrometheusError, match=words):
        Prometheus().query_value(prom.url, query)


def test_unreachable_is_an_error_not_no_data() -> None:
    with pytest.raises(PrometheusError, match="Connection"):
        Prometheus().query_value(f"http://127.0.0.1:{free_port()}", "vector(1)")


def test_firing_alerts(prom: PrometheusProcess) -> None:
    import time

    client = Prometheus(alerts_ttl=0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        firing = client.firing_alerts(prom.url)
        if firing:
            break
        time.sleep(0.3)
    assert any(a["alertname"] == "AlwaysOn" and a["service"] == "student" for a in firing)


def test_firing_alerts_answer_is_reused_within_its_ttl() -> None:
    """A thousand rollouts evaluating together cost one ALERTS query: the answer (here an error) is reused."""
    url = f"http://127.0.0.1:{free_port()}"
    client = Prometheus(alerts_ttl=60)
    with pytest.raises(PrometheusError) as first:
        client.firing_alerts(url)
    with pytest.raises(PrometheusError) as second:
        client.firing_alerts(url)
    assert str(first.value) == str(second.value)
    assert len(client._alerts) == 1
