"""`kubestill dev`: a local, node-less control plane with kubestill's CRDs, for trying things and for demos."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kubestill.dev import controlplane


def cmd_up(args: argparse.Namespace) -> int:
    cluster = controlplane.up(Path(args.state_dir) if args.state_dir else None)
    print(f"control plane ready at {cluster.server}")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    print(f"kubectl: {cluster.bin_dir / 'kubectl'}")
    if args.s3:
        from kubestill.dev.seaweedfs import dev_up

        s3 = dev_up(cluster.state_dir)
        print(f"S3 (SeaweedFS) at {s3.endpoint}, bucket s3://{s3.bucket}")
        print(f"credentials for a Secret: kubectl create secret generic kubestill-s3 -n NAMESPACE "
              f"--from-env-file={s3.env_file}   (then storageSecretRef: {{name: kubestill-s3}})")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from kubestill.dev.seaweedfs import dev_down

    state = Path(args.state_dir) if args.state_dir else controlplane.default_state_dir()
    if dev_down(state):
        print("S3 server stopped")
    stopped = controlplane.down(state)
    print("control plane stopped" if stopped else "no control plane was running")
    return 0


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    cluster = controlplane.load(Path(args.state_dir) if args.state_dir else None)
    if cluster is None:
        print("no control plane is running: `kubestill dev up` starts one")
        return 1
    print(cluster.kubeconfig)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from kubestill.dev.demo import run_demo

    return run_demo(Path(args.state_dir) if args.state_dir else None, keep_running=args.keep_running)


def register(sub: Any) -> None:
    dev = sub.add_parser("dev", help="a local control plane (etcd + kube-apiserver) with kubestill's CRDs")
    dev.add_argument("--state-dir", help="where the dev cluster keeps its state (default ~/.cache/kubestill/dev)")
    verbs = dev.add_subparsers(dest="verb", required=True)
    up = verbs.add_parser("up", help="start it (or reuse the running one) and print the kubeconfig")
    up.add_argument("--s3", action="store_true",
                    help="also start an S3 server (SeaweedFS) with a bucket, for s3:// artifact URIs")
    up.set_defaults(func=cmd_up)
    verbs.add_parser("down", help="stop it and delete its state").set_defaults(func=cmd_down)
    demo = verbs.add_parser(
        "demo", help="the whole lifecycle locally: DistillationJob -> StudentModel on Triton -> CanaryRollout"
    )
    demo.add_argument("--keep-running", action="store_true", help="leave the operator and node up afterwards")
    demo.set_defaults(func=cmd_demo)
    verbs.add_parser("kubeconfig", help="print the kubeconfig path of the running one").set_defaults(
        func=cmd_kubeconfig
    )
