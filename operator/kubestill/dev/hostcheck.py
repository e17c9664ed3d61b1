"""What this host offers a real node, and what a real node leaves on it (kubestill.dev.realnode).

`missing()` names each thing a real node needs that is absent here, and why it is needed, so `kubestill dev up
--node real` and the tests can say exactly why they fall back to the process node. `Footprint` is a snapshot of
everything a node changes on the host (processes, mounts, cgroups, links, routes, iptables rules, sysctls,
directories): taken before start and after teardown, the two must be equal.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

CNI_DIR = Path("/usr/lib/cni")
CGROUP_FS = Path("/sys/fs/cgroup")
# From Debian: what the node runs beside the binaries built from Go modules.
DEBIAN_COMMANDS = {
    "containerd": "containerd", "containerd-shim-runc-v2": "containerd", "runc": "runc", "ctr": "containerd",
    "iptables": "iptables", "iptables-save": "iptables", "ip6tables": "iptables", "ip": "iproute2",
    "nft": "nftables",
}
CNI_PLUGINS = ("bridge", "host-local", "loopback")
GO_BINARIES = ("kubelet", "kube-scheduler", "kube-proxy", "crictl", "coredns", "pause")
# Host-wide paths containerd, runc and CNI use whatever their configuration says; removed on teardown when the
# node created them.
HOST_PATHS = ("/run/containerd", "/var/lib/cni", "/run/netns", "/var/run/netns", "/opt/containerd", "/etc/cni",
              "/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/run/runc")


def missing(bin_dir: Path) -> list[str]:
    """Each reason this host cannot run a real node; empty when it can."""
    reasons: list[str] = []
    if os.geteuid() != 0:
        reasons.append("not root: containerd, runc and the kubelet mount filesystems, create namespaces and "
                       "cgroups, and write iptables rules")
    for command, package in DEBIAN_COMMANDS.items():
        if shutil.which(command) is None:
            reasons.append(f"{command} is missing (Debian package {package}; scripts/setup.sh installs it)")
    for plugin in CNI_PLUGINS:
        if not (CNI_DIR / plugin).exists():
            reasons.append(f"CNI plugin {CNI_DIR / plugin} is missing (Debian package containernetworking-plugins)")
    for binary in GO_BINARIES:
        if not (bin_dir / binary).exists():
            reasons.append(f"{bin_dir / binary} is missing (built from Go modules by tests/cluster/build.sh)")
    filesystems = Path("/proc/filesystems").read_text()
    if "overlay" not in filesystems:
        reasons.append("the kernel has no overlay filesystem: containerd's overlayfs snapshotter needs it")
    if not (CGROUP_FS / "memory").is_dir() and not (CGROUP_FS / "cgroup.controllers").exists():
        reasons.append(f"no cgroup memory controller under {CGROUP_FS}: the kubelet needs cgroups")
    if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        reasons.append("no br_netfilter in the kernel: Services between Pods on one bridge need it")
    return reasons


def cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup hierarchies: one per v1 controller (cpu, memory, ...) or the single v2 root."""
    if (CGROUP_FS / "cgroup.controllers").exists():
        return [CGROUP_FS]
    return sorted(p for p in CGROUP_FS.iterdir() if p.is_dir() and not p.is_symlink())


def _run(*argv: str) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        return ""


_COUNTERS = re.compile(r"\[\d+:\d+\]")
# sysctls that move by themselves (entropy, counters, random ids): not something a node could leave behind.
_VOLATILE = re.compile(r"random|entropy|inode-|dentry-|file-nr|fs\.quota|\.ns_last_pid|kernel\.tainted|"
                       r"nf_conntrack_count|vm\.stat|perf_event|kernel\.pty\.nr|fs\.aio-nr|hung_task|"
                       r"\.base_reachable_time|stable_secret|mptcp|net\.ipv[46]\.conf\.|net\.ipv[46]\.neigh\.")


@dataclass(frozen=True)
class Footprint:
    """What a node may change on the host; compare two with `diff`."""

    processes: frozenset[str] = field(default_factory=frozenset)
    mounts: frozenset[str] = field(default_factory=frozenset)
    cgroups: frozenset[str] = field(default_factory=frozenset)
    links: frozenset[str] = field(default_factory=frozenset)
    routes: frozenset[str] = field(default_factory=frozenset)
    rules: frozenset[str] = field(default_factory=frozenset)
    sysctls: frozenset[str] = field(default_factory=frozenset)
    paths: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def take(cls, bin_dir: Path, state_dir: Path, cgroup_root: str = "kubestill") -> Footprint:
        """The host now, as far as a node started with `state_dir` could have changed it."""
        processes = set()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                in_pod = f"/{cgroup_root}/" in (proc / "cgroup").read_text()
                exe = os.path.basename(os.readlink(proc / "exe"))
            except OSError:
                continue
            # Ours: anything started for the node (its state dir on the command line), any process in a Pod's
            # cgroup, and containerd with its shims (nothing else on these machines runs them).
            if str(state_dir) in cmdline or in_pod or exe.startswith("containerd"):
                processes.add(cmdline[:300])
        # buildah's own mounts come and go with image builds; they are not the node's.
        mounts = {m for line in Path("/proc/self/mountinfo").read_text().splitlines()
                  if not (m := line.split()[4]).startswith(("/var/lib/containers/", "/run/containers/"))}
        cgroups = {str(p) for h in cgroup_hierarchies() for p in h.iterdir() if p.is_dir()}
        links = {line.split(":")[1].strip().split("@")[0] for line in _run("ip", "-o", "link").splitlines()}
        routes = set(_run("ip", "route", "show", "table", "all").splitlines())
        rules = {f"{tool}: {_COUNTERS.sub('', line)}" for tool in ("iptables-save", "ip6tables-save")
                 for line in _run(tool).splitlines() if line and not line.startswith("#")}
        sysctls = {line for line in _run("sysctl", "-a").splitlines() if not _VOLATILE.search(line)}
        paths = {p for p in HOST_PATHS if os.path.lexists(p)}
        return cls(frozenset(processes), frozenset(mounts), frozenset(cgroups), frozenset(links),
                   frozenset(routes), frozenset(rules), frozenset(sysctls), frozenset(paths))

    def diff(self, after: Footprint) -> dict[str, dict[str, list[str]]]:
        """{aspect: {"added": [...], "removed": [...]}} for every aspect that differs."""
        out: dict[str, dict[str, list[str]]] = {}
        for name in self.__dataclass_fields__:
            before, now = getattr(self, name), getattr(after, name)
            if before != now:
                out[name] = {"added": sorted(now - before), "removed": sorted(before - now)}
        return out
