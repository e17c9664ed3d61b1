"""Run the `tritonserver` bundled in nvidia-pytriton as a local process (tests and `kubestill dev`).

The python backend needs three things from its environment: LD_LIBRARY_PATH with this
interpreter's LIBDIR (else it may load another libpython: `'_thread.RLock' object has no attribute
'_recursion_count'`) and nvidia_pytriton.libs; this interpreter's bin directory first on PATH; the backend
directory of the wheel. No torch import here.

Why PATH and not PYTHONPATH: the stub embeds Python in *isolated* mode, so it ignores PYTHONPATH and
PYTHONHOME, and it finds its prefix by looking up `python3` on PATH. With a venv's bin first, it reads that
venv's pyvenv.cfg and sees its site-packages (torch, transformers, and the editable kubestill install);
otherwise it silently gets the base interpreter's site-packages, and model.py fails on `import numpy`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .procgroup import stop_group


class TritonNotFound(RuntimeError):
    """nvidia-pytriton (which bundles tritonserver) is not installed in this environment."""


def _site_packages() -> Path:
    try:
        import pytriton
    except ImportError:
        raise TritonNotFound("tritonserver comes from the PyPI package nvidia-pytriton: pip install "
                             "nvidia-pytriton") from None
    return Path(next(iter(pytriton.__path__))).parent


def triton_paths() -> dict[str, Path]:
    site = _site_packages()
    paths = {
        "binary": site / "pytriton" / "tritonserver" / "bin" / "tritonserver",
        "backends": site / "pytriton" / "tritonserver" / "backends",
        "libs": site / "nvidia_pytriton.libs",
    }
    for name, path in paths.items():
        if not path.exists():
            raise TritonNotFound(f"nvidia-pytriton's {name} is missing at {path}")
    return paths


def backend_directory(cache: Path | None = None) -> Path:
    """A backend directory whose python backend has the stub of THIS interpreter's version.

    The wheel ships the backend library and one stub per Python version under python_backend_stubs/<ver>;
    tritonserver looks for the stub beside the library, so we lay out our own directory of links.
    """
    paths = triton_paths()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = paths["backends"].parent / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonNotFound(f"nvidia-pytriton has no python backend stub for Python {version} ({stub})")
    root = cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kubestill"
    target = root / f"triton-backends-py{version}"
    python = target / "python"
    python.mkdir(parents=True, exist_ok=True)
    sources = {p.name: p for p in (paths["backends"] / "python").iterdir() if p.is_file()}
    sources[stub.name] = stub
    for name, source in sources.items():
        link = python / name
        if link.is_symlink() and link.resolve() == source.resolve():
            continue
        tmp = python / f".{name}.tmp{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(source)
        tmp.replace(link)  # atomic, so concurrent starters never see a half-made directory
    return target


def _interpreter_bin() -> Path:
    """The directory of this interpreter's `python3` (a venv's bin/ when running in one)."""
    return Path(sys.executable).absolute().parent


def tritonserver_command(
    model_repository: Path, http_port: int, grpc_port: int, metrics_port: int,
    base_env: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """argv and the environment variables to set (merged with `base_env`, default os.environ)."""
    paths = triton_paths()
    base = os.environ if base_env is None else base_env
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ld = os.pathsep.join(p for p in (libdir, str(paths["libs"]), base.get("LD_LIBRARY_PATH", "")) if p)
    argv = [
        str(paths["binary"]),
        f"--model-repository={model_repository}",
        f"--backend-directory={backend_directory()}",
        "--http-address=127.0.0.1", f"--http-port={http_port}",
        "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}",
        "--metrics-address=127.0.0.1", f"--metrics-port={metrics_port}",
        "--allow-cpu-metrics=true", "--allow-gpu-metrics=false",
        "--log-verbose=0",
    ]
    env = {
        "LD_LIBRARY_PATH": ld,
        "PATH": os.pathsep.join(p for p in (str(_interpreter_bin()), base.get("PATH", "")) if p),
        "HF_HUB_OFFLINE": "1",
        # One model instance per CPU set is the default; keep torch from oversubscribing small machines.
        "OMP_NUM_THREADS": base.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2)))),
    }
    return argv, env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TritonProcess:
    """A running tritonserver; `stop()` (or leaving the `with` block) sends SIGTERM, then SIGKILL."""

    popen: subprocess.Popen[bytes]
    http_url: str
    grpc_url: str
    metrics_url: str
    log_file: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 15.0) -> None:
        stop_group(self.popen, timeout_s)

    def __enter__(self) -> TritonProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_tritonserver(model_repository: Path, log_file: Path | None = None, ready_timeout_s: float = 180.0,
                       extra_env: Mapping[str, str] | None = None) -> TritonProcess:
    """Start tritonserver on free loopback ports and wait until /v2/health/ready answers 200."""
    http, grpc, metrics = free_port(), free_port(), free_port()
    argv, env = tritonserver_command(model_repository, http, grpc, metrics)
    full_env = {**os.environ, **env, **(extra_env or {})}
    if log_file is None:
        log_file = Path(tempfile.mkdtemp(prefix="tritonserver-")) / "tritonserver.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        popen = subprocess.Popen(argv, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    proc = TritonProcess(popen, f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc}", f"http://127.0.0.1:{metrics}",
                         log_file)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"tritonserver exited with {popen.returncode}:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(f"{proc.http_url}/v2/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return proc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    proc.stop()
    raise TimeoutError(f"tritonserver not ready after {ready_timeout_s:.0f}s:\n{proc.log_tail()}")


def assemble_repository(repo: Path, model_name: str, triton_dir: Path, config_pbtxt: str | None = None) -> Path:
    """<repo>/<model_name>/config.pbtxt and <repo>/<model_name>/1/model.py from an export's triton/ dir
    (what the StudentModel Deployment's init container does in a cluster)."""
    target = repo / model_name
    (target / "1").mkdir(parents=True, exist_ok=True)
    (target / "1" / "model.py").write_text((triton_dir / "model.py").read_text())
    text = config_pbtxt or (triton_dir / "config.pbtxt").read_text()
    # Triton insists that the config's name matches the directory.
    lines = [f'name: "{model_name}"' if line.startswith("name:") else line for line in text.splitlines()]
    (target / "config.pbtxt").write_text("\n".join(lines) + "\n")
    return repo
