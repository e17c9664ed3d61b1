"""The host side of the real node (kubestill.dev.realnode): what this host offers it, the changes it makes to the
host and undoes (sysctls, cgroups, iptables, mounts), and what it leaves.

`missing()` names each thing a real node needs that is absent here, and why it is needed, so `kubestill dev up
--node real` and the tests can say exactly why they fall back to the process node. `Footprint` is a snapshot of
everything a node changes on the host (processes, mounts, cgroups, links, routes, iptables rules, sysctls,
directories): taken before start and after teardown, the two must be equal.
"""

from __future__ import annotations

import contextlib
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
    return reasons + _missing_programs(bin_dir) + _missing_kernel_features()


def _missing_programs(bin_dir: Path) -> list[str]:
    """Debian commands, CNI plugins and the Go-built Kubernetes binaries that are not installed."""
    reasons: list[str] = []
    for command, package in DEBIAN_COMMANDS.items():
        if shutil.which(command) is None:
            reasons.append(f"{command} is missing (Debian package {package}; scripts/setup.sh installs it)")
    for plugin in CNI_PLUGINS:
        if not (CNI_DIR / plugin).exists():
            reasons.append(f"CNI plugin {CNI_DIR / plugin} is missing (Debian package containernetworking-plugins)")
    for binary in GO_BINARIES:
        if not (bin_dir / binary).exists():
            reasons.append(f"{bin_dir / binary} is missing (built from Go modules by tests/cluster/build.sh)")
    return reasons


def _missing_kernel_features() -> list[str]:
    """Overlay filesystem, cgroup memory controller and br_netfilter, when the kernel lacks them."""
    reasons: list[str] = []
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


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def read_sysctl(name: str) -> str | None:
    path = Path("/proc/sys") / name.replace(".", "/")
    try:
        return path.read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        (Path("/proc/sys") / name.replace(".", "/")).write_text(value)


def iptables_chains() -> dict[str, list[str]]:
    """{"iptables:nat": [chain, ...], ...}: the chains present now, per tool and table."""
    out: dict[str, list[str]] = {}
    for tool in ("iptables", "ip6tables"):
        table = ""
        for line in sh(f"{tool}-save", check=False).stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
                out[f"{tool}:{table}"] = []
            elif line.startswith(":"):
                out[f"{tool}:{table}"].append(line[1:].split()[0])
    return out


def make_cgroup_root(name: str) -> None:
    """The cgroup `name` in every hierarchy, ready to take tasks."""
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / name
        root.mkdir(exist_ok=True)
        # A cpuset cgroup takes no task until it has CPUs and memory nodes: inherit the parent's.
        for setting in ("cpuset.cpus", "cpuset.mems"):
            if (hierarchy / setting).exists() and not (root / setting).read_text().strip():
                (root / setting).write_text((hierarchy / setting).read_text())


def unmount_under(*roots: str) -> None:
    """Every mount at or below `roots`, deepest first (lazily: a busy one goes once released)."""
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for mount in sorted((m for m in mounts if any(m == r or m.startswith(r + "/") for r in roots)),
                        key=len, reverse=True):
        sh("umount", "-l", mount, check=False)


def remove_iptables(before: dict[str, list[str]]) -> None:
    """Chains the node created (kubelet, kube-proxy, CNI), and every rule that jumps to them."""
    for key, chains in iptables_chains().items():
        tool, table = key.split(":")
        new = [c for c in chains if c not in before.get(key, [])]
        if not new:
            continue
        for line in sh(f"{tool}-save", "-t", table, check=False).stdout.splitlines():
            parts = line.split()
            if line.startswith("-A ") and "-j" in parts and parts[parts.index("-j") + 1] in new \
                    and parts[1] not in new:
                sh(tool, "-t", table, "-D", *parts[1:], check=False)
        for chain in new:
            sh(tool, "-t", table, "-F", chain, check=False)
        for chain in new:
            sh(tool, "-t", table, "-X", chain, check=False)
    # iptables-nft creates each table it touches (with the built-in chains): drop the ones that were not there
    # before, once they hold no rule.
    for key in iptables_chains():
        tool, table = key.split(":")
        rules = sh(f"{tool}-save", "-t", table, check=False).stdout
        if key not in before and "\n-A " not in rules:
            sh("nft", "delete", "table", "ip" if tool == "iptables" else "ip6", table, check=False)


def remove_cgroups(name: str) -> None:
    """The cgroup `name` and everything below it, in every hierarchy (they must hold no task)."""
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / name
        if not root.is_dir():
            continue
        for path in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()
