"""How the local node runs one container: as a local process with the Pod's volumes mapped to host dirs.

The trainer image's `python -m kubestill_trainer` runs with this interpreter (the installed trainer); the
Triton image's `tritonserver` runs the binary bundled in nvidia-pytriton on free loopback ports. Every
mountPath appearing in the command or env is rewritten to its host directory, the way a bind mount would
make it appear.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procgroup import stop_group

# Ports of the Triton container that get a free loopback port each (name -> containerPort).
TRITON_PORTS = ("http", "grpc", "metrics")


@dataclass
class Mounts:
    """mountPath -> host path for one container."""

    paths: dict[str, str] = field(default_factory=dict)

    def rewrite(self, text: str) -> str:
        # One pass, longest first (/etc/kubestill/triton wins over /etc/kubestill), whole path components only;
        # a host path put in is never rewritten again (a mount at /tmp must not catch the node's /tmp/... dirs).
        if not self.paths:
            return text
        mounts = "|".join(re.escape(m) for m in sorted(self.paths, key=len, reverse=True))
        pattern = r"(?<![\w.-])(" + mounts + r")(?=/|$|[\s\"';:=])"
        return re.sub(pattern, lambda m: self.paths[m.group(1)], text)


def downward_value(meta: Mapping[str, Any], path: str) -> str:
    """A downward-API fieldPath of the Pod's metadata, as the kubelet renders it: metadata.name, .namespace,
    .uid, .labels['k'], .annotations['k'], or all labels/annotations as `k="v"` lines."""
    m = re.fullmatch(r"metadata\.(labels|annotations)(?:\['(.+)'\])?", path)
    if m is None:
        field = path.removeprefix("metadata.")
        if field not in ("name", "namespace", "uid"):
            raise ValueError(f"downward API field {path!r} is not supported by the local node")
        return str(meta.get(field) or "")
    values: Mapping[str, str] = meta.get(m.group(1)) or {}
    if m.group(2) is not None:
        return str(values.get(m.group(2), ""))
    return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))


def materialize_volumes(
    pod_spec: Mapping[str, Any],
    pod_dir: Path,
    pvc_root: Path,
    read_config_map: Callable[[str], dict[str, str] | None],
    pod_meta: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Host directory of each volume: ConfigMaps and downward-API items (from `pod_meta`) written out as
    files, emptyDirs fresh dirs, PVC claims under `pvc_root/<claim>`. Returns volume name -> host path."""
    out: dict[str, str] = {}
    for vol in pod_spec.get("volumes") or []:
        name = vol["name"]
        if "downwardAPI" in vol:
            target = pod_dir / "volumes" / name
            target.mkdir(parents=True, exist_ok=True)
            for item in vol["downwardAPI"].get("items") or []:
                if "fieldRef" not in item:
                    raise ValueError(f"downward API item {item.get('path')!r}: only fieldRef is supported")
                (target / item["path"]).write_text(downward_value(pod_meta or {}, item["fieldRef"]["fieldPath"]))
        elif "configMap" in vol:
            data = read_config_map(vol["configMap"]["name"])
            if data is None:
                raise FileNotFoundError(f'configmap "{vol["configMap"]["name"]}" not found')
            target = pod_dir / "volumes" / name
            target.mkdir(parents=True, exist_ok=True)
            for key, value in data.items():
                (target / key).write_text(value)
        elif "persistentVolumeClaim" in vol:
            target = pvc_root / vol["persistentVolumeClaim"]["claimName"]
            target.mkdir(parents=True, exist_ok=True)
        else:  # emptyDir and anything else: a private directory
            target = pod_dir / "volumes" / name
            target.mkdir(parents=True, exist_ok=True)
        out[name] = str(target)
    rewrite_config_files(pod_spec, out)
    return out


def rewrite_config_files(pod_spec: Mapping[str, Any], volumes: Mapping[str, str]) -> None:
    """ConfigMap files that name paths inside the Pod (Triton's config.pbtxt names its artifact_dir under
    /mnt/kubestill/pvc/<claim>, or in the emptyDir an s3:// artifact is downloaded to) get the host paths, as
    if the volumes were mounted at those paths."""
    claims = {v["name"]: v for v in pod_spec.get("volumes") or [] if "persistentVolumeClaim" in v
              or "emptyDir" in v}
    mounts = Mounts()
    for container in [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]:
        for m in container.get("volumeMounts") or []:
            if m["name"] in claims:
                mounts.paths[m["mountPath"].rstrip("/")] = volumes[m["name"]]
    if not mounts.paths:
        return
    for vol in pod_spec.get("volumes") or []:
        if "configMap" in vol:
            for file in Path(volumes[vol["name"]]).iterdir():
                text = file.read_text()
                rewritten = mounts.rewrite(text)
                if rewritten != text:
                    file.write_text(rewritten)


# Mounts a local process cannot be given: a process shares the host's /tmp (the trainer's emptyDir there, for a
# read-only root filesystem), and rewriting /tmp would also move every file:// path the tests keep under /tmp.
SHARED_WITH_THE_HOST = ("/tmp",)


def container_mounts(container: Mapping[str, Any], volumes: Mapping[str, str], pod_dir: Path) -> Mounts:
    mounts = Mounts({m["mountPath"].rstrip("/"): volumes[m["name"]] for m in container.get("volumeMounts") or []
                     if m["mountPath"].rstrip("/") not in SHARED_WITH_THE_HOST})
    term = container.get("terminationMessagePath") or "/dev/termination-log"
    mounts.paths[term] = str(pod_dir / f"{container['name']}.termination-log")
    return mounts


def container_env(
    container: Mapping[str, Any],
    pod: Mapping[str, Any],
    read_secret: Callable[[str], dict[str, str] | None],
    mounts: Mounts,
    extra: Mapping[str, str],
) -> dict[str, str]:
    """The process environment: ours (PATH, venv), the node's extras (KUBECONFIG, KUBESTILL_PVC_ROOT),
    then the container's env with secretKeyRef/fieldRef resolved and mount paths rewritten."""
    env = {**os.environ, **extra}
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item:
            env[name] = mounts.rewrite(str(item["value"]))
            continue
        source = item.get("valueFrom") or {}
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            data = read_secret(ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):  # as the kubelet does: the variable is left unset
                    env.pop(name, None)
                    continue
                raise KeyError(f'secret "{ref["name"]}" key "{ref["key"]}" not found')
            env[name] = base64.b64decode(data[ref["key"]]).decode()
        elif "fieldRef" in source:
            env[name] = downward_value(pod["metadata"], source["fieldRef"]["fieldPath"])
    return env


def is_trainer(command: list[str]) -> bool:
    """`python -m kubestill_trainer ...` or one of its modules (the storage CLI of check Jobs and init steps)."""
    return len(command) >= 3 and command[1] == "-m" and command[2].split(".")[0] == "kubestill_trainer"


def container_argv(container: Mapping[str, Any], mounts: Mounts) -> list[str]:
    """command + args with mount paths rewritten; `python -m kubestill_trainer` runs on this interpreter."""
    argv = [mounts.rewrite(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
    if is_trainer(argv):
        argv[0] = sys.executable
    return argv


def triton_argv(argv: list[str], ports: Mapping[str, int]) -> tuple[list[str], dict[str, str]]:
    """`tritonserver --model-repository=DIR ...` -> the bundled tritonserver on our free ports."""
    from kubestill.dev.triton import tritonserver_command  # imports nvidia-pytriton paths lazily

    repo = next((a.split("=", 1)[1] for a in argv if a.startswith("--model-repository=")), None)
    if repo is None:
        raise ValueError(f"tritonserver command without --model-repository=: {argv}")
    cmd, env = tritonserver_command(Path(repo), ports["http"], ports["grpc"], ports["metrics"])
    return list(cmd), dict(env)


def termination_text(term_file: Path, log_file: Path, policy: str, exit_code: int) -> str:
    """What the kubelet reports: the termination-log file, else (FallbackToLogsOnError, failed) the log
    tail, at most 80 lines / 4096 bytes as the kubelet does."""
    text = term_file.read_text(errors="replace").strip() if term_file.exists() else ""
    if not text and policy == "FallbackToLogsOnError" and exit_code != 0 and log_file.exists():
        lines = log_file.read_text(errors="replace").splitlines()[-80:]
        text = "\n".join(lines)[-4096:]
    return text[:4096]


class Process:
    """A container process with its log file; stop() kills its whole process group."""

    def __init__(self, argv: list[str], env: Mapping[str, str], log_file: Path, cwd: Path) -> None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self.argv, self.env, self.cwd = list(argv), dict(env), cwd
        self.log_file = log_file
        self._log = open(log_file, "ab")  # noqa: SIM115 (closed in wait/stop)
        self.popen = subprocess.Popen(argv, env=dict(env), stdout=self._log, stderr=subprocess.STDOUT,
                                      cwd=str(cwd), start_new_session=True)

    def restart(self) -> Process:
        """A fresh process with the same command (the kubelet's container restart)."""
        return Process(self.argv, self.env, self.log_file, self.cwd)

    def poll(self) -> int | None:
        code = self.popen.poll()
        if code is not None:
            self._log.close()
        return code

    def stop(self, timeout: float = 10) -> None:
        stop_group(self.popen, timeout)
        self._log.close()


def local_service_hosts(services: Sequence[Mapping[str, Any]], annotation: str) -> dict[str, str]:
    """`<name>.<namespace>.svc[.cluster.local]:<port>` -> `127.0.0.1:<local port>` for every Service port the
    node published in `annotation` (node_deployments.ENDPOINTS_ANNOTATION): the in-cluster addresses a Job's
    container is given (the serving check's Service URL) resolve to nothing on the host, so the node rewrites
    them the way the cluster's DNS and kube-proxy would route them.

    >>> svc = {"metadata": {"name": "m-triton", "namespace": "ml",
    ...        "annotations": {"a": '{"http": "http://127.0.0.1:41000", "grpc": "127.0.0.1:41001"}'}},
    ...        "spec": {"ports": [{"name": "http", "port": 8000}, {"name": "grpc", "port": 8001}]}}
    >>> local_service_hosts([svc], "a")["m-triton.ml.svc:8000"]
    '127.0.0.1:41000'
    """
    out: dict[str, str] = {}
    for svc in services:
        meta = svc.get("metadata") or {}
        text = (meta.get("annotations") or {}).get(annotation)
        if not text:
            continue
        urls = json.loads(text)
        for port in (svc.get("spec") or {}).get("ports") or []:
            local = urls.get(port.get("name") or str(port["port"]))
            if not local:
                continue
            host = str(local).split("://", 1)[-1]
            for suffix in (".svc.cluster.local", ".svc"):
                out[f"{meta['name']}.{meta['namespace']}{suffix}:{port['port']}"] = host
    return out


def rewrite_service_hosts(env: Mapping[str, str], hosts: Mapping[str, str]) -> dict[str, str]:
    """`env` with every in-cluster Service address of `hosts` replaced by its local one (longest first, so the
    `.svc.cluster.local` form is not cut to `.svc`).

    >>> rewrite_service_hosts({"R": '{"url": "http://m-triton.ml.svc:8000"}'}, {"m-triton.ml.svc:8000": "127.0.0.1:9"})
    {'R': '{"url": "http://127.0.0.1:9"}'}
    """
    if not hosts:
        return dict(env)
    pattern = re.compile("|".join(re.escape(h) for h in sorted(hosts, key=len, reverse=True)))
    return {k: pattern.sub(lambda m: hosts[m.group(0)], v) for k, v in env.items()}
