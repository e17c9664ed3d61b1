"""The storage commands the operator runs, light enough for a short-lived Pod (boto3 only, no torch):

    python -m kubestill_trainer.storage_cli check --read s3://b/data.jsonl --write s3://b/runs/x
        the early check Job: each --read URI must name an object or a non-empty tree, each --write URI's
        bucket must accept a small probe object (written and deleted)
    python -m kubestill_trainer.storage_cli download s3://b/runs/x/export /mnt/kubestill/artifact
        the StudentModel's init step: the artifact tree (as its manifest lists it) into the model repository

On failure both exit 1 and leave a `CheckResult` (JSON: ok, reason, uri, message) in the termination log, which
the operator turns into a condition; credentials from the environment are never printed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kubestill.api.storage import CheckResult, StorageReason, is_s3

from .objectstore import ObjectStore, StoreError
from .termination import install_redaction, redact, termination_path

log = logging.getLogger("kubestill_trainer.storage")


def check(store: ObjectStore, reads: Sequence[str], writes: Sequence[str]) -> CheckResult:
    for uri in [*reads, *writes]:
        if not is_s3(uri):
            return CheckResult(ok=False, reason=StorageReason.INVALID_URI, uri=uri, message=f"{uri}: not s3://")
    try:
        for uri in reads:
            kind = store.check_readable(uri)
            log.info("readable: %s (%s)", uri, kind)
        for uri in writes:
            store.check_writable(uri)
            log.info("writable: %s", uri)
    except StoreError as err:
        return err.result()
    return CheckResult(ok=True, message=f"{len(reads)} readable, {len(writes)} writable")


def download(store: ObjectStore, uri: str, dest: Path) -> CheckResult:
    try:
        t0 = time.monotonic()
        files = store.tree_files(uri)
        if not files:
            store.check_readable(uri)  # names the reason: no bucket, no object, no access
        size = store.download_tree(uri, dest, files)
    except StoreError as err:
        return err.result()
    seconds = time.monotonic() - t0
    return CheckResult(ok=True, uri=uri, message=f"downloaded {len(files)} files, {size / 1e6:.1f} MB in "
                       f"{seconds:.1f}s to {dest}")


def finish(result: CheckResult) -> int:
    text = redact(result.to_text())
    print(text, flush=True)
    if not result.ok:
        path = termination_path()
        if path is not None:
            try:
                path.write_text(text[:4096])
            except OSError as e:
                print(f"could not write {path}: {e}", file=sys.stderr)
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kubestill_trainer.storage_cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="check that URIs are readable / writable with this Pod's credentials")
    c.add_argument("--read", action="append", default=[], metavar="URI")
    c.add_argument("--write", action="append", default=[], metavar="URI")
    d = sub.add_parser("download", help="download an artifact tree")
    d.add_argument("uri")
    d.add_argument("dest", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_redaction()
    store = ObjectStore()
    if args.command == "check":
        return finish(check(store, args.read, args.write))
    return finish(download(store, args.uri, args.dest))


if __name__ == "__main__":
    sys.exit(main())
