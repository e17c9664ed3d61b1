"""Write a one-layer image archive (the `docker save` layout that `ctr images import` reads) from files on
disk, with Python's tarfile: the real node's sandbox image is the `pause` binary alone, and needs no builder."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def single_layer_archive(target: Path, name: str, files: dict[str, Path], config: dict[str, object]) -> Path:
    """`target` holding image `name`: `files` ({path in image: file here}, mode kept) as one layer, and
    `config` as the image's runtime config (Entrypoint, User, Env ...). Deterministic: same input, same bytes."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for inside, source in sorted(files.items()):
            info = tarfile.TarInfo(inside.lstrip("/"))
            data = source.read_bytes()
            info.size, info.mode, info.mtime = len(data), source.stat().st_mode & 0o7777, 0
            tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = _sha256(layer_bytes)
    image_config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created_by": "kubestill.dev.archive"}],
    }, sort_keys=True).encode()
    config_name = f"{_sha256(image_config)}.json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [name], "Layers": [f"{diff_id}/layer.tar"]}]).encode()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in ((f"{diff_id}/layer.tar", layer_bytes), (config_name, image_config),
                             ("manifest.json", manifest)):
            info = tarfile.TarInfo(member)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(target)
    return target
