"""A student.baseModelUri whose tokenizer is not the teacher's is refused, at label and at train time, before any
model is loaded, naming student.baseModelUri and what differs (issue #13, fault 7: a smaller student vocabulary
failed with a bare IndexError, a larger one trained on ids that meant other tokens to it). Tiny models built here
(tests/trainer/tiny_lm.py), seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubestill.api.v1alpha1 import DistillationJobSpec
from kubestill_trainer.context import RunContext
from kubestill_trainer.stages import label as label_stage
from kubestill_trainer.stages import train as train_stage
from kubestill_trainer.stages.label import run_label
from kubestill_trainer.stages.train import run_train

from . import tiny_lm


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The teacher (byte-level BPE, 400 tokens), the case's two students (WordPiece: 120 tokens; 330 tokens in a
    512-row model) and a student of the teacher's own tokenizer."""
    root = tmp_path_factory.mktemp("tokenizers")
    teacher_tok = tiny_lm.tokenizer(400, "bpe")
    small, big = tiny_lm.tokenizer(120, "wp"), tiny_lm.tokenizer(600, "wp")
    return {
        "teacher": tiny_lm.save(root / "teacher", tiny_lm.llama(teacher_tok), teacher_tok),
        "smaller": tiny_lm.save(root / "smaller", tiny_lm.gpt2(small), small),
        "bigger": tiny_lm.save(root / "bigger", tiny_lm.gpt2(big, vocab_size=512), big),
        "same": tiny_lm.save(root / "same", tiny_lm.gpt2(teacher_tok), teacher_tok),
        "data": tiny_lm.prompts(root / "prompts.jsonl"),
    }


def _ctx(models: dict[str, Path], student: str, work: Path, **spec: Any) -> RunContext:
    raw = tiny_lm.generation_spec(models["teacher"], models[student], models["data"], work)
    raw.update(spec)
    return RunContext.create(DistillationJobSpec.model_validate(raw), {"name": "gen"}, f"file://{work}")


def _no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model after the check would be heavy work done for nothing: make it fail loudly."""
    def heavy(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a model was loaded before the tokenizers were compared")

    monkeypatch.setattr(label_stage, "make_teacher", heavy)
    from kubestill_trainer.tasks import generation

    monkeypatch.setattr(generation, "load_causal_lm", heavy)


@pytest.mark.parametrize("student", ["smaller", "bigger"])
def test_label_refuses_a_student_of_another_tokenizer(models: dict[str, Path], student: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _no_models(monkeypatch)
    with pytest.raises(ValueError) as err:
        run_label(_ctx(models, student, tmp_path))
    message = str(err.value)
    assert f"student.baseModelUri file://{models[student]}" in message
    assert "vocabulary: teacher 400 tokens, student" in message and "map differently, e.g." in message
    assert "teacher id" in message and "generation trains the student on the teacher's token ids" in message


@pytest.mark.parametrize("student", ["smaller", "bigger"])
def test_train_refuses_it_too(models: dict[str, Path], student: str, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Labels made for a proper student, then the spec's student swapped: train refuses before loading."""
    run_label(_ctx(models, "same", tmp_path))
    _no_models(monkeypatch)
    monkeypatch.setattr(train_stage, "load_checkpoint", lambda *_a: pytest.fail("train went past the check"))
    with pytest.raises(ValueError, match=r"student\.baseModelUri .*vocabulary: teacher 400 tokens"):
        run_train(_ctx(models, student, tmp_path))


def test_a_student_of_the_teachers_tokenizer_labels_and_trains(models: dict[str, Path], tmp_path: Path) -> None:
    run_label(_ctx(models, "same", tmp_path))
    summary = run_train(_ctx(models, "same", tmp_path))
    assert summary["steps"] > 0 and summary["finalLoss"] is not None


def test_position_losses_refuse_another_tokenizer_in_any_task(models: dict[str, Path], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """hidden-mse compares the models token by token: a classification student of another tokenizer is refused;
    with output-level losses only (logit-kl) any tokenizer is fine and the check passes."""
    _no_models(monkeypatch)
    spec = {"task": "classification", "data": {"uri": f"file://{models['data']}", "fields": {"text": "prompt"}},
            "labeling": {"batchSize": 8}}  # topK and maxNewTokens are generation's
    with pytest.raises(ValueError, match=r"student\.baseModelUri .*hidden-mse compare the two models token by token"):
        run_label(_ctx(models, "bigger", tmp_path, **spec, loss={"terms": [{"name": "logit-kl"},
                                                                           {"name": "hidden-mse"}]}))
    with pytest.raises(AssertionError, match="a model was loaded"):  # past the check, at the teacher
        run_label(_ctx(models, "bigger", tmp_path, **spec, loss={"terms": [{"name": "logit-kl"}]}))


def test_what_same_tokenizer_means() -> None:
    """Superset vocabularies pass; another end-of-sequence token, another normaliser (same vocabulary) and a
    too small output layer do not."""
    from kubestill_trainer.tokenizer_check import tokenizer_differences

    teacher = tiny_lm.tokenizer(400, "bpe")
    probe = ["News item 3: Markets rise"]
    assert tokenizer_differences(teacher, tiny_lm.tokenizer(400, "bpe"), probe, 400) == []
    wider = tiny_lm.tokenizer(400, "bpe")
    wider.add_tokens(["<tool>"])
    assert tokenizer_differences(teacher, wider, probe, 401) == []
    other_eos = tiny_lm.tokenizer(400, "bpe")
    other_eos.eos_token = "<pad>"
    assert [p.split(":")[0] for p in tokenizer_differences(teacher, other_eos, probe)] == ["end-of-sequence token"]
    lower = tiny_lm.tokenizer(400, "bpe", lowercase=True)
    assert [p.split(":")[0] for p in tokenizer_differences(teacher, lower, probe)] == ["tokenization"]
    assert [p.split(":")[0] for p in tokenizer_differences(teacher, teacher, probe, 300)] == ["output layer"]


def test_a_student_cut_from_the_teacher_reads_the_teachers_tokens(tmp_path: Path) -> None:
    """student.architecture shares the teacher's tokenizer by construction; with hidden-mse the live teacher must also
    read the very sequence the student reads. A plain teacher directory (no chat template) whose tokenizer adds <s>:
    the teacher used to read prompts without it (chat assumed) and the student with it, one position apart."""
    tok = tiny_lm.tokenizer(400, "bpe", bos=True)
    teacher = tiny_lm.save(tmp_path / "teacher", tiny_lm.llama(tok), tok)
    raw = tiny_lm.generation_spec(teacher, teacher, tiny_lm.prompts(tmp_path / "p.jsonl", 16), tmp_path / "w")
    raw["student"] = {"architecture": {"numLayers": 1}}
    raw["loss"] = {"terms": [{"name": "token-kl"}, {"name": "hidden-mse", "weight": 0.1}]}
    ctx = RunContext.create(DistillationJobSpec.model_validate(raw), {"name": "gen"}, f"file://{tmp_path / 'w'}")
    run_label(ctx)
    assert run_train(ctx)["steps"] > 0


def test_a_live_teacher_reading_other_tokens_is_refused() -> None:
    """The per-batch guard behind the up-front check (a prompt template or special token on one side only)."""
    import torch

    same = {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.ones(1, 3)}
    train_stage._same_tokens(same, dict(same), None)
    shifted = {"input_ids": torch.tensor([[9, 5, 6, 7]])}
    words = r"read different token sequences .* teacher \[9, 5, 6, 7\], student \[5, 6, 7\]"
    with pytest.raises(ValueError, match=words):
        train_stage._same_tokens(same, shifted, "file:///m")
