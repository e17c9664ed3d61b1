"""A real single-node Kubernetes on this machine, for tests and `kubestill dev up --node real` (root only).

On top of a control plane made for a node (kubestill.dev.controlplane with NodeAccess: Node,RBAC, kubelet client
certificate, ServiceAccount tokens, the controller manager's default controllers) it runs Debian's containerd,
runc and CNI plugins, and kubelet, kube-scheduler, kube-proxy (iptables) and CoreDNS built from Go modules
(tests/cluster/build.sh). Pods run the project's own images (kubestill.dev.images), imported into containerd.

Facts this relies on, measured on these machines (2-core Debian 12 VMs, cgroup v1):
- The VM withholds CAP_SYS_RESOURCE, so runc cannot give a container a negative oom_score_adj and every sandbox
  failed ("can't get final child's PID from pipe: EOF"): containerd's `restrict_oom_score_adj`.
- Kubernetes >= 1.35 refuses cgroup v1 unless `failCgroupV1: false`; containerd 1.6 cannot tell the kubelet its
  cgroup driver, so both use cgroupfs. Pods live under the cgroup /kubestill, so teardown knows what is ours.
- No registry is reachable: the sandbox image is the `pause` built from Go; the kubelet never garbage-collects
  images (`imageGCHighThresholdPercent: 100`), as nothing could pull them back.
- The kubelet refuses a loopback node IP, and Pods must reach the API server: the node's address (NODE_IP)
  lives on a link of its own (a bridge without ports: this kernel has no dummy driver), where the API server,
  the kubelet and CoreDNS listen. The Service range is routed into that link, so a packet to a ClusterIP that
  kube-proxy has not (yet) rewritten is dropped on this machine instead of leaving it.
- The kubelet rewrites six host sysctls, the bridge plugin turns on IP forwarding: saved and restored.
Teardown stops everything through CRI first (so CNI releases each Pod's addresses and rules), then removes what
the node added to the host: mounts, cgroups, links, routes, iptables chains, sysctls, directories.
kubestill.dev.host.Footprint checks that nothing is left.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import archive, controlplane, host, realnode_config
from .controlplane import Cluster, NodeAccess, _spawn, _stop_pid

log = logging.getLogger("kubestill.realnode")

NODE_NAME = "kubestill-node"
NODE_IP = "10.245.0.1"
NODE_LINK = "kubestill0"
BRIDGE = "kubestill-cni0"
POD_CIDR = "10.244.0.0/24"
SERVICE_IP = "10.0.0.1"  # first address of controlplane.SERVICE_CIDR
CGROUP_ROOT = "kubestill"
LOCK = Path("/run/kubestill-real-node.json")
SYSCTLS = (
    # the kubelet's (pkg/kubelet/cm: setupKernelTunables)
    "vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes",
    # the bridge plugin's isGateway, kube-proxy's
    "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
)
# Stop order: what acts on Pods first, the runtime last (the control plane is stopped by controlplane.stop).
COMPONENTS = ("coredns", "kube-proxy", "kube-scheduler", "kubelet")


class RealNodeUnavailable(RuntimeError):
    """This host cannot run a real node; `reasons` says why, one line each."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("a real node cannot run here:\n  - " + "\n  - ".join(reasons))
        self.reasons = reasons


@dataclass
class RealNode:
    """A running node: its control plane, the host processes it started and what it changed on the host."""

    cluster: Cluster
    state_dir: Path
    containerd_root: Path
    pids: dict[str, int] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)
    created_paths: list[str] = field(default_factory=list)
    iptables_before: dict[str, list[str]] = field(default_factory=dict)

    @property
    def socket(self) -> Path:
        return self.state_dir / "run" / "containerd.sock"

    @property
    def bin_dir(self) -> Path:
        return self.cluster.bin_dir

    def ctr(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", f"--address={self.socket}", "-n", "k8s.io", *args], capture_output=True,
                              text=True, check=check, timeout=timeout)

    def crictl(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        endpoint = f"unix://{self.socket}"
        return subprocess.run([str(self.bin_dir / "crictl"), f"--runtime-endpoint={endpoint}",
                               f"--image-endpoint={endpoint}", "--timeout=60s", *args],
                              capture_output=True, text=True, check=check, timeout=timeout)

    def import_image(self, archive: Path) -> None:
        """Load a docker-archive or OCI archive into containerd's k8s.io namespace (what the kubelet sees)."""
        self.ctr("images", "import", str(archive))

    def has_image(self, name: str) -> bool:
        return name in self.ctr("images", "ls", "-q", check=False).stdout.split()

    def save(self) -> None:
        data = {**asdict(self), "cluster": json.loads(self.cluster.to_json())}
        (self.state_dir / "node.json").write_text(json.dumps(data, indent=2, default=str))

    @classmethod
    def load(cls, state_dir: Path) -> RealNode | None:
        path = state_dir / "node.json"
        if not path.exists():
            return None
        d = json.loads(path.read_text())
        return cls(cluster=Cluster.from_json(json.dumps(d["cluster"])), state_dir=Path(d["state_dir"]),
                   containerd_root=Path(d["containerd_root"]), pids=d["pids"], sysctls=d["sysctls"],
                   created_paths=d["created_paths"], iptables_before=d["iptables_before"])


def _start_network() -> None:
    # A bridge without ports: a dummy link (this kernel has no dummy driver) that drops what is routed into it.
    host.sh("ip", "link", "add", NODE_LINK, "type", "bridge")
    host.sh("ip", "addr", "add", f"{NODE_IP}/32", "dev", NODE_LINK)
    host.sh("ip", "link", "set", NODE_LINK, "up")
    host.sh("ip", "route", "add", controlplane.SERVICE_CIDR, "dev", NODE_LINK)


def _wait(what: str, ready: Callable[[], bool], timeout: float, procs: dict[str, int], logs: Path) -> None:
    """Poll `ready()` until true; fail early, with its log, when one of our processes died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, pid in procs.items():
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    tail = (logs / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{name} exited while waiting for {what}:\n{tail}")
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not after {timeout:.0f}s (logs in {logs})")


def start(state_dir: Path, bin_dir: Path | None = None, *, containerd_root: Path | None = None,
          images: tuple[Path, ...] = ()) -> RealNode:
    """Start the control plane and the node, import `images` (archives), wait until the Node is Ready and
    schedulable and the default ServiceAccount exists. Raises RealNodeUnavailable when the host cannot."""
    bins = controlplane.ensure_binaries(bin_dir)
    reasons = host.missing(bins)
    if LOCK.exists():
        owner = Path(json.loads(LOCK.read_text())["stateDir"])
        if load(owner) is not None:
            reasons.append(f"a real node is already running from {owner} (kubestill dev down --state-dir ...)")
        else:  # its starter died without stopping it (SIGKILL): undo what it left, as its stop would have
            stale = RealNode.load(owner)
            if stale is not None:
                log.warning("cleaning up after the real node of %s, whose processes are gone", owner)
                stop(stale, remove_state=False)
            LOCK.unlink(missing_ok=True)
    if reasons:
        raise RealNodeUnavailable(reasons)
    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    LOCK.write_text(json.dumps({"stateDir": str(state_dir), "pid": os.getpid()}))
    node = RealNode(cluster=Cluster(state_dir=state_dir / "controlplane", bin_dir=bins, server="", token="",
                                    ca_file=Path(), kubeconfig=Path()),
                    state_dir=state_dir, containerd_root=containerd_root or realnode_config.default_containerd_root())
    node.created_paths = [p for p in host.HOST_PATHS if not os.path.lexists(p)]
    node.sysctls = {name: value for name in SYSCTLS if (value := host.read_sysctl(name)) is not None}
    node.iptables_before = host.iptables_chains()
    node.save()
    try:
        _start(node, images)
    except BaseException:
        stop(node)
        raise
    return node


def _start(node: RealNode, images: tuple[Path, ...]) -> None:
    state, logs = node.state_dir, node.state_dir / "logs"
    logs.mkdir()
    t0 = time.monotonic()
    _start_network()
    node.cluster = controlplane.start(state / "controlplane", node.bin_dir,
                                      node=NodeAccess(NODE_NAME, NODE_IP, SERVICE_IP))
    node.save()
    log.info("control plane ready in %.1fs", time.monotonic() - t0)
    host.make_cgroup_root(CGROUP_ROOT)
    files = realnode_config.write(node, NODE_NAME, NODE_IP, POD_CIDR, BRIDGE, CGROUP_ROOT)
    node.containerd_root.mkdir(parents=True, exist_ok=True)
    procs = node.pids
    procs["containerd"] = _spawn(["containerd", f"--config={files.containerd}"], logs / "containerd.log").pid
    node.save()
    _wait("containerd", lambda: node.ctr("version", check=False).returncode == 0, 60, procs, logs)
    pause = archive.single_layer_archive(state / "pause.tar", realnode_config.PAUSE_IMAGE,
                                         {"/pause": node.bin_dir / "pause"},
                                         {"Entrypoint": ["/pause"], "User": "65535:65535"})
    for image in (pause, *images):
        node.import_image(image)
    log.info("containerd up, images imported at %.1fs", time.monotonic() - t0)
    for name, value in realnode_config.HOST_SYSCTLS.items():
        host.write_sysctl(name, value)
    b = node.bin_dir
    procs["kubelet"] = _spawn([str(b / "kubelet"), f"--config={files.kubelet}",
                               f"--kubeconfig={node.cluster.state_dir / 'kubelet.kubeconfig'}",
                               f"--root-dir={state / 'kubelet'}", f"--cert-dir={state / 'kubelet-pki'}",
                               f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}"],
                              logs / "kubelet.log").pid
    admin = str(node.cluster.kubeconfig)
    procs["kube-scheduler"] = _spawn([str(b / "kube-scheduler"), f"--kubeconfig={admin}",
                                      f"--authentication-kubeconfig={admin}", f"--authorization-kubeconfig={admin}",
                                      "--leader-elect=false", "--secure-port=0"], logs / "kube-scheduler.log").pid
    procs["kube-proxy"] = _spawn([str(b / "kube-proxy"), f"--config={files.kube_proxy}"],
                                 logs / "kube-proxy.log").pid
    procs["coredns"] = _spawn([str(b / "coredns"), "-conf", str(files.corefile)], logs / "coredns.log").pid
    node.save()
    kubectl = node.cluster.kubectl

    def node_ready() -> bool:
        out = kubectl("get", "node", NODE_NAME, "-o", "json", check=False).stdout
        obj = json.loads(out) if out else {}
        conditions = {c["type"]: c["status"] for c in obj.get("status", {}).get("conditions", [])}
        return conditions.get("Ready") == "True" and not obj.get("spec", {}).get("taints")

    _wait(f"Node {NODE_NAME} Ready and untainted", node_ready, 120, procs, logs)
    _wait("the default ServiceAccount", lambda: kubectl("get", "sa", "default", check=False).returncode == 0,
          60, procs, logs)
    _wait("CoreDNS", lambda: urllib.request.urlopen(files.dns_ready, timeout=2).status == 200, 60, procs, logs)
    log.info("node %s Ready at %.1fs", NODE_NAME, time.monotonic() - t0)


def _remove_pods(node: RealNode) -> None:
    """Every Pod sandbox through CRI: containers stop, CNI releases addresses and rules, shims exit."""
    if not node.socket.exists() or node.ctr("version", check=False).returncode != 0:
        return
    node.crictl("stopp", *node.crictl("pods", "-q", check=False).stdout.split(), check=False)
    node.crictl("rmp", "-a", "-f", check=False)
    for task in node.ctr("tasks", "ls", "-q", check=False).stdout.split():
        node.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
        time.sleep(0.2)
        node.ctr("tasks", "rm", "-f", task, check=False)
    for container in node.ctr("containers", "ls", "-q", check=False).stdout.split():
        node.ctr("containers", "rm", container, check=False)


def _kill_strays(node: RealNode) -> None:
    """Shims (their own session, they outlive containerd) and container processes still holding our sockets."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "containerd-shim" in cmdline and str(node.socket) in cmdline:
                os.kill(int(proc.name), signal.SIGKILL)


def stop(node: RealNode, *, remove_state: bool = True) -> None:
    """Stop the node and its control plane, and undo every change it made to the host."""
    _stop_processes(node)
    _undo_host_changes(node)
    if LOCK.exists() and json.loads(LOCK.read_text()).get("stateDir") == str(node.state_dir):
        LOCK.unlink()
    if remove_state:
        shutil.rmtree(node.state_dir, ignore_errors=True)


def _stop_processes(node: RealNode) -> None:
    """The components, the Pods' containers, containerd and its strays, kube-proxy's rules, the control plane."""
    for name in COMPONENTS:
        if name in node.pids:
            _stop_pid(node.pids[name])
    _remove_pods(node)
    if "containerd" in node.pids:
        _stop_pid(node.pids["containerd"], timeout=20)
    _kill_strays(node)
    if (node.bin_dir / "kube-proxy").exists():
        host.sh(str(node.bin_dir / "kube-proxy"), "--cleanup", check=False)
    if node.cluster.server:
        controlplane.stop(node.cluster, remove_state=False)


def _undo_host_changes(node: RealNode) -> None:
    """Mounts, links, iptables rules, cgroups, sysctls and the paths the node created, as they were before."""
    host.unmount_under(str(node.state_dir), *node.created_paths)
    for link in (BRIDGE, NODE_LINK):  # the Service route goes with its link
        host.sh("ip", "link", "del", link, check=False)
    host.remove_iptables(node.iptables_before)
    host.remove_cgroups(CGROUP_ROOT)
    for name, value in node.sysctls.items():
        host.write_sysctl(name, value)
    for path in node.created_paths:
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(path)


def load(state_dir: Path | None = None) -> RealNode | None:
    """The real node recorded in state_dir, if its kubelet is still alive."""
    node = RealNode.load(state_dir or controlplane.default_state_dir())
    if node is None:
        return None
    try:
        os.kill(node.pids["kubelet"], 0)
    except (ProcessLookupError, KeyError):
        return None
    return node


def up(state_dir: Path | None = None, images: tuple[str, ...] = ()) -> RealNode:
    """The long-lived dev node (`kubestill dev up --node real`): start it, or return the one running; load the
    named project images that are built (kubestill.dev.images)."""
    from . import images as project_images

    target = state_dir or controlplane.default_state_dir()
    node = load(target)
    if node is None:
        if controlplane.load(target) is not None:
            raise RealNodeUnavailable([f"a node-less control plane runs from {target}: kubestill dev down first"])
        node = start(target)
    built = tuple(name for name in images if project_images.image_id(project_images.IMAGES[name].local))
    project_images.load(node, built)
    return node


def down(state_dir: Path | None = None) -> bool:
    """Stop the dev node recorded in state_dir (even half-started); False when there is none."""
    node = RealNode.load(state_dir or controlplane.default_state_dir())
    if node is None:
        return False
    stop(node)
    return True
