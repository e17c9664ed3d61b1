"""LoRA and QLoRA students (peft; QLoRA with a bitsandbytes 4-bit NF4 base on the CPU): only the adapters
train, the loss goes down, and the saved student is the float base with the adapters merged in (or, with
merge: false, the adapters beside a reference to the base) and answers like the trained adapters do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kubestill.api.v1alpha1 import DistillationJobSpec
from kubestill_trainer.losses import LossDims, WeightedLoss
from kubestill_trainer.outputs import LossInputs
from kubestill_trainer.tasks.base import Row
from kubestill_trainer.tasks.generation import Generation, GenerationModel

from .test_generation_e2e import smollm2  # noqa: F401 - the session fixture (GGUF -> safetensors)

pytestmark = pytest.mark.slow

PROMPTS = ["What is the capital of France?", "Name a fruit.", "What colour is the sky?", "Say hello."]
ANSWERS = ["Paris is the capital.", "An apple.", "The sky is blue.", "Hello there!"]


@pytest.fixture(scope="module")
def small_base(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """A 4-layer cut of SmolLM2 as a plain Hugging Face directory: a quick base model to adapt."""
    from kubestill_trainer.tasks.generation_lm import drop_layers, load_causal_lm, load_tokenizer

    out = tmp_path_factory.mktemp("base") / "smol4"
    drop_layers(load_causal_lm(smollm2), [0, 9, 19, 29]).save_pretrained(str(out))
    load_tokenizer(smollm2).save_pretrained(str(out))
    return out


def _task(base: Path, qlora: bool, merge: bool) -> Generation:
    return Generation(DistillationJobSpec.model_validate({
        "task": "generation", "teacher": {"modelUri": f"file://{base}"},
        "student": {"baseModelUri": f"file://{base}", "lora": {"r": 8, "alpha": 16, "dropout": 0.0,
                                                                "qlora": qlora, "merge": merge}},
        "data": {"uri": "file:///unused.jsonl"}, "labeling": {"maxNewTokens": 8},
        "loss": {"terms": [{"name": "sequence-kd"}]},
        "output": {"studentModelName": "s", "artifactUri": "file:///unused"}}))


@pytest.mark.parametrize(("qlora", "merge"), [(False, True), (True, True), (False, False)],
                         ids=["lora-merged", "qlora-merged", "lora-adapter"])
def test_lora_trains_adapters_only_and_saves_what_it_learned(small_base: Path, tmp_path: Path, qlora: bool,
                                                             merge: bool) -> None:
    torch.manual_seed(0)
    task = _task(small_base, qlora, merge)
    model = task.build_student({}, None)
    assert isinstance(model, GenerationModel)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    if qlora:
        import bitsandbytes as bnb

        assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())

    tok = model.tokenizer
    ids = [tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for a in ANSWERS]
    rows = [Row(str(i), p, json.dumps(t)) for i, (p, t) in enumerate(zip(PROMPTS, ids, strict=True))]
    tokens = torch.full((len(rows), 8), -100, dtype=torch.long)
    for i, t in enumerate(ids):
        tokens[i, : min(8, len(t))] = torch.tensor(t[:8])
    loss_fn = WeightedLoss(task.spec.loss.terms, LossDims())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    feats = model.encode(rows, 64)
    losses = []
    model.train()
    targets = {"token_ids": tokens.clamp_min(-1), "topk_ids": tokens.clamp_min(0)[..., None],
               "topk_logprobs": torch.zeros(4, 8, 1)}
    for _ in range(8):
        out = model(feats)
        loss, _ = loss_fn(LossInputs(student=out, teacher=task.teacher_outputs(targets), labels=tokens))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses

    model.eval()
    with torch.no_grad():
        trained = model(feats).logits
    model.save(tmp_path / "student")
    card = json.loads((tmp_path / "student" / "kubestill.json").read_text())
    assert card["adapter"] is (not merge)
    assert (tmp_path / "student" / "adapter").exists() is (not merge)
    reloaded = task.load_model(tmp_path / "student")
    assert not any("lora_" in n for n, _ in reloaded.named_parameters()) or not merge
    with torch.no_grad():
        again = reloaded(feats).logits
    if qlora:
        # Merged into the float base: close to the 4-bit-base model that trained, not equal to it.
        assert torch.nn.functional.cosine_similarity(again, trained, dim=-1).mean() > 0.95
    else:
        torch.testing.assert_close(again, trained, atol=2e-3, rtol=1e-3)
