"""Unreadable rows on small real files: named by file and line (data.onBadRows fail), or skipped and counted up to
data.maxBadRowShare (skip), in each input format; the label stage's command line says the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubestill.api.v1alpha1.distillationjob import DataSpec
from kubestill_trainer.data import DataError, read_rows
from kubestill_trainer.refusal import GateRefusal

from .conftest import run_trainer, write_job

LATIN1 = "Café crème".encode("latin-1")  # 0xe9 and 0xe8 alone are not UTF-8


def _jsonl(tmp_path: Path, bad_line: int = 3, rows: int = 6) -> Path:
    lines = [json.dumps({"text": f"headline number {i}", "label": "a"}).encode() for i in range(rows)]
    lines[bad_line - 1] = b'{"text": "' + LATIN1 + b'", "label": "a"}'
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _csv(tmp_path: Path) -> Path:
    path = tmp_path / "rows.csv"
    # line 3 holds a quoted field spanning two lines; the bad byte is on the record starting at line 5
    path.write_bytes(b'text,label\nfirst,a\n"second\nspans lines",b\n' + LATIN1 + b",a\nfifth,b\n")
    return path


def _text_dir(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sport").mkdir(parents=True)
    (root / "sport" / "1.txt").write_text("A title\n\nA body.")
    (root / "sport" / "2.txt").write_bytes(b"Title\n\nfirst line\n" + LATIN1 + b"\n")
    (root / "sport" / "3.txt").write_text("Another title\n\nMore.")
    return root


@pytest.mark.parametrize(("make", "where", "good"), [
    (_jsonl, "rows.jsonl:3", 5),
    (_csv, "rows.csv:5", 3),
    (_text_dir, "2.txt:4", 2),
])
def test_fail_names_file_and_line_skip_counts(make: object, where: str, good: int, tmp_path: Path) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(DataError, match=rf"{where}: field 'text': byte 0xe9 .*is not UTF-8.*data\.onBadRows: skip"):
        read_rows(path, DataSpec(uri="file:///x"))
    read = read_rows(path, DataSpec(uri="file:///x", on_bad_rows="skip", max_bad_row_share=0.5))
    assert len(read.rows) == good and len(read.bad) == 1 and read.bad[0].where.endswith(where)


def test_only_the_fields_the_job_reads_count() -> None:
    """BBC News as packaged: sports/199.txt has a Latin-1 pound sign (0xa3) in its second paragraph. A job on the
    titles reads no bad byte; one on the whole text is told where it is."""
    from kubestill_trainer.storage import resolve_uri

    from .conftest import BBC

    titles = DataSpec(uri=BBC, fields={"text": "title", "pair": "lead", "label": "label"})
    assert len(read_rows(resolve_uri(BBC), titles).rows) == 2225
    with pytest.raises(DataError, match=r"sports/199\.txt:5: field 'text': byte 0xa3 at character \d+ is not UTF-8"):
        read_rows(resolve_uri(BBC), DataSpec(uri=BBC, fields={"text": "text"}))
    skipped = read_rows(resolve_uri(BBC), DataSpec(uri=BBC, fields={"text": "body"}, on_bad_rows="skip"))
    assert len(skipped.rows) == 2224 and skipped.bad[0].id == "sports/199.txt"  # 1 in 2225 is within 1%


def test_a_bad_row_left_out_by_max_samples_harms_nothing(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, bad_line=3, rows=40)
    sample = [DataSpec(uri="file:///x", max_samples=5, seed=s) for s in range(20)]
    outcomes = set()
    for spec in sample:
        try:
            outcomes.add(len(read_rows(path, spec).rows))
        except DataError:
            outcomes.add(-1)
    assert outcomes == {5, -1}  # fails only for the seeds whose sample holds the bad row


def test_skipping_keeps_the_other_rows_ids(tmp_path: Path) -> None:
    read = read_rows(_jsonl(tmp_path), DataSpec(uri="file:///x", on_bad_rows="skip", max_bad_row_share=0.5))
    assert [r.id for r in read.rows] == ["0", "1", "3", "4", "5"]  # record 2 was the bad one


def test_invalid_json_is_a_bad_row_too(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "ok"}\n{"text": oops}\n[1, 2]\n')
    read = read_rows(path, DataSpec(uri="file:///x", on_bad_rows="skip", max_bad_row_share=1))
    assert [(b.where.rsplit("/", 1)[-1], b.reason.split(":")[0]) for b in read.bad] == [
        ("rows.jsonl:2", "invalid JSON"), ("rows.jsonl:3", "not a JSON object")]


@pytest.mark.parametrize(("cap", "refused"), [(None, True), (0.2, False), (0.1, True)])
def test_skip_is_capped(cap: float | None, refused: bool, tmp_path: Path) -> None:
    """One bad row in six is 16.7%: above the default cap (1%) and 10%, within 20%."""
    spec = DataSpec(uri="file:///x", on_bad_rows="skip", max_bad_row_share=cap)
    if refused:
        with pytest.raises(GateRefusal, match=r"1 of 6 rows \(16\.7%\) are unreadable, above data\.maxBadRowShare"):
            read_rows(_jsonl(tmp_path), spec)
    else:
        assert len(read_rows(_jsonl(tmp_path), spec).bad) == 1


def test_label_stage_names_the_line_and_exits_1_or_3(tmp_path: Path) -> None:
    """The real command line: fail (exit 1, file and line in the one-line reason); skip over the cap (exit 3).
    Both stop before any model is loaded."""
    data = _jsonl(tmp_path)
    spec = {"task": "classification", "teacher": {"modelUri": "file:///nonexistent"},
            "student": {"baseModelUri": "file:///nonexistent"},
            "data": {"uri": f"file://{data}", "fields": {"label": "label"}},
            "loss": {"terms": [{"name": "logit-kl"}]},
            "output": {"studentModelName": "s", "artifactUri": f"file://{tmp_path / 'work'}"}}
    failed = run_trainer(["label", "--config", str(write_job(tmp_path / "fail.yaml", spec))], timeout=120)
    assert failed.returncode == 1
    assert "rows.jsonl:3: field 'text': byte 0xe9 at character 4 is not UTF-8" in failed.stderr, failed.stderr[-2000:]
    spec["data"] = {**spec["data"], "onBadRows": "skip"}
    refused = run_trainer(["label", "--config", str(write_job(tmp_path / "skip.yaml", spec))], timeout=120)
    assert refused.returncode == 3, refused.stderr[-2000:]
    assert "gate failed at stage label: 1 of 6 rows (16.7%) are unreadable" in refused.stderr
