"""Reading input rows (jsonl, csv, text-dir) and the deterministic split.

A text directory holds one sub-directory per class with one document per file (BBC News's layout). Each
document exposes the fields `text` (whole document), `title` (first line), `body` (the rest), `lead`
(first paragraph of the body), `label` (the directory name) and `file`; `data.fields` picks among them.

Unreadable rows (a byte that is not UTF-8, a line that is not a JSON object) are named by file and line and
handled per `data.onBadRows`: fail on the first, or skip them, counted, up to `data.maxBadRowShare`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubestill.api.v1alpha1.distillationjob import DEFAULT_MAX_BAD_ROW_SHARE, BadRowPolicy, DataFormat, DataSpec

from .refusal import GateRefusal
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


@dataclass(frozen=True)
class BadRow:
    """A row that cannot be read: where (`path:line`) and why."""

    where: str
    reason: str
    id: str = ""


@dataclass
class RowsRead:
    """The readable rows and the rows left out as unreadable (data.onBadRows skip)."""

    rows: list[Row]
    bad: list[BadRow] = field(default_factory=list)


# Files are read with errors="surrogateescape": a byte that is not UTF-8 becomes one lone surrogate U+DC80..U+DCFF
# (PEP 383), so the reader keeps going, and a row is bad only when a field the job reads holds one (a stray byte
# in a column or a paragraph the job never reads harms nothing), named with its file and line instead of a bare
# UnicodeDecodeError for the whole file.
_UNDECODED = re.compile("[\udc80-\udcff]")


def _not_utf8(text: str) -> str | None:
    """Why `text` (read with surrogateescape) is not UTF-8, or None when it is."""
    match = _UNDECODED.search(text)
    if match is None:
        return None
    return f"byte 0x{ord(match.group()) - 0xDC00:02x} at character {match.start() + 1} is not UTF-8"


# A record and where it starts ("path:line"); a BadRow when it cannot even be parsed.
Located = tuple[str, dict[str, Any]] | BadRow


def _text_dir_records(root: Path) -> Iterator[Located]:
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        for file in sorted(label_dir.glob("*.txt")):
            raw = file.read_bytes().decode("utf-8", "surrogateescape")
            bad = _UNDECODED.search(raw)
            line = raw[: bad.start()].count("\n") + 1 if bad else 1  # a document: point at its bad byte
            raw = raw.strip()
            title, _, body = raw.partition("\n")
            body = body.strip()
            lead = body.split("\n\n", 1)[0].strip() if body else ""
            yield f"{file}:{line}", {"text": raw, "title": title.strip(), "body": body, "lead": lead,
                                     "label": label_dir.name, "file": f"{label_dir.name}/{file.name}"}


def _jsonl_records(path: Path) -> Iterator[Located]:
    with path.open(encoding="utf-8", errors="surrogateescape") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield BadRow(f"{path}:{n}", f"invalid JSON: {e.msg}")
                continue
            yield (f"{path}:{n}", record) if isinstance(record, dict) else BadRow(f"{path}:{n}", "not a JSON object")


def _csv_records(path: Path) -> Iterator[Located]:
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
        if (why := _not_utf8(",".join(reader.fieldnames or []))) is not None:
            raise DataError(f"{path}:1: the header row is unreadable: {why}")
        while True:
            line = reader.line_num + 1  # where the next record starts (a quoted field may span lines)
            try:
                record = next(reader)
            except StopIteration:
                return
            yield f"{path}:{line}", record


def _records(path: Path, fmt: DataFormat) -> Iterator[Located]:
    if fmt == DataFormat.TEXT_DIR:
        if not path.is_dir():
            raise DataError(f"{path}: text-dir data must be a directory")
        yield from _text_dir_records(path)
    elif fmt == DataFormat.JSONL:
        yield from _jsonl_records(path)
    else:
        yield from _csv_records(path)


def _field(record: Mapping[str, Any], name: str | None) -> str | None:
    """The field's value as text; None when the field is unset, absent, null or empty (an empty CSV cell)."""
    if name is None:
        return None
    value = record.get(name)
    return None if value is None or value == "" else str(value)


def _row(where: str, record: Mapping[str, Any], n: int, data: DataSpec) -> Row | BadRow:
    """The row of one record, or a BadRow when a field the job reads is not UTF-8."""
    fields = data.fields
    if fields.text not in record:
        raise DataError(f"{where}: row {n} has no field {fields.text!r} (data.fields.text)")
    rid = str(record.get("id") or record.get("file") or n)
    row = Row(id=rid, text=str(record[fields.text] or ""), pair=_field(record, fields.pair),
              label=_field(record, fields.label), segment=_field(record, fields.segment))
    for name, value in (("id", rid), (fields.text, row.text), (fields.pair, row.pair), (fields.label, row.label),
                        (fields.segment, row.segment)):
        if value is not None and (why := _not_utf8(value)) is not None:
            return BadRow(where, f"field {name!r}: {why}", rid)
    return row


def _check_bad_rows(bad: list[BadRow], total: int, data: DataSpec) -> None:
    """Apply data.onBadRows: raise DataError on the first bad row (fail), GateRefusal above the cap (skip)."""
    if not bad:
        return
    if data.on_bad_rows == BadRowPolicy.FAIL:
        more = f" ({len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
        raise DataError(f"{bad[0].where}: {bad[0].reason}{more}; fix the data or set data.onBadRows: skip")
    cap = DEFAULT_MAX_BAD_ROW_SHARE if data.max_bad_row_share is None else data.max_bad_row_share
    share = len(bad) / total
    if share > cap:
        raise GateRefusal(f"{len(bad)} of {total} rows ({share:.1%}) are unreadable, above data.maxBadRowShare "
                          f"{cap:g}; the first at {bad[0].where}: {bad[0].reason}")


def read_rows(path: Path, data: DataSpec) -> RowsRead:
    """The rows the job uses, ids stable across runs (`id` field if present, else the record number, counting
    bad rows, so skipping one does not renumber the others), and the unreadable ones, per data.onBadRows.
    data.maxSamples picks among both before the policy applies: a bad row the job does not use harms nothing.

    Raises DataError (a missing file or field, a bad row under `fail`) or GateRefusal (bad rows above
    data.maxBadRowShare under `skip`)."""
    if not path.exists():
        raise DataError(f"{path}: input data does not exist")
    items: list[Row | BadRow] = []
    for n, located in enumerate(_records(path, detect_format(path, data.format))):
        items.append(BadRow(located.where, located.reason, str(n)) if isinstance(located, BadRow)
                     else _row(*located, n, data))
    if data.max_samples is not None and len(items) > data.max_samples:
        # A deterministic sample (by hashed id), so max_samples does not just take the first class of a
        # text directory sorted by label.
        items = sorted(items, key=lambda r: _hash(data.seed, "sample", r.id))[: data.max_samples]
    rows = [r for r in items if isinstance(r, Row)]
    bad = [r for r in items if isinstance(r, BadRow)]
    _check_bad_rows(bad, len(items), data)
    if len({r.id for r in rows}) != len(rows):
        raise DataError(f"{path}: row ids are not unique")
    return RowsRead(rows, bad)


def load_rows(path: Path, data: DataSpec) -> list[Row]:
    """The readable rows of the input (see `read_rows`)."""
    return read_rows(path, data).rows


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
