"""`kubestill dev up --node ...`: a host that cannot run the real node is told why, and the process node is an
explicit, loudly reported fallback, never a silent one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubestill.cli import dev as dev_cli
from kubestill.cli import main
from kubestill.dev import controlplane, host, realnode

REASONS = ["not root: containerd, runc and the kubelet mount filesystems", "runc is missing"]


@pytest.fixture
def no_real_node(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    def refuse(*_: Any, **__: Any) -> None:
        raise realnode.RealNodeUnavailable(REASONS)

    monkeypatch.setattr(realnode, "up", refuse)
    started: list[str] = []
    fake = controlplane.Cluster(state_dir=Path("/s"), bin_dir=Path("/b"), server="https://127.0.0.1:1", token="t",
                                ca_file=Path("/ca"), kubeconfig=Path("/s/kubeconfig"))

    def control_plane_up(state: Path | None = None) -> controlplane.Cluster:
        started.append("control plane")
        return fake

    monkeypatch.setattr(controlplane, "up", control_plane_up)
    monkeypatch.setattr(dev_cli, "_start_process_node", lambda cluster, state: started.append("process node"))
    return started


def test_real_refuses_with_the_reasons(no_real_node: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dev", "--state-dir", "/s", "up", "--node", "real"]) == 2
    err = capsys.readouterr().err
    assert all(reason in err for reason in REASONS) and "--node process" in err
    assert no_real_node == []  # nothing started behind the user's back


def test_auto_falls_back_to_the_process_node_loudly(no_real_node: list[str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dev", "--state-dir", "/s", "up", "--node", "auto"]) == 0
    out = capsys.readouterr()
    assert "FALLING BACK TO THE PROCESS NODE" in out.err and all(reason in out.err for reason in REASONS)
    assert "process node running" in out.out
    assert no_real_node == ["control plane", "process node"]


def test_host_names_missing_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    reasons = host.missing(tmp_path)
    assert any(r.startswith("not root") for r in reasons)
    assert any("kubelet is missing" in r and "tests/cluster/build.sh" in r for r in reasons)
