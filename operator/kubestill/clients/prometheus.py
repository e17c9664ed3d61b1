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
from datetime import datetime
from typing import Any

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

# Seconds a query may take; an analysis round must finish well within the shortest interval (1 s).
QUERY_TIMEOUT = 2.0
# How long one ALERTS answer is reused across rollouts.
ALERTS_TTL = 0.25

class PrometheusError(Exception):
    """Prometheus could not answer (unreachable, timeout, bad query)."""


class Prometheus:
    """Instant queries against any number of Prometheus servers (by URL), thread-safe: the canary's analysis
    rounds call it from a worker pool. One per operator (built at start-up), holding a client per URL and the
    firing alerts of each for ALERTS_TTL seconds."""

    def __init__(self, alerts_ttl: float = ALERTS_TTL) -> None:
        self.alerts_ttl = alerts_ttl
        self._clients: dict[str, PrometheusConnect] = {}
        self._alerts: dict[str, tuple[float, list[dict[str, str]] | str]] = {}
        self._lock = threading.Lock()

    def _client(self, url: str) -> PrometheusConnect:
        with self._lock:
            found = self._clients.get(url)
            if found is None:
                found = PrometheusConnect(
                    url=url.rstrip("/"), disable_ssl=False, retry=Retry(total=0), timeout=QUERY_TIMEOUT
                )
                self._clients[url] = found
            return found

    def _query(self, url: str, query: str, at: datetime | None = None) -> list[Any]:
        params = {"time": f"{at.timestamp():.3f}"} if at is not None else None
        try:
            result: list[Any] = self._client(url).custom_query(query, params=params)
        except Exception as err:  # requests' and the library's errors alike: the round records the reason
            raise PrometheusError(f"{type(err).__name__}: {str(err)[:200]}") from err
        return result

    def query_value(self, url: str, query: str, at: datetime | None = None) -> float | None:
        """One number from an instant query evaluated at `at` (default: Prometheus's now); None when there is no
        data (empty vector or NaN). Several series or a non-numeric answer raise PrometheusError (aggregate the
        query to one series). Queries whose answers are compared with each other (a numerator and its
        denominator asked separately) must share one `at`: unpinned, a scrape landing between them moves one
        and not the other."""
        series = self._query(url, query, at)
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

    def firing_alerts(self, url: str) -> list[dict[str, str]]:
        """Label sets of the alerts firing now (the ALERTS series); raises PrometheusError when unknown. An
        answer (or the error) is reused for `alerts_ttl` seconds."""
        now = time.monotonic()
        with self._lock:
            cached = self._alerts.get(url)
        if cached is not None and now - cached[0] < self.alerts_ttl:
            answer = cached[1]
        else:
            try:
                answer = [dict(s.get("metric") or {}) for s in self._query(url, 'ALERTS{alertstate="firing"}')]
            except PrometheusError as err:
                answer = str(err)
            with self._lock:
                self._alerts[url] = (now, answer)
        if isinstance(answer, str):
            raise PrometheusError(answer)
        return answer
