"""The configuration files of the real node's components (kubestill.dev.realnode): containerd, the CNI
network, the kubelet, kube-proxy and CoreDNS. Every path points into the node's state directory, except
containerd's root (content and snapshots, a cache kept across nodes so images are imported once)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .controlplane import Cluster, free_port

PAUSE_IMAGE = "localhost/kubestill/pause:3.10"
CLUSTER_DOMAIN = "cluster.local"
# Set before the kubelet starts (saved and restored with the others): Services between Pods on one bridge.
HOST_SYSCTLS = {"net.bridge.bridge-nf-call-iptables": "1", "net.bridge.bridge-nf-call-ip6tables": "1"}


class ConfiguredNode(Protocol):
    """What the configuration files need of a node (`realnode.RealNode` implements it). A Protocol, so this
    module does not import realnode back (lint-imports refuses import cycles)."""

    @property
    def cluster(self) -> Cluster: ...

    @property
    def state_dir(self) -> Path: ...

    @property
    def containerd_root(self) -> Path: ...

    @property
    def socket(self) -> Path: ...


def default_containerd_root() -> Path:
    """containerd's content and snapshots: kept across nodes (a cache), so images are imported once."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "kubestill" / "containerd"


@dataclass(frozen=True)
class Files:
    containerd: Path
    kubelet: Path
    kube_proxy: Path
    corefile: Path
    dns_ready: str  # CoreDNS's ready endpoint: 200 once its kubernetes plugin has synced


def _containerd(node: ConfiguredNode, cni_conf: Path) -> str:
    state = node.state_dir
    return f"""version = 2
root = "{node.containerd_root}"
state = "{state / 'containerd-state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{node.socket}"
[ttrpc]
  address = "{node.socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{state / 'containerd-opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # The VM withholds CAP_SYS_RESOURCE: runc cannot set a negative oom_score_adj (every sandbox failed).
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{state / 'runc'}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf}"
"""


def _cni(node: ConfiguredNode, pod_cidr: str, bridge: str) -> str:
    # No ipMasq and no portmap: Pods talk only to this machine (the API server, each other), so the bridge
    # plugin adds no NAT rules, and nothing a Pod sends is rewritten to leave through the host's address.
    return json.dumps({
        "cniVersion": "1.0.0", "name": "kubestill", "plugins": [{
            "type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False, "hairpinMode": True,
            "ipam": {"type": "host-local", "dataDir": str(node.state_dir / "cni-ipam"),
                     "ranges": [[{"subnet": pod_cidr}]], "routes": [{"dst": "0.0.0.0/0"}]},
        }],
    }, indent=2)


def _kubelet(node: ConfiguredNode, node_ip: str, cgroup_root: str) -> str:
    state = node.state_dir
    return f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup_root}
containerRuntimeEndpoint: unix://{node.socket}
failSwapOn: false
address: {node_ip}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
podLogsDir: {state / 'pod-logs'}
volumePluginDir: {state / 'volume-plugins'}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {node.cluster.ca_file}}}
authorization: {{mode: Webhook}}
clusterDNS: [{node_ip}]
clusterDomain: {CLUSTER_DOMAIN}
# No registry to pull them back from: never garbage-collect images.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# The disk is shared with builds and other work: evict only when it is really full.
evictionHard: {{memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
serializeImagePulls: false
"""


def _kube_proxy(node: ConfiguredNode, node_name: str, node_ip: str, pod_cidr: str) -> str:
    # Conntrack limits and timeouts at 0: leave the host's as they are. NodePorts only on the node's address.
    return f"""apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: {node_name}
clusterCIDR: {pod_cidr}
bindAddress: {node_ip}
healthzBindAddress: ""
metricsBindAddress: ""
nodePortAddresses: ["{node_ip}/32"]
clientConnection:
  kubeconfig: {node.cluster.kubeconfig}
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
"""


def _corefile(node: ConfiguredNode, node_ip: str, ready_port: int) -> str:
    # Cluster names only, no `forward`: Pods here need no outside names, and no query leaves the machine.
    return f""".:53 {{
    bind {node_ip}
    ready 127.0.0.1:{ready_port}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {node.cluster.kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
"""


def write(node: ConfiguredNode, node_name: str, node_ip: str, pod_cidr: str, bridge: str, cgroup_root: str) -> Files:
    conf = node.state_dir / "conf"
    cni_conf = conf / "cni"
    cni_conf.mkdir(parents=True)
    (cni_conf / "10-kubestill.conflist").write_text(_cni(node, pod_cidr, bridge))
    ready_port = free_port()
    files = Files(conf / "containerd.toml", conf / "kubelet.yaml", conf / "kube-proxy.yaml", conf / "Corefile",
                  f"http://127.0.0.1:{ready_port}/ready")
    files.containerd.write_text(_containerd(node, cni_conf))
    files.kubelet.write_text(_kubelet(node, node_ip, cgroup_root))
    files.kube_proxy.write_text(_kube_proxy(node, node_name, node_ip, pod_cidr))
    files.corefile.write_text(_corefile(node, node_ip, ready_port))
    return files
