"""Artifact URIs -> local directories. Every stage reads and writes plain files under one root; a workdir on
object storage (`workdir.ObjectWorkdir`) mirrors that root to a bucket: pulled before, pushed after a stage.

- `file:///abs/path` and plain paths: the path itself
- `pvc://<claim>/<path>`: `${KUBESTILL_PVC_ROOT:-/mnt/kubestill/pvc}/<claim>/<path>` (the operator mounts
  claim <claim> at /mnt/kubestill/pvc/<claim>)
- `pkg://<import_name>[/sub/path]`: inside a Python package this interpreter can import (models and corpora from
  PyPI): a pip-installed one, or a data-only package unpacked onto sys.path (scripts/data-packages.txt)
- `s3://<bucket>/<key>`: an input (data file, model directory) is downloaded to a local cache first
  (`workdir.fetch_input`); credentials and endpoint come from the environment (`objectstore.S3Config`)
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from kubestill.api.names import PVC_ROOT, PVC_ROOT_ENV

DEFAULT_PVC_ROOT = PVC_ROOT


class StorageError(Exception):
    """A URI that cannot be resolved; the message names it."""


def resolve_uri(uri: str, env: Mapping[str, str] | None = None) -> Path:
    """The local path a URI stands for (it need not exist yet, except for pkg://; s3:// is downloaded)."""
    env = os.environ if env is None else env
    if uri.startswith("s3://"):
        from .objectstore import ObjectStore, S3Config  # boto3 is only imported by jobs that use a bucket
        from .workdir import fetch_input, scratch_root

        return fetch_input(uri, ObjectStore(S3Config.from_env(env)), scratch_root(env) / "inputs")
    if "://" not in uri:
        return Path(uri).expanduser().resolve()
    parts = urlsplit(uri)
    scheme = parts.scheme
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StorageError(f"{uri}: file:// URIs need an absolute path (file:///abs/path)")
        return Path(unquote(parts.path))
    rest = unquote(uri.split("://", 1)[1]).strip("/")
    if scheme == "pvc":
        claim, _, sub = rest.partition("/")
        if not claim:
            raise StorageError(f"{uri}: pvc:// needs a claim name (pvc://<claim>/<path>)")
        return Path(env.get(PVC_ROOT_ENV) or DEFAULT_PVC_ROOT) / claim / sub
    if scheme == "pkg":
        return _package_path(uri, rest)
    raise StorageError(f"{uri}: unsupported scheme {scheme!r} (use file://, pvc://, pkg://, s3:// or a plain path)")


def _package_path(uri: str, rest: str) -> Path:
    """`pkg://<package>/<path>` (`rest` is what follows the scheme): a file shipped inside an installed Python
    package, e.g. a data set installed with pip. Raises StorageError when the package or the file is missing."""
    name, _, sub = rest.partition("/")
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise StorageError(f"{uri}: no installed Python package named {name!r}")
    base = Path(next(iter(spec.submodule_search_locations)))
    path = base / sub if sub else base
    if not path.exists():
        raise StorageError(f"{uri}: {path} does not exist in package {name}")
    return path


class Storage(Protocol):
    """Where a stage reads and writes; `root` is a local directory for the stage's lifetime."""

    uri: str
    root: Path

    def path(self, *parts: str) -> Path: ...

    def pull(self, stage: str) -> None:
        """Make what `stage` reads available under `root`."""

    def push(self, stage: str) -> None:
        """Make what `stage` wrote durable."""

    def checkpointed(self, local_dir: Path) -> None:
        """A resume checkpoint was just written to `local_dir`."""

    def close(self) -> None: ...


class LocalStorage:
    """A workdir on a local or mounted filesystem (file://, plain paths, pvc://): nothing to pull or push."""

    def __init__(self, uri: str, env: Mapping[str, str] | None = None) -> None:
        self.uri = uri
        self.root = resolve_uri(uri, env)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def pull(self, stage: str) -> None:
        pass

    def push(self, stage: str) -> None:
        pass

    def checkpointed(self, local_dir: Path) -> None:
        pass

    def close(self) -> None:
        pass


def open_workdir(uri: str) -> Storage:
    """The workdir a URI names: a bucket mirrored to local scratch, or a local directory."""
    if uri.startswith("s3://"):
        from .workdir import ObjectWorkdir

        return ObjectWorkdir(uri)
    return LocalStorage(uri)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file so a concurrent reader sees the old or the new content, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
