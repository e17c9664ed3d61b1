"""Running the real helm (built from its Go module by tests/cluster/build.sh) on the chart."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "kubestill"
SCENARIOS = sorted((CHART / "ci").glob("*.yaml"))
# helm built without version ldflags assumes Kubernetes 1.20 when rendering offline; say what we target.
KUBE_VERSION = "1.36.3"


@dataclass(frozen=True)
class Helm:
    """The helm binary, optionally pointed at a cluster through a kubeconfig."""

    binary: Path
    kubeconfig: Path | None = None

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.binary), *args]
        if self.kubeconfig is not None:
            cmd.append(f"--kubeconfig={self.kubeconfig}")
        result = subprocess.run(cmd, text=True, capture_output=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
        return result

    def template(
        self,
        values: Sequence[Path] = (),
        sets: Sequence[str] = (),
        release: str = "ks",
        namespace: str = "kubestill",
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        args = ["template", release, str(CHART), "-n", namespace, f"--kube-version={KUBE_VERSION}"]
        for path in values:
            args += ["-f", str(path)]
        for item in sets:
            args += ["--set", item]
        return self.run(*args, check=check)

    def manifests(self, values: Sequence[Path] = (), sets: Sequence[str] = (), **kw: Any) -> list[dict[str, Any]]:
        """The rendered objects (templates only; Helm's crds/ directory is not part of `template`)."""
        text = self.template(values, sets, **kw).stdout
        return [doc for doc in yaml.safe_load_all(text) if doc]


def find(objs: Sequence[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: Sequence[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]
