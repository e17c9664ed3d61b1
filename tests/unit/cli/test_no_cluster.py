"""`kubestill status` and `kubestill rollout` without a cluster: one line on stderr and exit 1, never a
traceback (they once printed `RuntimeError: no kubeconfig` or `ConnectionRefusedError`); and the production
commands never load the dev node's client."""

from __future__ import annotations

import ast
import http.server
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from kubestill.cli import main

CLI = Path(__file__).resolve().parents[3] / "operator" / "kubestill" / "cli"
COMMANDS = [["status"], ["status", "-A"], ["rollout", "status", "r", "-n", "ml"], ["rollout", "promote", "r"]]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "ml"}}],
    }))
    return path


@pytest.fixture
def no_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $KUBECONFIG and an empty home (no ~/.kube/config); tests are not in a Pod."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def _one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_no_kubeconfig(no_home: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert _one_line(capsys, argv) == (
        f"kubestill {argv[0]}: no cluster to talk to: set KUBECONFIG (e.g. `kubestill dev up` prints one) "
        "or run inside a Pod"
    )


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_kubeconfig_missing_or_broken(no_home: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    monkeypatch.setenv("KUBECONFIG", str(no_home / "absent.yaml"))
    line = _one_line(capsys, argv)
    assert line.startswith(f"kubestill {argv[0]}: cannot read the kubeconfig ({no_home / 'absent.yaml'}): "
                           "FileNotFoundError"), line
    (no_home / "broken.yaml").write_text("clusters: [\n")
    monkeypatch.setenv("KUBECONFIG", str(no_home / "broken.yaml"))
    assert "cannot read the kubeconfig" in _one_line(capsys, argv)


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_api_server_down(no_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                         argv: list[str]) -> None:
    port = _closed_port()
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(no_home / "kubeconfig", f"https://127.0.0.1:{port}")))
    line = _one_line(capsys, argv)
    assert line.startswith(f"kubestill {argv[0]}: cannot reach the API server: Cannot connect to host "
                           f"127.0.0.1:{port}"), line


def test_the_installed_command_prints_one_line(no_home: Path) -> None:
    """Through the real entry point, as a user runs it."""
    kubestill = Path(sys.executable).parent / "kubestill"
    env = {"HOME": str(no_home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(CLI.parents[1])}
    done = subprocess.run([str(kubestill), "status"], env=env, text=True, capture_output=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("kubestill status: no cluster to talk to") and done.stderr.count("\n") == 1


@pytest.mark.parametrize("module", ["status.py", "rollout.py", "cluster.py"])
def test_production_commands_do_not_use_the_dev_client(module: str) -> None:
    tree = ast.parse((CLI / module).read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [m for m in imported if m.startswith(("kubestill.dev", "kubernetes")) or m == "dev"], imported


def test_help_does_not_load_the_client() -> None:
    """`kubestill --help` and `kubestill crds` stay quick: the aiohttp client loads with the commands using it."""
    code = "import sys, kubestill.cli; print('kubestill.clients.kube' in sys.modules, 'aiohttp' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], text=True, capture_output=True, timeout=60,
                          env={"PYTHONPATH": str(CLI.parents[1]), "PATH": "/usr/bin:/bin"})
    assert done.stdout.strip() == "False False", done.stderr


def test_worked_examples_in_docstrings() -> None:
    import doctest

    from kubestill.cli import cluster

    result = doctest.testmod(cluster)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("text", ["[1, 2, 3]\n", "just a string\n"], ids=["yaml-list", "yaml-scalar"])
def test_kubeconfig_not_a_mapping(no_home: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str], text: str) -> None:
    (no_home / "odd.yaml").write_text(text)
    monkeypatch.setenv("KUBECONFIG", str(no_home / "odd.yaml"))
    assert "cannot read the kubeconfig" in _one_line(capsys, ["status"])


def test_kubeconfig_without_a_server(no_home: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = _kubeconfig(no_home / "kubeconfig", "x")
    config = yaml.safe_load(path.read_text())
    del config["clusters"][0]["cluster"]["server"]
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert "names no server" in _one_line(capsys, ["status"])


class _NotKubernetes(http.server.BaseHTTPRequestHandler):
    """A proxy or login page in front of the API server: HTML or plain text, not a Kubernetes Status."""

    def do_GET(self) -> None:
        status, body = {"/html502": (502, b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
                        "/text200": (200, b"please log in")}[self.server.mode]  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("mode", "expected"), [
    ("/html502", "502 Bad Gateway"),
    ("/text200", "the answer is not a Kubernetes object: please log in"),
])
@pytest.mark.parametrize("argv", [["status"], ["rollout", "status", "r", "-n", "ml"]], ids=" ".join)
def test_an_answer_that_is_not_kubernetes_json(no_home: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str], mode: str, expected: str,
                                              argv: list[str]) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotKubernetes)
    server.mode = mode  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(no_home / "kubeconfig",
                                                         f"http://127.0.0.1:{server.server_address[1]}")))
        assert expected in _one_line(capsys, argv)
    finally:
        server.shutdown()
