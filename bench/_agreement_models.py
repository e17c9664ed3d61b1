"""The real models of the live agreement bench (bench/agreement_live.py --models real), each trained and exported by
the trainer's own stages (bench/_serving_models.py): the teacher (MiniLM-L6 with a head fitted on BBC News titles),
a good student distilled from it as the demo's is (2 layers cut from the teacher, logit-kl on the teacher's
logits), and a bad one: the same recipe on the same label store with the train rows' labels shuffled (fixed seed).

They are cached under ~/.cache/kubestill/bench/ (or $XDG_CACHE_HOME) in a directory named by a digest of their
recipe (`AgreementRecipe`), so a rerun with the same recipe trains nothing. `triton_repositories` lays them out as
the Triton model repositories a StudentModel's Deployment serves, all under one model name, because the judge
sends a mirrored request to the same path on the baseline and on the candidate.

Run as a script, it does that for a test on a real node (tests/realnode/test_canary_agreement_models.py), which
runs the trainer as a program rather than importing the benches:

    python bench/_agreement_models.py DIR   # DIR/{teacher,good,bad}/repo and DIR/models.json
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from _serving_models import Served, classification_setup, distilled_student, shuffled_student
from classification import STUDENTS
from kubestill.api.v1alpha1.studentmodel import StudentModelSpec
from kubestill.builders.triton import CONFIG_KEY, build_triton_config_map
from kubestill.dev.triton import assemble_repository
from kubestill_trainer.serving.loader import load_servable

TEXT_ORDER_SEED = 13  # the held-out titles come sorted by class; live traffic mixes them
RECIPE_VERSION = 1  # bump when what a recipe builds changes, so stale caches are not reused
SERVED_NAME = "classifier"  # the Triton model name of all three: the judge asks both sides the same path


@dataclass(frozen=True)
class AgreementRecipe:
    """What the three models are built from: the first `rows` BBC News titles (2225 in all; 80/10/10 split),
    the students' `epochs`, their architecture (`student`, a key of bench/classification.py's STUDENTS) and the
    seed that shuffles the bad student's labels."""

    rows: int = 2225
    epochs: int = 2
    student: str = "cut"
    shuffle_seed: int = 7

    def cache_dir(self, cache: Path | None = None) -> Path:
        """<cache>/agreement-cls-<12 hex digits of the recipe's JSON>; default cache ~/.cache/kubestill/bench."""
        key = json.dumps({"version": RECIPE_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        root = cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kubestill" / "bench"
        return root / f"agreement-cls-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class AgreementModels:
    """The teacher (the baseline), the good and the bad candidate, and the held-out titles clients send, in a
    fixed random order (the dataset's is by class, so a window of requests in that order would hold one class)."""

    teacher: Served
    good: Served
    bad: Served
    texts: list[str]


def agreement_models(recipe: AgreementRecipe, cache: Path | None = None) -> AgreementModels:
    """Build (or reuse from the cache) the three exported models of `recipe`; minutes on a CPU the first time."""
    if recipe.student not in STUDENTS:
        raise ValueError(f"student must be one of {', '.join(sorted(STUDENTS))}, not {recipe.student!r}")
    root = recipe.cache_dir(cache)
    root.mkdir(parents=True, exist_ok=True)
    (root / "recipe.json").write_text(json.dumps(dataclasses.asdict(recipe), indent=2) + "\n")
    setup = classification_setup(root, recipe.rows, recipe.epochs, recipe.student)
    good = distilled_student(root, setup, recipe.student)
    bad = shuffled_student(root, setup, recipe.student, recipe.shuffle_seed)
    texts = list(setup.texts)
    random.Random(TEXT_ORDER_SEED).shuffle(texts)
    return AgreementModels(setup.teacher, good, bad, texts)


def offline_agreement(teacher: Served, candidate: Served, texts: Sequence[str], batch: int = 64) -> float:
    """Share of `texts` on which `candidate` answers the same top-1 LABEL as `teacher`, both loaded in-process
    exactly as their Triton model.py loads them (kubestill_trainer.serving.loader.load_servable, runtime auto).
    Requests cycling through `texts` uniformly should see this rate live. Raises ValueError on no texts."""
    if not texts:
        raise ValueError("offline agreement needs at least one text")
    answers = [_labels(item, texts, batch) for item in (teacher, candidate)]
    return float(np.mean(answers[0] == answers[1]))


def _labels(item: Served, texts: Sequence[str], batch: int) -> npt.NDArray[np.object_]:
    servable = load_servable(item.export / "model")
    out = []
    for i in range(0, len(texts), batch):
        chunk = np.array([[t.encode()] for t in texts[i:i + batch]], dtype=np.object_)
        out += [row[0] for row in servable.answer({"TEXT": chunk})["LABEL"]]
    return np.array(out, dtype=np.object_)


def triton_repository(item: Served, repo: Path, name: str = SERVED_NAME) -> Path:
    """`repo`/`name`/ as a StudentModel's Deployment serves `item`: config.pbtxt from the operator's own builder
    (the StudentModel's default serving spec, its artifact the export's absolute file:// path), model.py from the
    export's triton/ (the init container's assembly). Returns `repo`, ready for `tritonserver
    --model-repository`; the export directory must be readable at the same path where tritonserver runs."""
    wire = {"artifactUri": f"file://{item.export.resolve()}", "task": item.task}
    body = {"apiVersion": "kubestill.io/v1alpha1", "kind": "StudentModel",
            "metadata": {"name": name, "namespace": "bench", "uid": "bench"}, "spec": wire}
    config = build_triton_config_map(body, StudentModelSpec.model_validate(wire))["data"][CONFIG_KEY]
    return assemble_repository(repo, name, item.export / "triton", config)


def triton_repositories(root: Path, recipe: AgreementRecipe | None = None,
                        cache: Path | None = None) -> dict[str, Path]:
    """For a test on a real node: {"teacher" | "good" | "bad": `root`/<role>/repo}, each serving model SERVED_NAME
    (so the judge reaches both sides on one path) from its export, placed at `root`/<role>/export (hard links into
    the cache where the filesystem allows, else copies): everything tritonserver reads is under `root`, so a Pod
    mounting `root` at the same path serves it. Models of `recipe` (default AgreementRecipe()), built or taken from
    the cache; `agreement_models(...).texts` are the titles to send."""
    models = agreement_models(recipe or AgreementRecipe(), cache)
    out = {}
    for role, item in (("teacher", models.teacher), ("good", models.good), ("bad", models.bad)):
        export = root / role / "export"
        if not export.exists():
            partial = export.with_name("export.partial")  # renamed when complete: a crash leaves no half export
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(item.export, partial, copy_function=_link_or_copy)
            partial.rename(export)
        out[role] = triton_repository(dataclasses.replace(item, export=export), root / role / "repo")
    return out


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem
        shutil.copy2(source, target)


def main(argv: Sequence[str] | None = None) -> int:
    """Lay out the three models' repositories under DIR (triton_repositories) and write DIR/models.json:
    {"model": SERVED_NAME, "texts": the held-out titles in the clients' order, "offline": {"good" | "bad":
    offline_agreement with the teacher on them}, "recipe": the recipe}."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("dir", type=Path)
    defaults = AgreementRecipe()
    parser.add_argument("--rows", type=int, default=defaults.rows)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--student", default=defaults.student)
    parser.add_argument("--shuffle-seed", type=int, default=defaults.shuffle_seed)
    args = parser.parse_args(argv)
    recipe = AgreementRecipe(args.rows, args.epochs, args.student, args.shuffle_seed)
    repos = triton_repositories(args.dir, recipe)
    models = agreement_models(recipe)  # from the cache triton_repositories just filled
    offline = {role: offline_agreement(models.teacher, getattr(models, role), models.texts) for role in ("good", "bad")}
    manifest = {"model": SERVED_NAME, "texts": models.texts, "offline": offline,
                "recipe": dataclasses.asdict(recipe), "repositories": {k: str(v) for k, v in repos.items()}}
    (args.dir / "models.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps({"offline": offline, "texts": len(models.texts)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
