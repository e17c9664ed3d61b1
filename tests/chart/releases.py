"""Chart releases installed into the session's control plane, and credentials of their ServiceAccount."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kubestill.dev.controlplane import Cluster

from .helm import CHART, Helm


@dataclass(frozen=True)
class Release:
    """An installed release: where it lives and the identity its operator runs as."""

    name: str
    namespace: str
    watched: tuple[str, ...] = field(default_factory=tuple)

    @property
    def service_account(self) -> str:
        return f"{self.name}-kubestill"

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def installed(
    helm: Helm,
    cluster: Cluster,
    *,
    sets: Sequence[str] = (),
    values: Sequence[Path] = (),
    watched: tuple[str, ...] = (),
    take_ownership: bool = False,
) -> Iterator[Release]:
    """`helm install` (never --wait: nothing runs Pods here) and `helm uninstall` plus cleanup afterwards."""
    release = Release(unique("ks"), unique("kubestill"), watched)
    for ns in watched:
        cluster.kubectl("create", "namespace", ns)
    args = ["install", release.name, str(CHART), "-n", release.namespace, "--create-namespace"]
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    if take_ownership:
        # The session's control plane installed our CRDs already (server-side apply); adopt them.
        args.append("--take-ownership")
    helm.run(*args)
    try:
        yield release
    finally:
        helm.run("uninstall", release.name, "-n", release.namespace, check=False)
        for ns in (release.namespace, *watched):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def service_account_kubeconfig(cluster: Cluster, release: Release, path: Path) -> Path:
    """A kubeconfig holding only a token of the release's ServiceAccount (TokenRequest): no admin rights."""
    token = cluster.kubectl(
        "create", "token", release.service_account, "-n", release.namespace, "--duration=1h"
    ).stdout.strip()
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: c\n  cluster:\n    server: {cluster.server}\n"
        f"    certificate-authority: {cluster.ca_file}\n"
        f"users:\n- name: operator\n  user:\n    token: {token}\n"
        "contexts:\n- name: c\n  context:\n    cluster: c\n    user: operator\n"
        "current-context: c\n"
    )
    return path
