"""A job's workdir in a bucket: every stage works on local files in a scratch directory, pulls what it reads
before it starts and pushes what it wrote when it ends; a stage output exists in the bucket only once its
manifest is there (written last), so a stage killed mid-upload leaves nothing half-written behind.

Layout under `s3://bucket/prefix` (the job's spec.output.artifactUri), each unit a manifest-closed tree:

    labels/           label stage output (rows, targets, meta, report)
    train/            the trained student, history.json, done.json
    train/checkpoint/ the resume checkpoint, versioned: `<version>/state.pt`; the manifest names the version,
                      the previous version is deleted only after the new manifest is in place
    train/best/       the best epoch's weights (training.keepBest), versioned the same way
    eval/             metrics.json, report.md, plots
    export/           the StudentModel artifact (model/ with model.onnx where exported, triton/, int8/ ...)

A killed train stage restarts in a fresh Pod (a fresh scratch directory) and resumes from the checkpoint in
the bucket. Checkpoints are uploaded in a background thread from a hard-linked snapshot, so training goes on
while they upload; the next checkpoint waits for the previous upload.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from kubestill.api.names import SCRATCH_DIR_ENV
from kubestill.api.storage import split_s3_uri

from .objectstore import MANIFEST, ObjectStore, StoreError, join

log = logging.getLogger(__name__)

SCRATCH_ENV = SCRATCH_DIR_ENV
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "label": (),
    "train": ("labels", "train", "train/checkpoint", "train/best"),
    "evaluate": ("labels", "train"),
    "export": ("labels", "train"),
}
STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {"label": ("labels",), "train": ("train",), "evaluate": ("eval",),
                                             "export": ("export",)}
VERSIONED = ("train/checkpoint", "train/best")


def scratch_root(env: Mapping[str, str] | None = None) -> Path:
    """The Pod's scratch directory (an emptyDir the operator mounts), else the system temp directory."""
    env = os.environ if env is None else env
    return Path(env.get(SCRATCH_ENV) or Path(tempfile.gettempdir()) / "kubestill-scratch")


def _local_name(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()[:16]


class ObjectWorkdir:
    """A workdir URI on S3, mirrored into `<scratch>/work/<hash>`; `root` is the local directory."""

    def __init__(self, uri: str, store: ObjectStore | None = None, scratch: Path | None = None) -> None:
        split_s3_uri(uri)  # a bad URI fails here, naming it
        self.uri = uri.rstrip("/")
        self.store = store or ObjectStore()
        self.root = (scratch or scratch_root()) / "work" / _local_name(self.uri)
        self.root.mkdir(parents=True, exist_ok=True)
        self._upload: threading.Thread | None = None
        self._upload_error: BaseException | None = None

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def pull(self, stage: str) -> None:
        """Replace the local copies of what `stage` reads with the committed trees in the bucket (the bucket is
        the truth: a fresh Pod has no local state, and a stale one must not win)."""
        for unit in STAGE_INPUTS[stage]:
            self._clear(unit)
            files = self.store.manifest_files(join(self.uri, unit))
            if files is None:
                continue
            t0 = time.monotonic()
            size = self.store.download_tree(join(self.uri, unit), self.path(unit), files)
            log.info("pulled %s (%d files, %.1f MB) in %.1fs", join(self.uri, unit), len(files), size / 1e6,
                     time.monotonic() - t0)

    def _clear(self, unit: str) -> None:
        """Remove the local copy of `unit`, but not the versioned units nested in it (pulled on their own)."""
        target = self.path(unit)
        if not target.exists():
            return
        nested = {v.split("/", 1)[1] for v in VERSIONED if v.startswith(f"{unit}/")}
        for child in target.iterdir():
            if child.name in nested:
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def push(self, stage: str) -> None:
        """Upload what `stage` wrote, each unit closed by its manifest; after train, drop the remote resume
        state (it is dead weight once the student is written)."""
        self.wait_uploads()
        for unit in STAGE_OUTPUTS[stage]:
            local = self.path(unit)
            if not local.exists():
                continue
            skip = tuple(v.split("/", 1)[1] for v in VERSIONED if v.startswith(f"{unit}/"))
            skip += tuple(p.name for p in local.iterdir() if p.name.endswith((".tmp", ".old", ".upload")))
            t0 = time.monotonic()
            manifest = self.store.upload_tree(local, join(self.uri, unit), skip=skip)
            size = sum(int(e["size"]) for e in manifest["files"].values())
            log.info("pushed %s (%d files, %.1f MB) in %.1fs", join(self.uri, unit), len(manifest["files"]),
                     size / 1e6, time.monotonic() - t0)
        if stage in ("label", "train"):
            # After train the resume state is dead weight; after label it belongs to other labels (an earlier
            # job that used the same artifactUri), and resuming from it would train on what this job never saw.
            for unit in VERSIONED:
                self.store.delete_tree(join(self.uri, unit))

    def checkpointed(self, local_dir: Path) -> None:
        """`local_dir` (train/checkpoint or train/best) was just written: make it durable in the bucket, in the
        background. A failed upload is raised at the next checkpoint or at the end of the stage."""
        self.wait_uploads()
        unit = local_dir.relative_to(self.root).as_posix()
        snapshot = local_dir.with_name(local_dir.name + ".upload")
        shutil.rmtree(snapshot, ignore_errors=True)
        shutil.copytree(local_dir, snapshot, copy_function=os.link)  # hard links: instant, and immune to renames
        version = f"v{time.time_ns() // 1_000_000:013d}"

        def upload() -> None:
            try:
                t0 = time.monotonic()
                self.store.upload_tree(snapshot, join(self.uri, unit), version=version)
                log.info("checkpoint %s uploaded as %s in %.1fs", unit, version, time.monotonic() - t0)
            except BaseException as err:  # surfaced by wait_uploads
                self._upload_error = err
            finally:
                shutil.rmtree(snapshot, ignore_errors=True)

        self._upload = threading.Thread(target=upload, name=f"upload-{unit}", daemon=True)
        self._upload.start()

    def wait_uploads(self) -> None:
        if self._upload is not None:
            self._upload.join()
            self._upload = None
        if self._upload_error is not None:
            err, self._upload_error = self._upload_error, None
            raise err

    def close(self) -> None:
        self.wait_uploads()


def fetch_input(uri: str, store: ObjectStore | None = None, cache: Path | None = None) -> Path:
    """A local copy of an input URI (a data file, a model or data directory), downloaded once per content: a
    marker beside it records the objects' ETags and sizes, and an unchanged source is not fetched again."""
    store = store or ObjectStore()
    base = (cache or scratch_root() / "inputs") / _local_name(uri.rstrip("/"))
    name = split_s3_uri(uri)[1].rsplit("/", 1)[-1] or split_s3_uri(uri)[0]
    marker = base / ".kubestill-source.json"
    single = store.is_object(uri)
    if single is not None:
        target = base / name
        listing = {name: [single.size, single.etag]}
    else:
        files = store.tree_files(uri)
        if not files:
            store.check_readable(uri)  # raises ObjectNotFound / BucketNotFound with the reason
        target = base / name
        listing = {rel: [info.size, info.etag] for rel, info in files.items()}
    if marker.exists() and target.exists() and json.loads(marker.read_text()) == listing:
        return target
    shutil.rmtree(base, ignore_errors=True)
    t0 = time.monotonic()
    size = store.download_file(uri, target) if single is not None else store.download_tree(uri, target, files)
    marker.write_text(json.dumps(listing))
    log.info("fetched %s (%.1f MB) in %.1fs", uri, size / 1e6, time.monotonic() - t0)
    return target


__all__ = ["MANIFEST", "ObjectWorkdir", "StoreError", "fetch_input", "scratch_root"]
