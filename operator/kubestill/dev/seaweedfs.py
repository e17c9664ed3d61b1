"""SeaweedFS as the S3 server of the tests, the benchmarks and `kubestill dev up --s3`: one `weed mini` process
(master, volume server, filer and S3 gateway) on loopback ports, with its data in a directory of ours.

The binary is built from SeaweedFS's Go module by tests/cluster/seaweedfs/build.sh into the same cache as the
control plane. Identities (access key, secret key, allowed actions) live in the `-s3.config` file, which the
gateway re-reads on SIGHUP: `add_identity()` makes credentials for one test or one demo while the server runs.
(Identities written into the filer's /etc/iam over its HTTP API are stored as chunks, which SeaweedFS 4.53's
credential store reads as empty files, so the static file is the dependable way.) With identities configured,
anonymous requests are refused; `start_seaweedfs()` waits until they are.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .controlplane import REPO_ROOT, default_bin_dir
from .ports import reserve_ports
from .procgroup import stop_group

BUILD_SCRIPT = REPO_ROOT / "tests" / "cluster" / "seaweedfs" / "build.sh"
ALL_ACTIONS = ("Admin", "Read", "List", "Tagging", "Write")
READ_WRITE = ("Read", "List", "Tagging", "Write")


def ensure_weed(bin_dir: Path | None = None) -> Path:
    """The weed binary: built (or found current by its stamp) with the build script of a checkout."""
    target = bin_dir or default_bin_dir()
    if BUILD_SCRIPT.exists():
        env = {**os.environ, "KUBESTILL_BIN_DIR": str(target)}
        out = subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, check=True, text=True, stdout=subprocess.PIPE)
        return Path(out.stdout.strip().splitlines()[-1])
    if not (target / "weed").exists():
        raise FileNotFoundError(f"weed not found in {target}; build it with tests/cluster/seaweedfs/build.sh")
    return target / "weed"


def _port_pair(taken: set[int]) -> int:
    """A port p with p and its gRPC companion p + 10000 (every weed service listens on both) free on loopback
    and not in `taken` (both below the ephemeral and NodePort ranges: kubestill.dev.ports); adds both to `taken`."""
    return reserve_ports(taken, (0, 10000))


@dataclass(frozen=True)
class Credentials:
    """One S3 identity: what goes into a Secret's AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."""

    name: str
    access_key: str
    secret_key: str = field(repr=False)

    def secret_data(self, endpoint: str, region: str = "us-east-1") -> dict[str, str]:
        """The data of a kubestill S3 Secret (stringData) for these credentials at `endpoint`."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": region, "S3_USER_VIRTUAL_BUCKET": "0"}


def new_credentials(name: str) -> Credentials:
    return Credentials(name, "AK" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30))


@dataclass
class SeaweedFS:
    """A running `weed mini`; `endpoint` is its S3 URL. stop() ends it (and removes a temporary data dir)."""

    endpoint: str
    filer_url: str
    workdir: Path
    process: subprocess.Popen[bytes]
    admin: Credentials
    owns_workdir: bool = True
    identities: list[dict[str, Any]] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.workdir / "weed.log"

    def client(self, creds: Credentials | None = None) -> Any:
        """A boto3 S3 client for `creds` (default: the admin identity), path-style as SeaweedFS wants."""
        import boto3
        from botocore.config import Config

        c = creds or self.admin
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=c.access_key,
                            aws_secret_access_key=c.secret_key, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def add_identity(self, name: str, actions: tuple[str, ...] = READ_WRITE, timeout: float = 20) -> Credentials:
        """New credentials, live: written to the filer's identity.json, returned once the gateway accepts them.
        `actions` may be scoped to a bucket as SeaweedFS allows ("Read:bucket")."""
        creds = new_credentials(name)
        self.identities.append(_identity(creds, actions))
        self._write_identities()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client(creds).list_buckets()
                return creds
            except Exception as err:  # InvalidAccessKeyId until the reload; AccessDenied means it is known
                if "AccessDenied" in str(err):
                    return creds
                if time.monotonic() > deadline:
                    raise TimeoutError(f"SeaweedFS did not load identity {name!r}: {err}") from err
                time.sleep(0.2)

    @property
    def config_path(self) -> Path:
        return self.workdir / "identities.json"

    def _write_identities(self) -> None:
        """Rewrite the identities file (atomically, owner-only) and make the gateway re-read it."""
        _write_private(self.config_path, json.dumps({"identities": self.identities}))
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGHUP)

    def stop(self, timeout: float = 35) -> None:
        """SIGTERM, then SIGKILL after `timeout` (a stop sometimes takes ~30 s)."""
        stop_group(self.process, timeout)
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SeaweedFS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _identity(creds: Credentials, actions: tuple[str, ...]) -> dict[str, Any]:
    return {"name": creds.name, "credentials": [{"accessKey": creds.access_key, "secretKey": creds.secret_key}],
            "actions": list(actions)}


def _get(url: str, timeout: float = 1) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


# A volume server refuses every write once its disk has less than 1% free (its -minFreeSpace default, which
# `weed mini` does not expose); S3 clients then see only "InternalError ... reached max retries".
MIN_FREE_FRACTION = 0.01


def check_free_space(path: Path, min_fraction: float = MIN_FREE_FRACTION) -> None:
    """Refuse to start on a disk SeaweedFS would refuse to write to, saying so. Raises RuntimeError."""
    usage = shutil.disk_usage(path)
    if usage.free < usage.total * min_fraction * 1.5:  # half a percent of margin for what the run writes
        raise RuntimeError(f"SeaweedFS refuses writes when its disk has less than {min_fraction:.0%} free: {path} "
                           f"has {usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.0f} GiB; free some space")


def start_seaweedfs(workdir: Path | None = None, *, weed: Path | None = None, timeout: float = 90,
                    memory_limit: str = "300MiB", ip: str = "127.0.0.1") -> SeaweedFS:
    """Start `weed mini` on free ports of address `ip` (loopback by default; a real node's Pods need the node's
    address), write the admin identity, wait until S3 answers and refuses anonymous requests."""
    binary = weed or ensure_weed()
    owns = workdir is None
    work = Path(tempfile.mkdtemp(prefix="kubestill-weed-")) if workdir is None else workdir
    data, logs, cwd = work / "data", work / "logs", work / "cwd"
    for d in (data, logs, cwd):
        d.mkdir(parents=True, exist_ok=True)
    check_free_space(data)
    taken: set[int] = set()
    ports = {name: _port_pair(taken) for name in ("master", "volume", "filer", "s3", "admin")}
    admin = new_credentials("admin")
    identities = [_identity(admin, ALL_ACTIONS)]
    _write_private(work / "identities.json", json.dumps({"identities": identities}))
    argv = [
        str(binary), f"-logdir={logs}", "mini", f"-dir={data}", f"-ip={ip}", f"-ip.bind={ip}",
        f"-master.port={ports['master']}", f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}",
        f"-s3.port={ports['s3']}", f"-admin.port={ports['admin']}", "-admin.port.legacy=0", "-webdav=false",
        "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
        f"-filer.localSocket={data / 'filer.sock'}", f"-s3.localSocket={data / 's3.sock'}",
        f"-s3.config={work / 'identities.json'}",
        # Volume slots: by default `mini` allows free disk / volume size of them, and every bucket is a collection
        # that takes its own; with ~13 GB free the 10th bucket got InternalError "no free volumes left". Volumes
        # are not preallocated, so a high cap costs no disk.
        "-volume.max=2000", "-master.volumeSizeLimitMB=256",
    ]
    # A clean working directory: weed reads filer.toml/security.toml from there. GOMEMLIMIT keeps it near
    # 300-400 MB during big transfers (it grows to ~1 GB otherwise); emptied folders vanish after 1 s.
    env = {**os.environ, "GOMEMLIMIT": memory_limit, "WEED_FILER_OPTIONS_S3_EMPTY_FOLDER_CLEANUP_DELAY": "1s"}
    with open(work / "weed.log", "ab") as log:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://{ip}:{ports['s3']}"
    running = SeaweedFS(endpoint, f"http://{ip}:{ports['filer']}", work, proc, admin, owns, identities)
    deadline = time.monotonic() + timeout
    try:
        # Ready: S3 answers, and refuses an anonymous ListBuckets (the identities are in force).
        while _get(f"{endpoint}/healthz") != 200 or _get(f"{endpoint}/") != 403:
            if proc.poll() is not None:
                raise RuntimeError(f"weed exited with {proc.returncode}: "
                                   f"{running.log_path.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"SeaweedFS not ready after {timeout}s; log {running.log_path}")
            time.sleep(0.2)
    except BaseException:
        running.stop(timeout=5)
        raise
    return running


# --- the long-lived dev server of `kubestill dev up --s3` -----------------------------------------------------

DEV_BUCKET = "kubestill"
DEV_REGION = "us-east-1"


@dataclass(frozen=True)
class DevS3:
    """What `kubestill dev up --s3` started: the endpoint, the pid, and an env file with the credentials of a
    Secret (`kubectl create secret generic NAME --from-env-file=...`); the credentials are never printed."""

    endpoint: str
    pid: int
    bucket: str
    env_file: Path


def _dev_dir(state_dir: Path) -> Path:
    return state_dir / "seaweedfs"


def dev_load(state_dir: Path) -> DevS3 | None:
    info = _dev_dir(state_dir) / "s3.json"
    if not info.exists():
        return None
    d = json.loads(info.read_text())
    try:
        os.kill(int(d["pid"]), 0)
    except ProcessLookupError:
        return None
    return DevS3(d["endpoint"], int(d["pid"]), d["bucket"], Path(d["envFile"]))


def dev_up(state_dir: Path, ip: str = "127.0.0.1") -> DevS3:
    """Start (or find running) a SeaweedFS for the dev cluster on address `ip`, with a bucket and an admin
    identity. One running on another address is restarted (its objects kept in the state dir are not: a new
    server starts empty)."""
    running = dev_load(state_dir)
    if running is not None and urlparse(running.endpoint).hostname == ip:
        return running
    if running is not None:
        dev_down(state_dir)
    work = _dev_dir(state_dir)
    shutil.rmtree(work, ignore_errors=True)
    server = start_seaweedfs(work, ip=ip)
    server.owns_workdir = False
    server.make_bucket(DEV_BUCKET)
    env_file = work / "s3.env"
    env_file.touch(mode=0o600)
    env_file.write_text("".join(f"{k}={v}\n" for k, v in server.admin.secret_data(server.endpoint,
                                                                                    DEV_REGION).items()))
    dev = DevS3(server.endpoint, server.process.pid, DEV_BUCKET, env_file)
    (work / "s3.json").write_text(json.dumps({"endpoint": dev.endpoint, "pid": dev.pid, "bucket": dev.bucket,
                                              "envFile": str(env_file)}))
    return dev


def dev_secret(dev: DevS3, namespace: str, name: str = "kubestill-s3") -> dict[str, Any]:
    """The Secret manifest (stringData from the env file) for `namespace`."""
    data = dict(line.split("=", 1) for line in dev.env_file.read_text().splitlines() if "=" in line)
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque", "stringData": data}


def dev_down(state_dir: Path) -> bool:
    running = dev_load(state_dir)
    if running is None:
        return False
    try:
        os.killpg(running.pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + 35
    while time.monotonic() < deadline:
        try:
            os.kill(running.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.killpg(running.pid, signal.SIGKILL)
    shutil.rmtree(_dev_dir(state_dir), ignore_errors=True)
    return True
