"""Object-storage throughput: a 500 MB artifact (one large weights file plus the small files of an exported model)
uploaded to and downloaded from a real S3 server, through the trainer's storage layer vs the raw client.

- kubestill: `ObjectStore.upload_tree` / `download_tree` (what a stage push, a pull and the Triton init step
  do): s3transfer multipart, 16 MiB parts, 4 in flight, the manifest written last, sizes checked on download.
- boto3 put/get_object: one PUT of the whole file and one streamed GET (1 MiB reads), per file.
- boto3 upload_file/download_file: boto3's managed transfer with its defaults (8 MiB parts, 10 threads).

The server is a local SeaweedFS (`weed mini`, started here) unless --endpoint is given (then credentials come
from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY). Client and server share this machine's cores, so the figures
are a floor for a real network; compare the columns, not the machines.

    python bench/storage.py --size-mb 500 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

MB = 1_000_000


def make_artifact(root: Path, size_mb: int) -> int:
    """export/-like tree: model/model.safetensors of `size_mb` (incompressible bytes) + small files."""
    weights = root / "model" / "model.safetensors"
    weights.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(8 * 1024 * 1024)
    left = size_mb * MB
    with open(weights, "wb") as f:
        while left > 0:
            f.write(block[: min(len(block), left)])
            left -= min(len(block), left)
    for name, text in (("model/config.json", "{}"), ("model/tokenizer.json", "{}" * 100_000),
                       ("model/kubestill.json", "{}"), ("triton/model.py", "# model\n" * 200),
                       ("triton/config.pbtxt", "name: 'm'\n")):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def raw_put_get(client: Any, bucket: str, src: Path, prefix: str, dst: Path) -> tuple[Callable[[], None],
                                                                                        Callable[[], None]]:
    files = [p for p in sorted(src.rglob("*")) if p.is_file()]

    def up() -> None:
        for p in files:
            with open(p, "rb") as f:
                client.put_object(Bucket=bucket, Key=f"{prefix}/{p.relative_to(src).as_posix()}", Body=f)

    def down() -> None:
        for p in files:
            rel = p.relative_to(src).as_posix()
            out = dst / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            body = client.get_object(Bucket=bucket, Key=f"{prefix}/{rel}")["Body"]
            with open(out, "wb") as f:
                for chunk in body.iter_chunks(1024 * 1024):
                    f.write(chunk)

    return up, down


def raw_managed(client: Any, bucket: str, src: Path, prefix: str, dst: Path) -> tuple[Callable[[], None],
                                                                                       Callable[[], None]]:
    files = [p for p in sorted(src.rglob("*")) if p.is_file()]

    def up() -> None:
        for p in files:
            client.upload_file(str(p), bucket, f"{prefix}/{p.relative_to(src).as_posix()}")

    def down() -> None:
        for p in files:
            rel = p.relative_to(src).as_posix()
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, f"{prefix}/{rel}", str(dst / rel))

    return up, down


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--endpoint", help="an S3 endpoint to use instead of a local SeaweedFS")
    p.add_argument("--bucket", help="an existing bucket (with --endpoint); default: a new one")
    p.add_argument("--workdir", type=Path, help="scratch directory (default: a temporary one)")
    args = p.parse_args(argv)

    from kubestill.dev.seaweedfs import start_seaweedfs
    from kubestill_trainer.objectstore import ObjectStore, S3Config

    work = Path(tempfile.mkdtemp(prefix="kubestill-bench-s3-", dir=args.workdir))
    server = None
    try:
        if args.endpoint:
            env = {**os.environ, "AWS_ENDPOINT_URL": args.endpoint}
            import boto3

            client = boto3.client("s3", endpoint_url=args.endpoint)
            where = args.endpoint
        else:
            server = start_seaweedfs(work / "weed", memory_limit="1GiB")
            env = {**server.admin.secret_data(server.endpoint)}
            client = server.client()
            where = f"local SeaweedFS ({server.endpoint})"
        bucket = args.bucket or f"bench-{uuid.uuid4().hex[:8]}"
        if not args.bucket:
            client.create_bucket(Bucket=bucket)
        store = ObjectStore(S3Config.from_env(env))
        src, dst = work / "artifact", work / "down"
        total = make_artifact(src, args.size_mb)
        results: dict[str, dict[str, list[float]]] = {}
        for r in range(args.repeats):
            prefix = f"run{r}"
            ways: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
                "kubestill ObjectStore (upload_tree / download_tree)": (
                    lambda prefix=prefix: store.upload_tree(src, f"s3://{bucket}/{prefix}/ours"),
                    lambda prefix=prefix: store.download_tree(f"s3://{bucket}/{prefix}/ours", dst)),
                "boto3 put_object / get_object": raw_put_get(client, bucket, src, f"{prefix}/put", dst),
                "boto3 upload_file / download_file (defaults)": raw_managed(client, bucket, src, f"{prefix}/mt",
                                                                            dst),
            }
            for name, (up, down) in ways.items():
                shutil.rmtree(dst, ignore_errors=True)
                t_up = timed(up)
                t_down = timed(down)
                got = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
                assert got == total, f"{name}: downloaded {got} of {total} bytes"
                row = results.setdefault(name, {"up": [], "down": []})
                row["up"].append(total / MB / t_up)
                row["down"].append(total / MB / t_down)
                print(f"  repeat {r + 1}: {name}: up {total / MB / t_up:.0f} MB/s, down {total / MB / t_down:.0f} "
                      "MB/s", flush=True)
        print(f"\n### {total / MB:.0f} MB artifact, {where}, median of {args.repeats}\n")
        print("| client | upload MB/s | download MB/s |")
        print("|---|---|---|")
        for name, row in results.items():
            print(f"| {name} | {statistics.median(row['up']):.0f} (min {min(row['up']):.0f}, max "
                  f"{max(row['up']):.0f}) | {statistics.median(row['down']):.0f} (min {min(row['down']):.0f}, max "
                  f"{max(row['down']):.0f}) |")
        load = os.getloadavg()[0]
        print(f"\n- {platform.machine()}, {os.cpu_count()} cores, load average {load:.1f} at the end; "
              "client and server on the same machine")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
