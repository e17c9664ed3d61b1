"""Served speed: the teacher and its students, exported by the trainer and served by tritonserver exactly as a
StudentModel serves them, under closed-loop HTTP load, beside the same models called in-process.

Each model's config.pbtxt and model repository come from the operator's own builders
(`build_triton_config_map`, then the init container's assembly via `kubestill.dev.triton.assemble_repository`),
with the StudentModel's default serving spec (dynamic batching; instances and threads from --cpu). One
tritonserver at a time, so the CPU seconds (read from /proc for the server's process group) are that model's
alone. Load: kubestill.dev.wrk_load (closed loop, wrk) or, with --load python, kubestill.dev.served_load (the
same loop from Triton's Python client in threads, as the serving check sends); each request of --rows-per-request
rows (default 1).

In-process: `task.serve(model, batch)`, the very call model.py makes, at batch 1 (p50/p99) and at batch 32
(rows/s), with the same runtime options. --path torch|onnx|onnx-spin|both|all serves each model with
spec.serving.runtime torch and/or auto (ONNX Runtime on the model.onnx the export stage writes; onnx-spin in one
instance with spinning threads, as before the defaults from resources.cpu), so each before/after is one command.
--cpu (default: this machine's cores) is the StudentModel's resources.cpu.

    python bench/serving.py --quick
    python bench/serving.py --path both --concurrency 1 8 32 --duration 20
    python bench/serving.py --task classification --students static --path all --rows 600
    python bench/serving.py --task classification --concurrency 1 8 32 --duration 20
    python bench/serving.py --task embedding --students static cut --serving-python /tmp/venv-serving/bin

--serving-python DIR (or KUBESTILL_SERVING_PYTHON): the bin directory whose `python3` the python backend stub
runs (see kubestill.dev.triton); default: this interpreter's, as users run it. Use it to serve a checkout whose
packages a shared venv's editable install does not point at.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from _common import LATENCY_BATCH, Stopwatch, fmt, machine_note, print_table
from _serving_models import Served, classification_models, embedding_models, reranking_models
from kubestill.api.triton import ONNX_SERVED_TASKS, instance_count, intra_op_threads, runtime_env
from kubestill.api.v1alpha1.common import ServingSpec
from kubestill.api.v1alpha1.studentmodel import StudentModelSpec
from kubestill.builders.triton import CONFIG_KEY, build_triton_config_map, model_name
from kubestill.dev import wrk_load
from kubestill.dev.served_load import (
    LoadFigures,
    closed_loop,
    group_cpu_seconds,
    group_processes,
    speedup_at_equal_p99,
)
from kubestill.dev.triton import TritonProcess, assemble_repository, start_tritonserver
from kubestill_trainer.latency import measure
from kubestill_trainer.serving.loader import load_servable

# --path -> the StudentModel's spec.serving (over its defaults), and what model.py must then report running.
# onnx-spin: one instance whose ONNX Runtime threads spin (ONNX Runtime's own default), as every student served
# before instanceGroup.count and onnxRuntime took their defaults from resources.cpu (then with a thread per
# physical core of the node, here --cpu's: the same on a bench machine, more in a Pod on a bigger node).
PATHS: dict[str, dict[str, Any]] = {
    "torch": {"runtime": "torch"},
    "onnx": {"runtime": "auto"},
    "onnx-spin": {"runtime": "auto", "instanceGroup": {"count": 1}, "onnxRuntime": {"allowSpinning": True}},
}
RUNTIMES_SEEN = {"torch": "torch", "onnx": "onnxruntime", "onnx-spin": "onnxruntime"}
PATH_SETS = {"both": ["torch", "onnx"], "all": ["torch", "onnx-spin", "onnx"]}


def studentmodel(item: Served, serving: dict[str, Any]) -> tuple[dict[str, Any], StudentModelSpec]:
    """The StudentModel a DistillationJob would create for this export (file:// artifact)."""
    wire = {"artifactUri": f"file://{item.export.resolve()}", "task": item.task, "serving": serving}
    body = {"apiVersion": "kubestill.io/v1alpha1", "kind": "StudentModel",
            "metadata": {"name": item.name, "namespace": "bench", "uid": "bench"}, "spec": wire}
    return body, StudentModelSpec.model_validate(wire)


def serve(item: Served, repo: Path, serving: dict[str, Any], extra_env: dict[str, str]) -> TritonProcess:
    """tritonserver with the StudentModel's config.pbtxt and its Triton container's runtime environment
    (kubestill.api.triton.runtime_env: threads, spinning, the tokenizer's pool)."""
    body, spec = studentmodel(item, serving)
    config = build_triton_config_map(body, spec)["data"][CONFIG_KEY]
    assemble_repository(repo, model_name(item.name), item.export / "triton", config)
    return start_tritonserver(repo, log_file=repo.parent / f"{item.name}.log", ready_timeout_s=300,
                              extra_env={**runtime_env(spec.serving, spec.task), **extra_env})


def expected_runtime(item: Served, path: str) -> str:
    """What model.py must report running: RUNTIMES_SEEN, but torch for a task that serves no ONNX graph."""
    return RUNTIMES_SEEN[path] if item.task in ONNX_SERVED_TASKS else "torch"


def request_rows(item: Served, rows_per_request: int) -> list[list[dict[str, str]]]:
    """The model's request rows in consecutive groups of `rows_per_request` (a short last group dropped)."""
    rows = item.requests()
    groups = [rows[i : i + rows_per_request] for i in range(0, len(rows) - rows_per_request + 1, rows_per_request)]
    if not groups:
        raise ValueError(f"{item.name}: {len(rows)} request rows, fewer than --rows-per-request {rows_per_request}")
    return groups


def http_sender(server: TritonProcess, item: Served, rows_per_request: int) -> Callable[[int, int], None]:
    """`send(worker, i)`: one request of `rows_per_request` rows through tritonclient.http, a client per worker
    thread."""
    import tritonclient.http as httpclient

    local = threading.local()
    url = server.http_url.removeprefix("http://")
    payloads = [{k: np.array([[row[k].encode()] for row in group], dtype=np.object_) for k in group[0]}
                for group in request_rows(item, rows_per_request)]
    name = model_name(item.name)

    def send(worker: int, i: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpclient.InferenceServerClient(url, connection_timeout=60,
                                                                     network_timeout=120)
        inputs = []
        for tensor, array in payloads[(worker * 7919 + i) % len(payloads)].items():
            inputs.append(httpclient.InferInput(tensor, list(array.shape), "BYTES"))
            inputs[-1].set_data_from_numpy(array)
        client.infer(name, inputs)

    return send


LoadRunner = Callable[[int, float, Callable[[], float]], LoadFigures]  # (concurrency, seconds, cpu_seconds)


def load_runner(server: TritonProcess, item: Served, args: argparse.Namespace) -> LoadRunner:
    """The closed loop of `args.load`: python (kubestill.servecheck's, Triton's Python client in threads, as the
    serving check runs it; outputs in binary) or wrk (a C load generator: kubestill.dev.wrk_load; outputs as
    `args.outputs` says)."""
    rows_per_request = args.rows_per_request
    if args.load == "wrk":
        bodies = [wrk_load.v2_body(group, binary_output=args.outputs == "binary")
                  for group in request_rows(item, rows_per_request)]
        url = f"{server.http_url}/v2/models/{model_name(item.name)}/infer"
        return lambda c, seconds, cpu: wrk_load.run(url, bodies, c, seconds, cpu)
    send = http_sender(server, item, rows_per_request)
    return lambda c, seconds, cpu: closed_loop(send, c, seconds, cpu)


def serving_spec(path: str, args: argparse.Namespace) -> dict[str, Any]:
    """spec.serving for `path`: PATHS[path] plus the batcher flags; everything else the StudentModel's defaults."""
    serving: dict[str, Any] = {key: dict(value) if isinstance(value, dict) else value
                               for key, value in PATHS[path].items()}
    batching: dict[str, Any] = {}
    if args.max_queue_delay_us is not None:
        batching["maxQueueDelayMicroseconds"] = args.max_queue_delay_us
    if args.preferred_batch_sizes:
        batching["preferredBatchSizes"] = args.preferred_batch_sizes
    if batching:
        serving["dynamicBatching"] = batching
    if args.instances is not None:
        serving["instanceGroup"] = {"count": args.instances}
    if args.cpu:
        # What the instances and their threads default to (kubestill.api.triton.instance_count).
        serving["resources"] = {"cpu": args.cpu}
    return serving


def backend_share(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> float:
    """The python backend's stubs' part of the server's CPU seconds between two `group_processes` readings
    (tritonserver's own part: HTTP, the scheduler, the dynamic batcher, shared-memory IPC)."""
    # A process that exited between the readings counts in neither part.
    used = {pid: seconds - before.get(pid, ("", 0.0))[1] for pid, (_, seconds) in after.items()}
    stubs = sum(s for pid, s in used.items() if after[pid][0].startswith("triton_python"))
    return stubs / sum(used.values()) if sum(used.values()) > 0 else float("nan")


def served_figures(item: Served, path: str, root: Path, args: argparse.Namespace,
                   shares: dict[tuple[str, str, int], float]) -> list[LoadFigures]:
    serving = serving_spec(path, args)
    extra_env = {}
    if args.serving_python:
        extra_env["PATH"] = os.pathsep.join([str(args.serving_python), os.environ.get("PATH", "")])
    with serve(item, root / "repo" / path / item.name, serving, extra_env) as server:
        runtime = "onnxruntime" if "served by onnxruntime" in server.log_tail(400) else "torch"
        if runtime != expected_runtime(item, path):
            raise RuntimeError(f"{item.name}: asked for the {path} path, the server runs {runtime}")
        load = load_runner(server, item, args)
        pgid = server.popen.pid
        load(max(args.concurrency), args.warmup, lambda: float("nan"))  # warm up: load kernels, fill caches
        out = []
        for c in args.concurrency:
            before = group_processes(pgid)
            fig = load(c, args.duration, lambda: group_cpu_seconds(pgid))
            shares[item.name, path, c] = backend_share(before, group_processes(pgid))
            print(f"  {item.name} c={c}: {fig.throughput:.1f} req/s p50 {fig.p50_ms:.1f} p99 {fig.p99_ms:.1f} ms "
                  f"errors {fig.errors}", flush=True)
            out.append(fig)
        return out


def in_process(item: Served, path: str, args: argparse.Namespace) -> dict[str, float]:
    """The same model through the same `answer` call model.py makes, without Triton, in one process with the
    threads of all the server's instances together (the same cores) and the same spinning."""
    serving = StudentModelSpec.model_validate({"artifactUri": "file:///x", "task": item.task,
                                               "serving": serving_spec(path, args)}).serving
    servable = load_servable(item.export / "model", serving.runtime,
                             threads=intra_op_threads(serving, item.task) * instance_count(serving, item.task),
                             spinning=serving.onnx_runtime.allow_spinning)
    if servable.runtime != expected_runtime(item, path):
        raise RuntimeError(f"{item.name}: no {path} path in {item.export / 'model'} (runtime {servable.runtime})")

    def predict(rows: Sequence[dict[str, str]]) -> object:
        return servable.answer({k: np.array([[r[k].encode()] for r in rows], dtype=np.object_) for k in rows[0]})

    return measure(predict, item.requests()[:512], batch_size=LATENCY_BATCH, single=200)  # type: ignore[arg-type]


Key = tuple[str, str]  # (model name, path)


def table_rows(items: list[Served], paths: list[str], inproc: dict[Key, dict[str, float]],
               served: dict[Key, list[LoadFigures]], shares: dict[tuple[str, str, int], float],
               rows_per_request: int) -> list[list[str]]:
    teacher = {i.task: i.name for i in items if i.teacher}
    out = []
    for item in items:
        for path in paths:
            own = inproc[item.name, path]
            base = {f.concurrency: f for f in served.get((teacher.get(item.task, ""), path), [])}
            torch_path = {f.concurrency: f for f in served.get((item.name, "torch"), [])}
            for fig in served[item.name, path]:
                ref = None if item.teacher else base.get(fig.concurrency)
                before = torch_path.get(fig.concurrency) if path != "torch" else None
                rows_per_s = fig.throughput * rows_per_request
                out.append([
                    item.description, path, str(fig.concurrency), fmt(fig.throughput, 1), fmt(rows_per_s, 0),
                    fmt(fig.p50_ms, 1),
                    fmt(fig.p95_ms, 1), fmt(fig.p99_ms, 1), fmt(fig.cpu_s_per_1000, 2),
                    fmt(100 * shares[item.name, path, fig.concurrency], 0), str(fig.errors),
                    fmt(own["batch1_p50_ms"], 2), fmt(own["batch1_p99_ms"], 2), fmt(own["throughput_rows_per_s"], 0),
                    fmt(rows_per_s / (1000.0 / own["batch1_p50_ms"]), 2),
                    fmt(rows_per_s / own["throughput_rows_per_s"], 2),
                    fmt(fig.throughput / before.throughput if before else None, 1),
                    fmt(fig.throughput / ref.throughput if ref else None, 1),
                    fmt(speedup_at_equal_p99(ref, served[item.name, path]) if ref else None, 1)])
    return out


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=["classification", "embedding", "reranking", "both", "all"], default="both",
                   help="both: classification and embedding; all: also the reranker (its student: 2 layers cut, "
                   "served by torch on every path, as runtime auto serves a reranker)")
    p.add_argument("--students", nargs="+", choices=["cut", "static"], default=["static", "cut"])
    p.add_argument("--path", nargs="+", choices=[*PATHS, *PATH_SETS], default=["both"],
                   help="what runs the models in Triton: torch (spec.serving.runtime torch, the python backend's "
                   "eager torch), onnx (runtime auto: ONNX Runtime on the exported model.onnx; instances, "
                   "threads and spinning as the StudentModel defaults them), onnx-spin (the same in one instance "
                   "with spinning threads, as served before those defaults); both: torch and onnx; all: the three")
    p.add_argument("--concurrency", type=int, nargs="+", default=None, help="default 1 8 32 (--quick: 1 8)")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds of load per concurrency level (default 20, --quick 8)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds of load before measuring, per model (default 3, --quick 2)")
    p.add_argument("--max-queue-delay-us", type=int, default=None,
                   help="spec.serving.dynamicBatching.maxQueueDelayMicroseconds (default: the StudentModel's)")
    p.add_argument("--preferred-batch-sizes", type=int, nargs="*", default=None,
                   help="spec.serving.dynamicBatching.preferredBatchSizes (default: the StudentModel's)")
    p.add_argument("--instances", type=int, default=None,
                   help="spec.serving.instanceGroup.count (default: the StudentModel's, from --cpu)")
    p.add_argument("--cpu", default=str(os.cpu_count() or 1),
                   help="spec.serving.resources.cpu (default: this machine's cores, a Pod given the node); the "
                   "default instances (one per core) and their intra-op threads follow from it; '' for none")
    p.add_argument("--load", choices=["python", "wrk"], default="wrk",
                   help="the load generator: wrk (Debian's wrk, C: leaves the shared cores to the server; "
                   "scripts/setup.sh installs it) or python (Triton's Python client in threads, as the serving "
                   "check sends: on 2 cores it competes with the server and limits the small students)")
    p.add_argument("--rows-per-request", type=int, default=1,
                   help="rows in each request (default 1; at most the StudentModel's maxBatchSize): clients that "
                   "send batches, as embedding clients often do, spread the per-request HTTP and backend work")
    p.add_argument("--outputs", choices=["binary", "json"], default="binary",
                   help="with --load wrk: answers in Triton's binary tensor extension (what Triton's clients ask "
                   "for) or as JSON numbers (plain KServe v2 clients; costly for embeddings)")
    p.add_argument("--epochs", type=int, default=1, help="students' training epochs (speed does not depend on it)")
    p.add_argument("--rows", type=int, default=100000, help="classification: BBC titles used (all: 2225)")
    p.add_argument("--groups", type=int, default=800, help="reranking: headline groups used (of 2,225)")
    p.add_argument("--sentences", type=int, default=4000, help="embedding: training sentences")
    p.add_argument("--quick", action="store_true",
                   help="a short run: 600 titles / 1000 sentences, concurrency 1 and 8, 8 s each (unless given)")
    p.add_argument("--serving-python", type=Path, default=os.environ.get("KUBESTILL_SERVING_PYTHON") or None,
                   help="bin directory put first on tritonserver's PATH (see the module docstring)")
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args()
    quick = {"concurrency": [1, 8], "duration": 8.0, "warmup": 2.0}
    full = {"concurrency": [1, 8, 32], "duration": 20.0, "warmup": 3.0}
    for key, value in (quick if args.quick else full).items():  # flags given explicitly win
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.rows, args.sentences = min(args.rows, 600), min(args.sentences, 1000)
    if args.outputs == "json" and args.load != "wrk":
        p.error("--outputs json needs --load wrk (Triton's Python client always asks for binary outputs)")
    largest = ServingSpec().max_batch_size
    if not 1 <= args.rows_per_request <= largest:
        p.error(f"--rows-per-request must be 1..{largest} (the StudentModel's default maxBatchSize)")
    if min(args.concurrency) < 1 or args.duration <= 0 or args.warmup < 0:
        p.error("--concurrency must be at least 1, --duration above 0 and --warmup not negative")
    # The serving flags as the StudentModel's API validates them, before any model is trained.
    for path in selected_paths(args):
        try:
            StudentModelSpec.model_validate({"artifactUri": "file:///x", "task": "classification",
                                             "serving": serving_spec(path, args)})
        except ValueError as err:  # pydantic's ValidationError names the field
            p.error(f"--cpu/--instances/--max-queue-delay-us/--preferred-batch-sizes: {err}")
    return args


def selected_paths(args: argparse.Namespace) -> list[str]:
    """--path with its sets (both, all) expanded, each path once, in the order given."""
    return list(dict.fromkeys(p for given in args.path for p in PATH_SETS.get(given, [given])))


def main() -> None:
    args = parse_args()
    # The caller's tokenizer settings (scripts/ export TOKENIZERS_PARALLELISM=false) reach neither a Pod nor,
    # here, the servers (which get the container's runtime_env) or the in-process calls (the library default).
    for name in ("TOKENIZERS_PARALLELISM", "RAYON_NUM_THREADS"):
        os.environ.pop(name, None)
    clock = Stopwatch()
    load_at_start = os.getloadavg()[0]
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-serving-"))
    items: list[Served] = []
    if args.task in ("classification", "both", "all"):
        items += classification_models(root / "cls", args.students, args.rows, args.epochs)
    if args.task in ("embedding", "both", "all"):
        items += embedding_models(root / "emb", args.students, args.sentences, args.epochs)
    if args.task in ("reranking", "all"):
        items += reranking_models(root / "rr", args.groups, args.epochs)
    print(f"[{clock():.0f}s] {len(items)} models exported under {root}", flush=True)
    paths = selected_paths(args)
    inproc: dict[Key, dict[str, float]] = {}
    served: dict[Key, list[LoadFigures]] = {}
    shares: dict[tuple[str, str, int], float] = {}
    for path in paths:
        for item in items:
            inproc[item.name, path] = in_process(item, path, args)
            print(f"[{clock():.0f}s] {item.name} {path} in-process: {inproc[item.name, path]}", flush=True)
            served[item.name, path] = served_figures(item, path, root, args, shares)
            print(f"[{clock():.0f}s] {item.name} {path} served", flush=True)
    print_table(
        "Served vs in-process (Triton python backend; path torch: eager torch, onnx: ONNX Runtime, onnx-spin: "
        "ONNX Runtime with spinning intra-op threads)",
        ["model", "path", "conc", "req/s", "rows/s", "p50 ms", "p95 ms", "p99 ms", "CPU s/1k req", "backend CPU %",
         "errors", "in-proc p50 ms b1", "in-proc p99 ms b1", f"in-proc rows/s b{LATENCY_BATCH}", "served/in-proc b1",
         f"served/in-proc b{LATENCY_BATCH}", "x torch path", "x teacher req/s", "x teacher at equal p99"],
        table_rows(items, paths, inproc, served, shares, args.rows_per_request),
        ["served: tritonserver (nvidia-pytriton) on loopback, config.pbtxt from the operator's builder with the "
         "StudentModel's default serving spec (runtime per path"
         + (f"; maxQueueDelayMicroseconds {args.max_queue_delay_us}" if args.max_queue_delay_us is not None else "")
         + (f"; preferredBatchSizes {args.preferred_batch_sizes}" if args.preferred_batch_sizes else "")
         + (f"; instanceGroup.count {args.instances}" if args.instances else "")
         + (f"; resources.cpu {args.cpu}" if args.cpu else "")
         + f"); closed loop, {args.rows_per_request} row(s) per request, over HTTP ("
         + (f"wrk, one thread, KServe v2 JSON bodies, {args.outputs} outputs" if args.load == "wrk"
            else "tritonclient, a thread per client, binary outputs")
         + ")",
         f"{args.duration:g} s per concurrency level after {args.warmup:g} s of warm-up; latency as the client sees "
         "it; CPU: the tritonserver process group's user+system seconds from /proc, per request (divide by the "
         "rows a request for a row's; backend CPU %: the part "
         "spent in the python backend's stub processes, which run model.py; the rest is tritonserver's HTTP, "
         "scheduling and IPC); in-process: one process with the server's threads (instances x intra-op threads) "
         "and spinning, the tokenizer's own default pool",
         "served/in-proc b1: served rows/s over the in-process rate of one caller sending one row at a time "
         f"(1000 / p50 ms); b{LATENCY_BATCH}: over the in-process rows/s at batch {LATENCY_BATCH}",
         "x teacher: over the teacher served on the same path at the same concurrency; at equal p99: the "
         "student's best req/s at a p99 no worse than the teacher's there, over the teacher's req/s",
         f"machine: {machine_note()} ({load_at_start:.1f} at the start); the load generator shares the cores "
         f"with the server; total {clock():.0f}s"],
    )


if __name__ == "__main__":
    main()
