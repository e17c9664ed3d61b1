"""Embedding end to end on a small real subset (BBC News title -> lead, MiniLM teacher): all four stages
through the real command line, then the exported student served by the real tritonserver returns the
embeddings the trainer evaluated, and retrieval computed from them reproduces metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from .conftest import BBC, MINILM, run_trainer, write_job

pytestmark = pytest.mark.slow


def test_all_stages_then_triton_serves_the_evaluated_embeddings(tmp_path: Path) -> None:
    work = tmp_path / "work"
    spec = {
        "task": "embedding",
        "teacher": {"modelUri": MINILM},
        "student": {"architecture": {"numLayers": 2, "fromTeacherLayers": [0, 5]}, "quantization": {"method": "int8"}},
        "data": {"uri": BBC, "fields": {"text": "title", "pair": "lead", "segment": "label"}, "maxSamples": 200},
        "labeling": {"batchSize": 64},
        "loss": {
            "terms": [
                {"name": "embedding-mse", "matryoshkaDims": [128]},
                {"name": "embedding-cosine"},
                {"name": "infonce", "weight": 0.1, "temperature": 0.05},
            ]
        },
        "training": {"epochs": 2, "batchSize": 16, "learningRate": 1e-4, "maxSeqLength": 64},
        "evaluation": {"minQualityRatio": 0.3},
        "output": {
            "studentModelName": "bbc-embedder",
            "artifactUri": f"file://{work}",
            "formats": ["safetensors", "onnx"],
        },
    }
    config = write_job(tmp_path / "job.yaml", spec)
    done = run_trainer(["all", "--config", str(config)])
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    assert metrics["primaryMetric"] == "ndcg@10"
    assert metrics["teacher"]["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["teacher"]["recall@10"] > 0.8, metrics["teacher"]
    assert 0.5 < metrics["student"]["cosine"] < 1.0, metrics["student"]
    assert {"recall@1", "recall@10", "mrr@10", "ndcg@10"} <= set(metrics["student"])
    export = json.loads((work / "export" / "export.json").read_text())
    assert export["onnx"]["maxAbsDiff"] < 1e-3 and export["int8"]["cosineToFp32"] > 0.9

    from kubestill.dev.triton import assemble_repository, start_tritonserver
    from kubestill_trainer.labelstore import load_labels
    from kubestill_trainer.serving.loader import load_for_serving
    from kubestill_trainer.tasks.metrics import retrieval_metrics

    rows, _ = load_labels(work / "labels").subset("test")
    task, model = load_for_serving(work / "export" / "model")
    own = task.predict(model, rows, 32)
    repo = assemble_repository(tmp_path / "repo", "bbc-embedder", work / "export" / "triton")
    with start_tritonserver(repo, tmp_path / "triton.log") as server:
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))

        def embed(texts: list[str]) -> np.ndarray:  # type: ignore[type-arg]
            arr = np.array([[t.encode()] for t in texts], dtype=np.object_)
            inp = httpclient.InferInput("TEXT", list(arr.shape), "BYTES")
            inp.set_data_from_numpy(arr)
            out: np.ndarray = client.infer("bbc-embedder", [inp]).as_numpy("EMBEDDING")  # type: ignore[type-arg]
            return out

        queries = np.concatenate([embed([r.text for r in rows[i : i + 32]]) for i in range(0, len(rows), 32)])
        docs = np.concatenate([embed([r.pair or "" for r in rows[i : i + 32]]) for i in range(0, len(rows), 32)])
    # Padding differs between batch compositions, so allow float noise, not more.
    np.testing.assert_allclose(queries, own["embedding"], atol=1e-4)
    np.testing.assert_allclose(docs, own["pair_embedding"], atol=1e-4)
    served = retrieval_metrics(queries, docs)
    assert served["recall@1"] == pytest.approx(metrics["student"]["recall@1"])
    assert served["ndcg@10"] == pytest.approx(metrics["student"]["ndcg@10"], abs=1e-6)
