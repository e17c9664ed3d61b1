"""`kubestill dev`: a local control plane with kubestill's CRDs, and optionally a node to run its Pods, for
trying things and for demos.

Nodes (`kubestill dev up --node ...`):
  none     the control plane alone (default): nothing runs Pods
  real     a real single-node cluster (containerd, kubelet, kube-proxy, CoreDNS; root only): Pods run in
           containers of the project's images (kubestill.dev.realnode, kubestill.dev.images)
  process  the process node: each container's command runs as a local process of this Python environment, not
           in a container (kubestill.dev.node); no images, no root
  auto     real where this host allows it, else the process node, saying why
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from kubestill.dev import controlplane


def _state(args: argparse.Namespace) -> Path:
    return Path(args.state_dir) if args.state_dir else controlplane.default_state_dir()


def _start_process_node(cluster: controlplane.Cluster, state: Path) -> None:
    pid_file = state / "process-node.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), 0)
            return
        except (ProcessLookupError, ValueError):
            pass
    (state / "process-node").mkdir(exist_ok=True)
    proc = controlplane._spawn([sys.executable, "-m", "kubestill.dev.node", f"--state-dir={state / 'process-node'}",
                                f"--kubeconfig={cluster.kubeconfig}"], state / "process-node.log")
    pid_file.write_text(str(proc.pid))


def _start_s3(state_dir: Path, ip: str = "127.0.0.1") -> None:
    from kubestill.dev.seaweedfs import dev_up

    s3 = dev_up(state_dir, ip=ip)
    print(f"S3 (SeaweedFS) at {s3.endpoint}, bucket s3://{s3.bucket}")
    print(f"credentials for a Secret: kubectl create secret generic kubestill-s3 -n NAMESPACE "
          f"--from-env-file={s3.env_file}   (then storageSecretRef: {{name: kubestill-s3}})")


def cmd_up(args: argparse.Namespace) -> int:
    state = _state(args)
    node_kind = args.node
    if node_kind in ("real", "auto"):
        from kubestill.dev import realnode

        try:
            node = realnode.up(state, images=("operator", "trainer", "serving"))
        except realnode.RealNodeUnavailable as err:
            if node_kind == "real":
                print(f"kubestill dev up: {err}\nThe process node runs without root or containers: "
                      "kubestill dev up --node process", file=sys.stderr)
                return 2
            print(f"{err}\n*** FALLING BACK TO THE PROCESS NODE: containers' commands run as local processes of "
                  "this Python environment, not in containers of the project's images ***", file=sys.stderr)
            node_kind = "process"
        else:
            print(f"real node {realnode.NODE_NAME} ready ({node.cluster.server}); Pods run in containerd")
            print(f"export KUBECONFIG={node.cluster.kubeconfig}")
            print(f"kubectl: {node.cluster.bin_dir / 'kubectl'}")
            if args.s3:  # on the node's address: Pods reach the host there, not on loopback
                _start_s3(node.cluster.state_dir, ip=realnode.NODE_IP)
            return 0
    cluster = controlplane.up(state)
    print(f"control plane ready at {cluster.server}")
    if node_kind == "process":
        _start_process_node(cluster, state)
        print("process node running (containers' commands run as local processes, not in containers)")
    else:
        print("no node: nothing runs Pods (kubestill dev up --node real|process|auto)")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    print(f"kubectl: {cluster.bin_dir / 'kubectl'}")
    if args.s3:
        _start_s3(cluster.state_dir)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from kubestill.dev import realnode
    from kubestill.dev.seaweedfs import dev_down

    state = _state(args)
    if dev_down(state):
        print("S3 server stopped")
    if realnode.down(state):
        print("real node and control plane stopped; host restored")
        return 0
    pid_file = state / "process-node.pid"
    if pid_file.exists():
        controlplane._stop_pid(int(pid_file.read_text()))
        pid_file.unlink()
    stopped = controlplane.down(state)
    print("control plane stopped" if stopped else "no control plane was running")
    return 0


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    from kubestill.dev import realnode

    node = realnode.load(_state(args))
    cluster = node.cluster if node else controlplane.load(_state(args))
    if cluster is None:
        print("no control plane is running: `kubestill dev up` starts one")
        return 1
    print(cluster.kubeconfig)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from kubestill.dev.demo import run_demo

    return run_demo(Path(args.state_dir) if args.state_dir else None, keep_running=args.keep_running,
                    node=args.node)


def register(sub: Any) -> None:
    dev = sub.add_parser("dev", help="a local control plane with kubestill's CRDs, and optionally a node",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dev.add_argument("--state-dir", help="where the dev cluster keeps its state (default ~/.cache/kubestill/dev)")
    verbs = dev.add_subparsers(dest="verb", required=True)
    up = verbs.add_parser("up", help="start it (or reuse the running one) and print the kubeconfig")
    up.add_argument("--node", choices=("none", "real", "process", "auto"), default="none",
                    help="what runs Pods (default none; see `kubestill dev --help`)")
    up.add_argument("--s3", action="store_true",
                    help="also start an S3 server (SeaweedFS) with a bucket, for s3:// artifact URIs")
    up.set_defaults(func=cmd_up)
    down = verbs.add_parser("down", help="stop it (and its node and S3 server) and delete its state")
    down.set_defaults(func=cmd_down)
    demo = verbs.add_parser(
        "demo", help="the whole lifecycle locally: DistillationJob -> StudentModel on Triton -> CanaryRollout"
    )
    demo.add_argument("--keep-running", action="store_true", help="leave the operator and node up afterwards")
    demo.add_argument("--node", choices=("real", "process", "auto"), default="auto",
                      help="what runs the Pods (default auto: the real node where this host allows it, else the "
                           "process node, saying why)")
    demo.set_defaults(func=cmd_demo)
    verbs.add_parser("kubeconfig", help="print the kubeconfig path of the running one").set_defaults(
        func=cmd_kubeconfig
    )

