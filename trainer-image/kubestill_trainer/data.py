"""Reading input rows (jsonl, csv, text-dir) and the deterministic split.

A text directory holds one sub-directory per class with one document per file (BBC News's layout). Each
document exposes the fields `text` (whole document), `title` (first line), `body` (the rest), `lead`
(first paragraph of the body), `label` (the directory name) and `file`; `data.fields` picks among them.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from kubestill.api.v1alpha1.distillationjob import DataFormat, DataSpec

from .tasks.base import Row


class DataError(Exception):
    """Input data that cannot be read; the message names the file and the problem."""


def detect_format(path: Path, given: str | None) -> DataFormat:
    if given:
        return DataFormat(given)
    if path.is_dir():
        return DataFormat.TEXT_DIR
    if path.suffix in (".jsonl", ".ndjson"):
        return DataFormat.JSONL
    if path.suffix in (".csv", ".tsv"):
        return DataFormat.CSV
    raise DataError(f"{path}: cannot tell the format from the name; set data.format (jsonl, csv, text-dir)")


def _text_dir_records(root: Path) -> Iterator[dict[str, Any]]:
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        for file in sorted(label_dir.glob("*.txt")):
            raw = file.read_text(errors="replace").strip()
            title, _, body = raw.partition("\n")
            body = body.strip()
            lead = body.split("\n\n", 1)[0].strip() if body else ""
            yield {"text": raw, "title": title.strip(), "body": body, "lead": lead, "label": label_dir.name,
                   "file": f"{label_dir.name}/{file.name}"}


def _records(path: Path, fmt: DataFormat) -> Iterator[dict[str, Any]]:
    if fmt == DataFormat.TEXT_DIR:
        if not path.is_dir():
            raise DataError(f"{path}: text-dir data must be a directory")
        yield from _text_dir_records(path)
    elif fmt == DataFormat.JSONL:
        with path.open() as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}:{n}: invalid JSON: {e.msg}") from None
    else:
        with path.open(newline="") as f:
            yield from csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")


def _field(record: Mapping[str, Any], name: str | None) -> str | None:
    if name is None:
        return None
    value = record.get(name)
    return None if value is None else str(value)


def load_rows(path: Path, data: DataSpec) -> list[Row]:
    """All rows of the input, ids stable across runs (`id` field if present, else the row number)."""
    if not path.exists():
        raise DataError(f"{path}: input data does not exist")
    fmt = detect_format(path, data.format)
    fields = data.fields
    rows: list[Row] = []
    for n, record in enumerate(_records(path, fmt)):
        if fields.text not in record:
            raise DataError(f"{path}: row {n} has no field {fields.text!r} (data.fields.text)")
        rid = str(record.get("id") or record.get("file") or n)
        rows.append(Row(id=rid, text=str(record[fields.text] or ""), pair=_field(record, fields.pair),
                        label=_field(record, fields.label), segment=_field(record, fields.segment)))
    if len({r.id for r in rows}) != len(rows):
        raise DataError(f"{path}: row ids are not unique")
    if data.max_samples is not None and len(rows) > data.max_samples:
        # A deterministic sample (by hashed id), so max_samples does not just take the first class of a
        # text directory sorted by label.
        rows = sorted(rows, key=lambda r: _hash(data.seed, "sample", r.id))[: data.max_samples]
    return rows


def _hash(seed: int, salt: str, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{salt}:{key}".encode()).digest()[:8], "big")


def split_rows(ids: Sequence[str], train: float, validation: float, seed: int) -> dict[str, str]:
    """Deterministic split by hashed id: the same ids and seed give the same split on any machine,
    whatever the input order. Returns id -> train|validation|test."""
    order = sorted(ids, key=lambda i: _hash(seed, "split", i))
    n = len(order)
    n_train = round(n * train)
    n_val = round(n * validation)
    if n >= 3:  # every split non-empty when there is enough data
        n_train = min(max(n_train, 1), n - 2)
        n_val = min(n_val, n - n_train - 1)
    out: dict[str, str] = {}
    for k, rid in enumerate(order):
        out[rid] = "train" if k < n_train else "validation" if k < n_train + n_val else "test"
    return out
