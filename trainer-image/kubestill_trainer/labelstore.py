"""The label stage's output on disk, read by train and evaluate.

labels/rows.jsonl          kept rows with their split ({"id","text","pair","label","segment","split"}): train,
                           validation, test, or test-dropped (a test row the confidence filter dropped, kept
                           only for the evaluation on the unfiltered test split; never trained on)
labels/targets.safetensors row-aligned teacher targets, plus "_confidence"
labels/meta.json           task facts (class names, confidence temperature, teacher kind, format markers)
labels/report.json         filter reasons and counts, split sizes
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from .outputs import Array
from .tasks.base import Row

CONFIDENCE = "_confidence"
TEST_DROPPED = "test-dropped"


@dataclass
class Labels:
    rows: list[Row]
    splits: list[str]
    targets: dict[str, Array]
    meta: dict[str, Any]

    def subset(self, split: str) -> tuple[list[Row], dict[str, Array]]:
        """The rows of one split and their row-aligned targets."""
        return self.subset_of((split,))

    def subset_of(self, splits: tuple[str, ...]) -> tuple[list[Row], dict[str, Array]]:
        """The rows of any of `splits`, in stored order, and their row-aligned targets."""
        idx = [i for i, s in enumerate(self.splits) if s in splits]
        return [self.rows[i] for i in idx], {k: v[idx] for k, v in self.targets.items()}


def save_labels(root: Path, labels: Labels, report: dict[str, Any]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with (root / "rows.jsonl.tmp").open("w") as f:
        for row, split in zip(labels.rows, labels.splits, strict=True):
            f.write(json.dumps({**row.to_json(), "split": split}) + "\n")
    save_file({k: np.ascontiguousarray(v) for k, v in labels.targets.items()}, str(root / "targets.safetensors"))
    (root / "meta.json").write_text(json.dumps(labels.meta, indent=2) + "\n")
    (root / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    # rows.jsonl last: its presence marks a complete label stage.
    (root / "rows.jsonl.tmp").replace(root / "rows.jsonl")


def load_labels(root: Path) -> Labels:
    rows_file = root / "rows.jsonl"
    if not rows_file.exists():
        raise FileNotFoundError(f"{rows_file} is missing: run the label stage first")
    rows, splits = [], []
    for line in rows_file.read_text().splitlines():
        data = json.loads(line)
        rows.append(Row.from_json(data))
        splits.append(str(data["split"]))
    targets = load_file(str(root / "targets.safetensors"))
    meta = json.loads((root / "meta.json").read_text())
    return Labels(rows, splits, dict(targets), meta)
