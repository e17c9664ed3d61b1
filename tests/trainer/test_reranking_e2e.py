"""Reranking end to end on a small real subset: BBC headlines as queries, their lead paragraphs among
lexical hard negatives as candidates, all-MiniLM-L6-v2 (bi-encoder) as the teacher, a 2-layer cut of it as
the student. All four stages through the real command line, then the exported student served by the real
tritonserver (QUERY, PASSAGE -> SCORE) answering exactly as the trainer's own evaluation scored it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kubestill_trainer.tasks.reranking_data import bbc_title_lead_groups, write_jsonl

from .conftest import MINILM, run_trainer, write_job

pytestmark = pytest.mark.slow


def _spec(data: Path, workdir: Path) -> dict[str, Any]:
    return {
        "task": "reranking",
        "teacher": {"modelUri": MINILM},
        "student": {"architecture": {"numLayers": 2, "fromTeacherLayers": [0, 5]}},
        "data": {"uri": f"file://{data}", "seed": 3,
                 "fields": {"text": "query", "pair": "passages", "label": "label", "segment": "segment"}},
        "labeling": {"batchSize": 32},
        "loss": {"terms": [{"name": "margin-mse"}, {"name": "listwise-kl", "temperature": 0.05, "weight": 0.1}]},
        "training": {"epochs": 1, "batchSize": 8, "learningRate": 1e-4, "maxSeqLength": 64},
        "evaluation": {"minQualityRatio": 0.5},
        "output": {"studentModelName": "bbc-reranker", "artifactUri": f"file://{workdir}",
                   "serving": {"maxBatchSize": 16}},
    }


def test_reranking_all_stages_then_triton_scores_pairs(tmp_path: Path) -> None:
    data = write_jsonl(bbc_title_lead_groups(group_size=4, limit=80, seed=1), tmp_path / "groups.jsonl")
    work = tmp_path / "work"
    config = write_job(tmp_path / "job.yaml", _spec(data, work))
    done = run_trainer(["all", "--config", str(config), "--workdir", f"file://{work}"])
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads((work / "labels" / "report.json").read_text())
    assert report["total"] == report["kept"] == 80
    meta = json.loads((work / "labels" / "meta.json").read_text())
    assert meta["groupSize"] == 4
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    assert metrics["primaryMetric"] == "ndcg@10"
    teacher, student = metrics["teacher"], metrics["student"]
    # Gold relevance: the headline's own lead paragraph. MiniLM finds most of them among 3 hard negatives.
    assert teacher["mrr@10"] > 0.7, teacher
    assert teacher["top1_agreement"] == 1.0
    assert {"mrr@10", "ndcg@10", "map", "recall@1", "recall@5", "kendall_tau"} <= set(student)
    assert student["ndcg@10"] > 0.5 and student["kendall_tau"] > 0.0, student
    assert set(metrics["segments"]) <= {"business", "entertainment", "politics", "sports", "tech"}
    # Latency was measured for both (figures belong to bench/, not to assertions: CI machines vary).
    assert metrics["speedup"] > 0 and metrics["latency"]["student"]["p50"] > 0

    from kubestill.dev.triton import assemble_repository, start_tritonserver
    from kubestill_trainer.labelstore import load_labels
    from kubestill_trainer.serving.loader import load_for_serving
    from kubestill_trainer.tasks.reranking import candidates

    rows, _ = load_labels(work / "labels").subset("test")
    task, model = load_for_serving(work / "export" / "model")
    own = task.predict(model, rows, 16)["scores"]
    pairs = [(i, j, r.text, p) for i, r in enumerate(rows) for j, p in enumerate(candidates(r))]
    repo = assemble_repository(tmp_path / "repo", "bbc-reranker", work / "export" / "triton")
    with start_tritonserver(repo, tmp_path / "triton.log") as server:
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        served = np.full(own.shape, np.nan, dtype=np.float32)
        for k in range(0, len(pairs), 16):
            chunk = pairs[k : k + 16]
            inputs = []
            for name, col in (("QUERY", 2), ("PASSAGE", 3)):
                arr = np.array([[str(p[col]).encode()] for p in chunk], dtype=np.object_)
                inp = httpclient.InferInput(name, list(arr.shape), "BYTES")
                inp.set_data_from_numpy(arr)
                inputs.append(inp)
            scores = client.infer("bbc-reranker", inputs).as_numpy("SCORE")
            assert scores.shape == (len(chunk), 1)
            for (i, j, _, _), s in zip(chunk, scores[:, 0], strict=True):
                served[i, j] = s
    np.testing.assert_allclose(served, own, atol=1e-4)
    # Ranking the served scores gives the quality the evaluate stage reported.
    teacher_pred = {"scores": own}
    again = task.metrics({"scores": served}, teacher_pred, rows, meta)
    assert again["ndcg@10"] == pytest.approx(student["ndcg@10"], abs=1e-6)
