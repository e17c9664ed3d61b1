"""Task models without training: students cut from the teacher's layers, the Dense projection, the
sentence-transformers loader matching the library, save/load round trips, int8."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kubestill.api.v1alpha1 import DistillationJobSpec
from kubestill_trainer.serving.loader import quantize_int8
from kubestill_trainer.storage import resolve_uri
from kubestill_trainer.tasks.base import Row
from kubestill_trainer.tasks.embedding import Embedding, SentenceEncoder, load_sentence_encoder
from kubestill_trainer.tasks.encoder import evenly_spaced, layer_list

from .conftest import MINILM

TEXTS = ["The central bank raised interest rates.", "A late goal won the cup final.", "New phone unveiled"]


def _spec(student: dict[str, Any], terms: list[dict[str, Any]] | None = None) -> DistillationJobSpec:
    return DistillationJobSpec.model_validate(
        {
            "task": "embedding",
            "teacher": {"modelUri": MINILM},
            "student": student,
            "data": {"uri": "file:///x"},
            "loss": {"terms": terms or [{"name": "embedding-mse"}]},
            "output": {"studentModelName": "s", "artifactUri": "file:///tmp/x"},
        }
    )


@pytest.fixture(scope="module")
def teacher() -> SentenceEncoder:
    return load_sentence_encoder(resolve_uri(MINILM))


def _embed(model: SentenceEncoder, texts: list[str]) -> np.ndarray:  # type: ignore[type-arg]
    with torch.no_grad():
        out = model(model.encode([Row(str(i), t) for i, t in enumerate(texts)], 128)).embedding
    assert out is not None
    arr: np.ndarray = out.numpy()  # type: ignore[type-arg]
    return arr


def _reference_embeddings(path: Path, texts: list[str]) -> np.ndarray:  # type: ignore[type-arg]
    """sentence-transformers when it imports (it pulls in pyarrow, which may not match numpy), else the
    recipe its modules.json declares for this model, written out with plain transformers."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        from transformers import AutoModel, AutoTokenizer

        tok, enc = AutoTokenizer.from_pretrained(str(path)), AutoModel.from_pretrained(str(path))
        batch = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            hidden = enc(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        ref: np.ndarray = torch.nn.functional.normalize(pooled, dim=-1).numpy()  # type: ignore[type-arg]
        return ref
    out: np.ndarray = SentenceTransformer(str(path), device="cpu").encode(texts)  # type: ignore[type-arg]
    return out


def test_sentence_transformers_directory_loads_like_the_library(teacher: SentenceEncoder) -> None:
    ours = _embed(teacher, TEXTS)
    np.testing.assert_allclose(ours, _reference_embeddings(resolve_uri(MINILM), TEXTS), atol=1e-5)
    assert teacher.pooling == "mean" and teacher.normalize


@pytest.mark.parametrize(
    ("n", "total", "want"), [(2, 6, [0, 5]), (3, 6, [0, 2, 5]), (1, 6, [5]), (6, 6, list(range(6)))]
)
def test_evenly_spaced(n: int, total: int, want: list[int]) -> None:
    assert evenly_spaced(n, total) == want


def test_student_copies_the_listed_teacher_layers(teacher: SentenceEncoder) -> None:
    task = Embedding(_spec({"architecture": {"numLayers": 2, "fromTeacherLayers": [1, 4]}}))
    student = task.build_student({}, resolve_uri(MINILM))
    assert isinstance(student, SentenceEncoder) and student.num_layers == 2
    t_layers, s_layers = layer_list(teacher.encoder), layer_list(student.encoder)
    for s_idx, t_idx in enumerate([1, 4]):
        for (name, p), (_, q) in zip(
            s_layers[s_idx].named_parameters(), t_layers[t_idx].named_parameters(), strict=True
        ):
            assert torch.equal(p, q), name
    # A copy, not shared storage: training the student must not change the teacher.
    with torch.no_grad():
        next(s_layers[0].parameters()).add_(1.0)
    assert not torch.equal(next(s_layers[0].parameters()), next(t_layers[1].parameters()))


def test_narrow_student_gets_a_dense_projection_to_output_dim(tmp_path: Path) -> None:
    spec = _spec(
        {"architecture": {"numLayers": 2, "hiddenSize": 128}}, [{"name": "embedding-cosine", "outputDim": 384}]
    )
    task = Embedding(spec)
    student = task.build_student({}, resolve_uri(MINILM)).eval()
    assert student.hidden_size == 128 and student.embedding_dim == 384
    assert isinstance(student, SentenceEncoder)
    before = _embed(student, TEXTS)
    assert before.shape == (3, 384)
    student.save(tmp_path / "m")
    again = task.load_model(tmp_path / "m")
    assert isinstance(again, SentenceEncoder)
    np.testing.assert_allclose(_embed(again, TEXTS), before, atol=1e-6)


def test_conflicting_output_dims_are_rejected() -> None:
    """The student has one projection: the spec itself refuses two sizes (before any stage runs)."""
    with pytest.raises(ValueError, match="different outputDim"):
        _spec({"architecture": {"numLayers": 2}},
              [{"name": "embedding-cosine", "outputDim": 256}, {"name": "embedding-mse", "outputDim": 128}])


def test_int8_stays_close_to_fp32(teacher: SentenceEncoder) -> None:
    fp32 = _embed(teacher, TEXTS)
    q = quantize_int8(load_sentence_encoder(resolve_uri(MINILM)))
    assert isinstance(q, SentenceEncoder)
    int8 = _embed(q, TEXTS)
    cos = np.sum(fp32 * int8, axis=1)  # both normalised
    assert cos.min() > 0.9


def test_attention_maps_for_attention_mse(teacher: SentenceEncoder) -> None:
    from kubestill.api.v1alpha1.distillationjob import LossTerm
    from kubestill_trainer.losses import LossDims, build_loss
    from kubestill_trainer.outputs import LossInputs
    from kubestill_trainer.stages.train_setup import use_eager_attention

    task = Embedding(_spec({"architecture": {"numLayers": 2}}))
    student = task.build_student({}, resolve_uri(MINILM))
    use_eager_attention(student)
    use_eager_attention(teacher)
    feats = student.encode([Row(str(i), t) for i, t in enumerate(TEXTS)], 32)
    s_out = student(feats, output_attentions=True, output_hidden_states=True)
    with torch.no_grad():
        t_out = teacher(feats, output_attentions=True, output_hidden_states=True)
    assert s_out.attentions is not None and len(s_out.attentions) == 2
    assert t_out.attentions is not None and len(t_out.attentions) == 6
    for name in ("attention-mse", "hidden-mse"):
        loss = build_loss(LossTerm(name=name), LossDims(student_hidden=384, teacher_hidden=384))
        value = loss(LossInputs(s_out, t_out, attention_mask=feats["attention_mask"]))
        value.backward(retain_graph=True)
        assert value.item() > 0
