"""Closed-loop HTTP load from wrk (https://github.com/wg/wrk, Debian's `wrk`) for bench/serving.py: a C load
generator, so on a machine whose cores the server shares it takes far less of them than Triton's Python client.

`concurrency` connections, each with one request in flight (a closed loop, as kubestill.servecheck.load), from
one wrk thread; each request is a KServe v2 JSON inference body (of one row, or of several), cycling through them. wrk
reports latency percentiles in microseconds (its own histogram) and counts non-2xx answers, socket errors and
timeouts as errors; the Lua `done` hook prints them as one JSON line, read here into the same LoadFigures the
Python closed loop returns.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from kubestill.dev.served_load import LoadFigures

SCRIPT = r"""
local bodies = {}
local counter = 0
init = function(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
end
request = function()
  counter = counter + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[(counter % #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "errors": %d, "status_errors": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, '
    .. '"p99_us": %d}\n', summary.requests, e.connect + e.read + e.write + e.status + e.timeout, e.status,
    summary.duration, latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def v2_body(rows: Sequence[Mapping[str, str]], binary_output: bool = True) -> str:
    """Rows of BYTES tensors ({tensor name: text}, every row the same names) as one KServe v2 inference request
    of len(rows) rows, in JSON. `binary_output`: ask for the outputs in Triton's binary tensor extension (the
    `binary_data_output` parameter), as Triton's own clients do when they name no outputs, rather than as JSON
    numbers. Raises ValueError for no rows or rows of other names.

    >>> v2_body([{"QUERY": 'say "hi"', "PASSAGE": "hello"}], False)  # doctest: +NORMALIZE_WHITESPACE
    '{"inputs": [{"name": "QUERY", "shape": [1, 1], "datatype": "BYTES", "data": ["say \\\\"hi\\\\""]},
                 {"name": "PASSAGE", "shape": [1, 1], "datatype": "BYTES", "data": ["hello"]}]}'
    >>> v2_body([{"TEXT": "a"}, {"TEXT": "b"}])  # doctest: +NORMALIZE_WHITESPACE
    '{"inputs": [{"name": "TEXT", "shape": [2, 1], "datatype": "BYTES", "data": ["a", "b"]}],
      "parameters": {"binary_data_output": true}}'
    """
    if not rows or any(row.keys() != rows[0].keys() for row in rows):
        raise ValueError(f"a request needs rows of the same tensors, got {[sorted(r) for r in rows]}")
    body: dict[str, object] = {"inputs": [{"name": name, "shape": [len(rows), 1], "datatype": "BYTES",
                                           "data": [row[name] for row in rows]} for name in rows[0]]}
    if binary_output:
        body["parameters"] = {"binary_data_output": True}
    return json.dumps(body)


def figures(report: dict[str, int], concurrency: int, cpu_s: float) -> LoadFigures:
    """LoadFigures from the `done` hook's line: answered = requests less non-2xx answers; latencies in ms.

    >>> f = figures({"requests": 1000, "errors": 2, "status_errors": 2, "duration_us": 2_000_000,
    ...              "p50_us": 1500, "p95_us": 4000, "p99_us": 9000}, 8, 0.5)
    >>> (f.requests, f.errors, f.throughput, f.p99_ms, f.cpu_s_per_1000)
    (998, 2, 499.0, 9.0, 0.501002004008016)
    """
    return LoadFigures(concurrency, report["requests"] - report["status_errors"], report["errors"],
                       report["duration_us"] / 1e6, report["p50_us"] / 1e3, report["p95_us"] / 1e3,
                       report["p99_us"] / 1e3, cpu_s)


def run(url: str, bodies: Sequence[str], concurrency: int, duration_s: float,
        cpu_seconds: Callable[[], float] = lambda: float("nan")) -> LoadFigures:
    """POST `bodies` (cycled) to `url` from `concurrency` connections for `duration_s` seconds, rounded to whole
    seconds (at least 1: wrk takes no fractions). Raises RuntimeError when wrk fails or prints no report."""
    with tempfile.TemporaryDirectory(prefix="wrk-") as tmp:
        script, data = Path(tmp) / "load.lua", Path(tmp) / "bodies.txt"
        script.write_text(SCRIPT)
        data.write_text("".join(b.replace("\n", " ") + "\n" for b in bodies))
        if shutil.which("wrk") is None:
            raise RuntimeError("wrk is not installed (Debian's wrk; scripts/setup.sh installs it)")
        before = cpu_seconds()
        proc = subprocess.run(
            ["wrk", "-t", "1", "-c", str(concurrency), "-d", f"{max(1, round(duration_s))}s", "--timeout", "120s",
             "-s", str(script), url, "--", str(data)],
            capture_output=True, text=True, check=False)
        cpu = cpu_seconds() - before
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{"requests"')]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return figures(json.loads(lines[-1]), concurrency, cpu)
