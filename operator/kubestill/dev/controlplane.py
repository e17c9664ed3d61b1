"""A real, node-less Kubernetes control plane on loopback, for tests and `kubestill dev up`.

etcd, kube-apiserver (authentication by token, RBAC on, TLS with our own CA) and kube-controller-manager (only
the garbage collector and namespace controllers) run as plain processes from binaries built from Go modules
(tests/cluster/build.sh). Our CRDs and the Gateway API standard CRDs are installed with server-side apply.
Nothing schedules Pods: kubestill's local node (kubestill.dev.node) plays kubelet and workload controllers.

Like controller-runtime's envtest, but the same code also backs a long-lived dev cluster: `up()` detaches the
processes and records their pids in the state directory, `down()` stops them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from kubestill.api.crd import all_crds, render

REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO_ROOT / "tests" / "cluster" / "build.sh"
ADMIN_USER = "kubestill-admin"


def default_bin_dir() -> Path:
    env = os.environ.get("KUBESTILL_BIN_DIR")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "kubestill" / "bin"


def default_state_dir() -> Path:
    env = os.environ.get("KUBESTILL_DEV_DIR")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "kubestill" / "dev"


def ensure_binaries(bin_dir: Path | None = None) -> Path:
    """Build (or find, when the stamp is current) etcd, kube-apiserver, kube-controller-manager, kubectl, helm."""
    target = bin_dir or default_bin_dir()
    if BUILD_SCRIPT.exists():
        env = {**os.environ, "KUBESTILL_BIN_DIR": str(target)}
        out = subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, check=True, text=True, stdout=subprocess.PIPE)
        return Path(out.stdout.strip().splitlines()[-1])
    missing = [b for b in ("etcd", "kube-apiserver", "kubectl") if not (target / b).exists()]
    if missing:
        raise FileNotFoundError(
            f"control-plane binaries {missing} not found in {target}; build them from a kubestill checkout "
            "with tests/cluster/build.sh (or set KUBESTILL_BIN_DIR)"
        )
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class NodeAccess:
    """What a real node (kubestill.dev.realnode) needs of the control plane: the API server listens and
    advertises on the node's address (Pods reach it through the `kubernetes` Service), authorizes the kubelet
    as `system:node:<name>` (Node,RBAC), admits ServiceAccounts (Pods get tokens), and the controller manager
    runs its default controllers (Jobs, Deployments, EndpointSlices, the node lifecycle)."""

    name: str
    address: str
    service_ip: str  # the first address of SERVICE_CIDR: the `kubernetes` Service, in the serving certificate


SERVICE_CIDR = "10.0.0.0/24"


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call whose message carries kubectl's own error text."""

    def __str__(self) -> str:
        return f"kubectl {' '.join(self.cmd[2:])[:200]} failed ({self.returncode}):\n{self.stderr}"


@dataclass
class Cluster:
    """A running control plane: where it listens and how to reach it as an administrator."""

    state_dir: Path
    bin_dir: Path
    server: str
    token: str
    ca_file: Path
    kubeconfig: Path
    pids: dict[str, int] = field(default_factory=dict)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this cluster; raises with kubectl's stderr when check fails."""
        cmd = [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(cmd, input=input, text=True, capture_output=True, timeout=timeout)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, cmd, result.stdout, result.stderr)
        return result

    def env(self) -> dict[str, str]:
        """Environment for child processes (operator, node, trainer) that should talk to this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def to_json(self) -> str:
        data = {
            "stateDir": str(self.state_dir),
            "binDir": str(self.bin_dir),
            "server": self.server,
            "token": self.token,
            "caFile": str(self.ca_file),
            "kubeconfig": str(self.kubeconfig),
            "pids": self.pids,
        }
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Cluster:
        d = json.loads(text)
        return cls(
            state_dir=Path(d["stateDir"]),
            bin_dir=Path(d["binDir"]),
            server=d["server"],
            token=d["token"],
            ca_file=Path(d["caFile"]),
            kubeconfig=Path(d["kubeconfig"]),
            pids={k: int(v) for k, v in d["pids"].items()},
        )


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_pki(pki: Path, node: NodeAccess | None = None) -> None:
    """A CA, a serving certificate for 127.0.0.1/localhost, and the service-account signing key; for a real node
    also its address and the `kubernetes` Service IP in the serving certificate, and the client certificate the
    API server shows the kubelet (logs, exec, port-forward)."""
    extra_ips = (node.address, node.service_ip) if node else ()
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "3650", "-subj", "/CN=kubestill-dev-ca", cwd=pki)
    (pki / "san.cnf").write_text(
        "[req]\ndistinguished_name=dn\n[dn]\n[ext]\nsubjectAltName=IP:127.0.0.1,DNS:localhost,"
        "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
        + "".join(f",IP:{ip}" for ip in extra_ips) + "\n"
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "[client]\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n"
    )
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key", "-out", "apiserver.csr",
             "-subj", "/CN=kube-apiserver", cwd=pki)
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "apiserver.crt", "-days", "3650", "-extfile", "san.cnf", "-extensions", "ext", cwd=pki)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    if node is None:
        return
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "kubelet-client.key", "-out", "kubelet-client.csr",
             "-subj", "/O=system:masters/CN=kube-apiserver-kubelet-client", cwd=pki)
    _openssl("x509", "-req", "-in", "kubelet-client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "kubelet-client.crt", "-days", "3650", "-extfile", "san.cnf", "-extensions", "client", cwd=pki)


def _kubeconfig_text(server: str, ca_file: Path, token: str) -> str:
    return f"""apiVersion: v1
kind: Config
clusters:
- name: kubestill-dev
  cluster:
    server: {server}
    certificate-authority: {ca_file}
users:
- name: {ADMIN_USER}
  user:
    token: {token}
contexts:
- name: kubestill-dev
  context:
    cluster: kubestill-dev
    user: {ADMIN_USER}
    namespace: default
current-context: kubestill-dev
"""


def _spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    # A new session: the processes survive the CLI that started them (dev up) and are stopped by group.
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)


def _wait_ready(server: str, token: str, ca_file: Path, procs: dict[str, subprocess.Popen[bytes]],
                logs: Path, timeout: float = 90) -> None:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                tail = (logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode} while starting:\n{tail}")
        req = urllib.request.Request(f"{server}/readyz", headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.3)
    raise TimeoutError(f"kube-apiserver at {server} not ready after {timeout:.0f}s: {last}")


def install_crds(cluster: Cluster) -> None:
    """Server-side apply our CRDs (generated from the models) and the Gateway API standard CRDs."""
    ours = "\n---\n".join(render(crd) for crd in all_crds().values())
    cluster.kubectl("apply", "--server-side", "--field-manager=kubestill-dev", "-f", "-", input=ours)
    gateway = cluster.bin_dir / "gateway-api-crds"
    if gateway.is_dir():
        cluster.kubectl("apply", "--server-side", "--field-manager=kubestill-dev", "-f", str(gateway))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")


def _write_node_credentials(state_dir: Path, server: str, node: NodeAccess) -> str:
    """A token for the kubelet (user system:node:<name> in group system:nodes) and its kubeconfig."""
    token = secrets.token_hex(16)
    user = f"system:node:{node.name}"
    with (state_dir / "pki" / "tokens.csv").open("a") as tokens:
        tokens.write(f'{token},{user},{user},"system:nodes"\n')
    (state_dir / "kubelet.kubeconfig").write_text(_kubeconfig_text(server, state_dir / "pki" / "ca.crt", token))
    return token


def _apiserver_flags(pki: Path, etcd_port: int, api_port: int, node: NodeAccess | None) -> list[str]:
    flags = [
        f"--etcd-servers=http://127.0.0.1:{etcd_port}", f"--secure-port={api_port}", f"--cert-dir={pki}",
        f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--token-auth-file={pki / 'tokens.csv'}",
        "--allow-privileged=true", "--enable-priority-and-fairness=false", "-v=0",
    ]
    if node is None:
        # No Pods ever run: no ServiceAccount tokens to mount, nobody to authorize but RBAC subjects.
        return [*flags, "--bind-address=127.0.0.1", "--authorization-mode=RBAC",
                "--disable-admission-plugins=ServiceAccount"]
    return [
        *flags, f"--bind-address={node.address}", f"--advertise-address={node.address}",
        "--authorization-mode=Node,RBAC",
        f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'kubelet-client.key'}",
        "--kubelet-preferred-address-types=InternalIP",
    ]


def start(state_dir: Path, bin_dir: Path | None = None, *, with_controller_manager: bool = True,
          node: NodeAccess | None = None) -> Cluster:
    """Start etcd, kube-apiserver and (optionally) kube-controller-manager; install CRDs; return the Cluster.

    With `node`, the control plane is made for a real node (see NodeAccess) and the kubelet's kubeconfig is
    written to `<state_dir>/kubelet.kubeconfig`."""
    bins = ensure_binaries(bin_dir)
    if state_dir.exists():
        shutil.rmtree(state_dir)
    logs = state_dir / "logs"
    logs.mkdir(parents=True)
    pki = state_dir / "pki"
    _make_pki(pki, node)
    token = secrets.token_hex(16)
    (pki / "tokens.csv").write_text(f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    server = f"https://{node.address if node else '127.0.0.1'}:{api_port}"
    if node is not None:
        _write_node_credentials(state_dir, server, node)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    procs["etcd"] = _spawn([
        str(bins / "etcd"), "--name=kubestill", f"--data-dir={state_dir / 'etcd'}",
        f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
        f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
        f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
        f"--initial-cluster=kubestill=http://127.0.0.1:{peer_port}",
        "--unsafe-no-fsync=true", "--log-level=warn",
    ], logs / "etcd.log")
    procs["kube-apiserver"] = _spawn([str(bins / "kube-apiserver"), *_apiserver_flags(pki, etcd_port, api_port, node)],
                                     logs / "kube-apiserver.log")
    ca_file = pki / "ca.crt"
    try:
        _wait_ready(server, token, ca_file, procs, logs)
        kubeconfig = state_dir / "kubeconfig"
        kubeconfig.write_text(_kubeconfig_text(server, ca_file, token))
        if with_controller_manager and (bins / "kube-controller-manager").exists():
            # Node-less: only what has no node to wait for (ownerReferences cascade, namespaces finalize).
            # With a real node: the default controllers, and the CA every namespace's Pods get.
            controllers = (
                ["--controllers=garbagecollector,namespace"] if node is None
                else [f"--root-ca-file={ca_file}", f"--service-account-private-key-file={pki / 'sa.key'}"]
            )
            procs["kube-controller-manager"] = _spawn([
                str(bins / "kube-controller-manager"), f"--kubeconfig={kubeconfig}", *controllers,
                "--leader-elect=false", "--secure-port=0", "--use-service-account-credentials=false",
            ], logs / "kube-controller-manager.log")
        cluster = Cluster(state_dir=state_dir, bin_dir=bins, server=server, token=token, ca_file=ca_file,
                          kubeconfig=kubeconfig, pids={n: p.pid for n, p in procs.items()})
        (state_dir / "cluster.json").write_text(cluster.to_json())
        install_crds(cluster)
    except BaseException:
        for proc in procs.values():
            _stop_pid(proc.pid)
        raise
    return cluster


def _stop_pid(pid: int, timeout: float = 10) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def stop(cluster: Cluster, *, remove_state: bool = True) -> None:
    """Stop every process of the cluster (controller manager first, etcd last) and remove its state."""
    for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
        if name in cluster.pids:
            _stop_pid(cluster.pids[name])
    if remove_state:
        shutil.rmtree(cluster.state_dir, ignore_errors=True)


def load(state_dir: Path | None = None) -> Cluster | None:
    """The dev cluster recorded in state_dir, if its API server process is still alive."""
    path = (state_dir or default_state_dir()) / "cluster.json"
    if not path.exists():
        return None
    cluster = Cluster.from_json(path.read_text())
    try:
        os.kill(cluster.pids["kube-apiserver"], 0)
    except (ProcessLookupError, KeyError):
        return None
    return cluster


def up(state_dir: Path | None = None) -> Cluster:
    """Start the long-lived dev cluster, or return the one already running."""
    target = state_dir or default_state_dir()
    running = load(target)
    if running is not None:
        install_crds(running)
        return running
    return start(target)


def down(state_dir: Path | None = None) -> bool:
    """Stop the dev cluster; False when none was running."""
    target = state_dir or default_state_dir()
    path = target / "cluster.json"
    if not path.exists():
        return False
    stop(Cluster.from_json(path.read_text()))
    return True
