"""Prometheus queries for canary analysis, through prometheus-api-client.

The library is synchronous (requests), so the handler calls these in a worker thread. No retries: an
unreachable Prometheus must show up as an error in this round (never as success), and the next round comes
one analysis interval later anyway. Firing alerts are cached per Prometheus for a fraction of a second, so a
thousand rollouts evaluating together cost one ALERTS query, not a thousand.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

# Seconds a query may take; an analysis round must finish well within the shortest interval (1 s).
QUERY_TIMEOUT = 2.0
# How long one ALERTS answer is reused across rollouts.
ALERTS_TTL = 0.25

_clients: dict[str, PrometheusConnect] = {}
_alerts: dict[str, tuple[float, list[dict[str, str]] | str]] = {}
_lock = threading.Lock()


class PrometheusError(Exception):
    """Prometheus could not answer (unreachable, timeout, bad query)."""


def _client(url: str) -> PrometheusConnect:
    with _lock:
        found = _clients.get(url)
        if found is None:
            found = PrometheusConnect(
                url=url.rstrip("/"), disable_ssl=False, retry=Retry(total=0), timeout=QUERY_TIMEOUT
            )
            _clients[url] = found
        return found


def _query(url: str, query: str) -> list[Any]:
    try:
        result: list[Any] = _client(url).custom_query(query)
    except Exception as err:  # requests' and the library's errors alike: the round records the reason
        raise PrometheusError(f"{type(err).__name__}: {str(err)[:200]}") from err
    return result


def query_value(url: str, query: str) -> float | None:
    """One number from an instant query; None when there is no data (empty vector or NaN). Several series
    or a non-numeric answer raise PrometheusError (aggregate the query to one series)."""
    series = _query(url, query)
    if not series:
        return None
    if not isinstance(series[0], dict):  # a scalar answer is [timestamp, "value"]
        series = [{"value": series}]
    if len(series) > 1:
        raise PrometheusError(f"query returned {len(series)} series; aggregate it to one (e.g. sum(...))")
    try:
        value = float(series[0]["value"][1])
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise PrometheusError(f"unexpected answer {str(series[0])[:120]}") from err
    return None if math.isnan(value) else value


def firing_alerts(url: str) -> list[dict[str, str]]:
    """Label sets of the alerts firing now (the ALERTS series); raises PrometheusError when unknown."""
    now = time.monotonic()
    with _lock:
        cached = _alerts.get(url)
    if cached is not None and now - cached[0] < ALERTS_TTL:
        answer = cached[1]
    else:
        try:
            answer = [dict(s.get("metric") or {}) for s in _query(url, 'ALERTS{alertstate="firing"}')]
        except PrometheusError as err:
            answer = str(err)
        with _lock:
            _alerts[url] = (now, answer)
    if isinstance(answer, str):
        raise PrometheusError(answer)
    return answer
