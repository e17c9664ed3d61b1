"""The serving check's command for real: `kubestill servecheck` (what the operator's Job runs) loads a real
tritonserver serving the e2e `echo` model over HTTP, writes its result to the termination log, and the operator's
decision reads that very text. The whole path (the operator's check Job of a Ready StudentModel, a Pod of the
operator image reaching the model through its Service, the status and condition following) runs on the real node:
tests/realnode/test_studentmodel_checks.py and test_serving.py.

The echo model is told to sleep 25 ms per execution; one instance without dynamic batching runs one request at
a time, so the served latency cannot be under 25 ms and throughput cannot exceed 1000 / 25 = 40 requests/s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kubestill.api.names import TERMINATION_LOG_ENV
from kubestill.api.served import ServeCheckRequest, ServeCheckResult, parse_serve_check_result
from kubestill.api.v1alpha1.studentmodel import ServingCheckSpec
from kubestill.dev.triton import TritonProcess, start_tritonserver
from kubestill.logic.jobs import JobView
from kubestill.logic.served import ServedInputs, decide_served

from .canary.tritons import make_repository

pytestmark = pytest.mark.e2e
SLOW_MS = 25.0


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TritonProcess, Path]]:
    root = tmp_path_factory.mktemp("servecheck")
    control = root / "control"
    with start_tritonserver(make_repository(root, control), root / "triton.log") as triton:
        yield triton, control


def servecheck(request: ServeCheckRequest, log: Path) -> tuple[int, ServeCheckResult | None]:
    """Run `kubestill servecheck` as the Job's container does: the request in its variable, the result in the
    termination log."""
    env = {**os.environ, **request.to_env(), TERMINATION_LOG_ENV: str(log)}
    argv = [sys.executable, "-c", "import sys; from kubestill.cli import main; sys.exit(main())", "servecheck"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    return done.returncode, parse_serve_check_result(log.read_text()) if log.exists() else None


def request(url: str, **over: object) -> ServeCheckRequest:
    base = {"url": url, "model_name": "echo", "task": "classification", "concurrency": 4, "duration_seconds": 3.0,
            "warmup_seconds": 0.5}
    return ServeCheckRequest.model_validate({**base, **over})


def finished(message: str, spec: ServingCheckSpec) -> tuple[str, str, float | None]:
    job = JobView("sm-served-k", "Succeeded", 1, "2026-01-01T00:00:00Z", "2026-01-01T00:00:05Z")
    d = decide_served(spec, ServedInputs(1, True, job, message, {"latencyP95Ms": 0.7}), datetime.now(UTC))
    assert d.condition is not None
    return str(d.condition.status), d.condition.reason, d.served.p95_ms if d.served else None


def test_measures_a_slow_model_and_gates_its_p95(echo: tuple[TritonProcess, Path], tmp_path: Path) -> None:
    triton, control = echo
    control.write_text(f"slow:{SLOW_MS:g}")
    code, result = servecheck(request(triton.http_url), tmp_path / "termination-log")
    assert code == 0 and result is not None and result.ok, result
    assert result.errors == 0 and result.requests > 10
    assert result.p50_ms >= SLOW_MS <= result.p95_ms <= result.p99_ms
    assert result.throughput_rps <= 1000.0 / SLOW_MS * 1.1  # one request at a time, each >= 25 ms
    message = (tmp_path / "termination-log").read_text()
    assert len(message.encode()) < 4096
    assert finished(message, ServingCheckSpec(max_p95_ms=SLOW_MS / 2)) == ("False", "AboveMaxP95", result.p95_ms)
    assert finished(message, ServingCheckSpec(max_p95_ms=60_000)) == ("True", "WithinMaxP95", result.p95_ms)
    assert finished(message, ServingCheckSpec()) == ("True", "Measured", result.p95_ms)


def test_a_model_that_fails_every_request_is_a_failed_check(echo: tuple[TritonProcess, Path],
                                                              tmp_path: Path) -> None:
    triton, control = echo
    control.write_text("fail")
    try:
        code, result = servecheck(request(triton.http_url, duration_seconds=1.0, warmup_seconds=0),
                                  tmp_path / "termination-log")
    finally:
        control.write_text("ok")
    assert code == 1 and result is not None and not result.ok
    assert "requests failed" in result.message and "injected failure" in result.message
    status, reason, _ = finished((tmp_path / "termination-log").read_text(), ServingCheckSpec(max_p95_ms=100))
    assert (status, reason) == ("False", "ServingCheckFailed")


def test_nothing_listening_is_reported_not_hung(tmp_path: Path) -> None:
    from kubestill.dev.triton import free_port

    code, result = servecheck(request(f"http://127.0.0.1:{free_port()}", ready_timeout_seconds=2.0),
                              tmp_path / "termination-log")
    assert code == 1 and result is not None and not result.ok
    assert "not ready after 2 s" in result.message
