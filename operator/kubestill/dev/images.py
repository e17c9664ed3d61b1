"""The project's images, built here from the repository's Dockerfiles without Docker (root only).

- base: a Debian-stable minbase with python3 and its venv module, made by mmdebstrap from this host's apt
  sources and committed as `localhost/kubestill/base:bookworm`; passed as the Dockerfiles' base-image build
  argument (users build the same Dockerfiles FROM their usual bases: python:3.12-slim, a CUDA image).
- operator (operator/Dockerfile), trainer (trainer-image/Dockerfile), serving (serving-image/Dockerfile, on the
  trainer image: tritonserver's python backend plus all the exported model.py imports), built by buildah with
  its layer cache and pip's download cache (RUN cache mounts), so a rebuild after a source change redoes only
  the layers from the source COPY on.
- `load(containerd, ...)`: the images into the real node's containerd store (a cache kept across nodes), only
  what changed since the last import; `build` ends with `preload`, which does that with a private containerd,
  so a node (and the tests) start with the images in place.

Tags are the chart's defaults (`kubestill-operator:<appVersion>`, `operator.trainerImage`,
`operator.tritonImage`), so `helm install` on the real node needs no image overrides.

    python -m kubestill.dev.images build [operator trainer serving]    # what scripts/setup.sh runs (as root)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .controlplane import REPO_ROOT

log = logging.getLogger("kubestill.images")

VERSION = "0.1.0"
BASE_IMAGE = "localhost/kubestill/base:bookworm"
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
TOOLS = {"buildah": "buildah", "skopeo": "skopeo", "mmdebstrap": "mmdebstrap"}
STAMPS = "kubestill-images.json"  # in containerd's root: {image ref: buildah image ID last imported}


@dataclass(frozen=True)
class Image:
    name: str          # as Pods name it (containerd normalizes it to docker.io/library/...)
    dockerfile: str    # relative to the repository root, which is the build context
    build_args: tuple[tuple[str, str], ...]

    @property
    def ref(self) -> str:
        """The fully qualified name containerd (and so the kubelet) knows it by."""
        return f"docker.io/library/{self.name}"

    @property
    def local(self) -> str:
        """buildah's name for it."""
        return f"localhost/{self.name}"


IMAGES = {
    "operator": Image(f"kubestill-operator:{VERSION}", "operator/Dockerfile", (("PYTHON_IMAGE", BASE_IMAGE),)),
    "trainer": Image(f"kubestill-trainer:{VERSION}", "trainer-image/Dockerfile", (("CUDA_IMAGE", BASE_IMAGE),)),
    "serving": Image(f"kubestill-serving:{VERSION}", "serving-image/Dockerfile",
                     (("TRAINER_IMAGE", f"localhost/kubestill-trainer:{VERSION}"),)),
}
# What each image is built on, so building one builds what it needs first.
NEEDS = {"serving": ("trainer",)}


class ImagesUnavailable(RuntimeError):
    """Images cannot be built here (not root, or a tool is missing); the message says which."""


def missing_tools() -> list[str]:
    reasons = [] if os.geteuid() == 0 else ["not root: buildah builds into /var/lib/containers (rootful)"]
    reasons += [f"{tool} is missing (Debian package {pkg})" for tool, pkg in TOOLS.items() if not shutil.which(tool)]
    return reasons


def _run(*argv: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, text=True, check=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def image_id(local_name: str) -> str | None:
    """buildah's image ID (the config digest) of `local_name`, None when it has none."""
    out = subprocess.run(["buildah", "images", "--json", local_name], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        return None
    found = json.loads(out.stdout)
    return str(found[0]["id"]) if found else None


def _apt_sources() -> list[str]:
    """This host's apt sources, given to mmdebstrap as files: the base gets the mirror the host uses."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.sources")),
             *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    return [str(f) for f in files if f.is_file() and f.read_text().strip()]


# pip in the base trusts the system's CA store (pip's own bundle is certifi's), so a build can hand it this
# host's store (build_volumes): a host behind a TLS-inspecting proxy trusts that proxy's CA there.
BASE_PIP_CONF = "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def _base_recipe() -> str:
    return hashlib.sha256(f"{BASE_SUITE} {BASE_PACKAGES} {BASE_PIP_CONF} v2".encode()).hexdigest()[:12]


def build_volumes() -> list[str]:
    """Mounted into every RUN of our builds, never committed: this host's CA store over the base's (the file
    exists in the base, so no mount point is left in a layer)."""
    return [f"--volume={HOST_CA}:{HOST_CA}:ro"] if HOST_CA.is_file() else []


def build_base() -> str:
    """The Debian minbase image (kept until its recipe changes: rebuilding it would change every layer above)."""
    label = f"kubestill.base-recipe={_base_recipe()}"
    if image_id(BASE_IMAGE):
        inspect = json.loads(_run("buildah", "inspect", "--type", "image", BASE_IMAGE, capture_output=True).stdout)
        labels = inspect.get("OCIv1", {}).get("config", {}).get("Labels") or {}
        if labels.get("kubestill.base-recipe") == _base_recipe():
            return BASE_IMAGE
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kubestill-base-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        _run("mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
             "--dpkgopt=path-exclude=/usr/share/locale/*", BASE_SUITE, str(rootfs), *_apt_sources())
        container = _run("buildah", "from", "scratch", capture_output=True).stdout.strip()
        try:
            _run("buildah", "add", "--quiet", container, str(rootfs), "/", stdout=subprocess.DEVNULL)
            pip_conf = Path(tmp) / "pip.conf"
            pip_conf.write_text(BASE_PIP_CONF)
            _run("buildah", "copy", "--quiet", container, str(pip_conf), "/etc/pip.conf", stdout=subprocess.DEVNULL)
            _run("buildah", "config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "--cmd", "/bin/sh", "--label", label, container)
            _run("buildah", "commit", "--quiet", container, BASE_IMAGE, capture_output=True)
        finally:
            subprocess.run(["buildah", "rm", container], capture_output=True)
    log.info("base image %s in %.0fs", BASE_IMAGE, time.monotonic() - t0)
    return BASE_IMAGE


def build(names: tuple[str, ...] = tuple(IMAGES)) -> dict[str, float]:
    """Build the named images (and what they are built on) in order; {name: seconds}."""
    reasons = missing_tools()
    if reasons:
        raise ImagesUnavailable("images cannot be built here: " + "; ".join(reasons))
    wanted: list[str] = []
    for name in names:
        for need in (*NEEDS.get(name, ()), name):
            if need not in wanted:
                wanted.append(need)
    build_base()
    times = {}
    for name in wanted:
        image = IMAGES[name]
        t0 = time.monotonic()
        dockerfile = REPO_ROOT / image.dockerfile
        args = [f"--build-arg={k}={v}" for k, v in image.build_args]
        ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
        _run("buildah", "bud", "--layers", "--force-rm", "--pull=never", "--network=host", "--format=oci", "--quiet",
             f"--ignorefile={ignore}", *build_volumes(), *args, "-f", str(dockerfile), "-t", image.local,
             str(REPO_ROOT), stdout=subprocess.DEVNULL)
        times[name] = time.monotonic() - t0
        log.info("built %s in %.0fs", image.local, times[name])
    return times


class Containerd(Protocol):
    """What loading images needs of a containerd: the real node's, or a private one (preload)."""

    containerd_root: Path

    @property
    def socket(self) -> Path: ...

    def ctr(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]: ...


@dataclass
class PrivateContainerd:
    """containerd alone (no CRI, no network) on the real node's image store, to import images into it before
    any node starts: scripts/setup.sh preloads them while Go compiles, so the tests find them there."""

    containerd_root: Path
    run_dir: Path

    @property
    def socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    def ctr(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", f"--address={self.socket}", "-n", "k8s.io", *args], capture_output=True,
                              text=True, check=check, timeout=timeout)

    @classmethod
    @contextlib.contextmanager
    def running(cls, containerd_root: Path) -> Iterator[PrivateContainerd]:
        with tempfile.TemporaryDirectory(prefix="kubestill-containerd-") as tmp:
            me = cls(containerd_root, Path(tmp))
            config = Path(tmp) / "config.toml"
            config.write_text(f"""version = 2
root = "{containerd_root}"
state = "{Path(tmp) / 'state'}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.tracing",
                    "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{me.socket}"
[ttrpc]
  address = "{me.socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{Path(tmp) / 'opt'}"
""")
            containerd_root.mkdir(parents=True, exist_ok=True)
            with open(Path(tmp) / "containerd.log", "wb") as out:
                proc = subprocess.Popen(["containerd", f"--config={config}"], stdout=out, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 60
                while me.ctr("version", check=False).returncode != 0:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("containerd did not start: "
                                           + (Path(tmp) / "containerd.log").read_text()[-2000:])
                    time.sleep(0.2)
                yield me
            finally:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def preload(names: tuple[str, ...] = tuple(IMAGES)) -> None:
    """Import the built images into the real node's (default) image store, with a private containerd."""
    from .realnode_config import default_containerd_root

    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        log.info("no containerd here: images not preloaded")
        return
    root = default_containerd_root()
    stamps_file = root / STAMPS
    stamps = json.loads(stamps_file.read_text()) if stamps_file.exists() else {}
    if all(stamps.get(IMAGES[n].ref) == image_id(IMAGES[n].local) for n in names):
        return  # imported as built (a node's own load() still checks containerd really has them)
    with PrivateContainerd.running(root) as containerd:
        load(containerd, names)


def _oci_layout(node: Containerd) -> Path:
    """An OCI layout kept beside containerd's store: skopeo writes into it only the blobs it does not hold yet."""
    return node.containerd_root.parent / "oci-layout"


def _referenced_blobs(layout: Path) -> dict[str, set[str]]:
    """{manifest digest: {its manifest, config and layer digests}} for every image in the layout's index."""
    index = json.loads((layout / "index.json").read_text())
    out: dict[str, set[str]] = {}
    for entry in index["manifests"]:
        digest = entry["digest"]
        manifest = json.loads((layout / "blobs" / "sha256" / digest.split(":")[1]).read_text())
        out[digest] = {digest, manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}
    return out


def _import_layout(node: Containerd, layout: Path, refs: dict[str, str]) -> None:
    """Stream the layout into `ctr images import -`, naming each image, with only the blobs containerd lacks:
    it needs the manifests and configs; layers it already holds (shared with another image, or unchanged since
    the last build) are found in its content store when the image is unpacked."""
    index = json.loads((layout / "index.json").read_text())
    for entry in index["manifests"]:
        name = entry.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
        entry.setdefault("annotations", {})["io.containerd.image.name"] = refs.get(name, name)
    index["manifests"] = [m for m in index["manifests"] if m["annotations"]["io.containerd.image.name"]
                          in refs.values()]
    have = set(node.ctr("content", "ls", "-q", check=False).stdout.split())
    wanted = set().union(*(blobs for digest, blobs in _referenced_blobs(layout).items()
                           if digest in {m["digest"] for m in index["manifests"]}))
    small = {m["digest"] for m in index["manifests"]} | {
        d for d in wanted if (layout / "blobs" / "sha256" / d.split(":")[1]).stat().st_size < 1 << 20}
    send = sorted((wanted - have) | small)
    proc = subprocess.Popen(["ctr", f"--address={node.socket}", "-n", "k8s.io", "images", "import", "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    with tarfile.open(fileobj=proc.stdin, mode="w|") as tar:
        tar.add(layout / "oci-layout", arcname="oci-layout")
        data = json.dumps(index).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for digest in send:
            tar.add(layout / "blobs" / "sha256" / digest.split(":")[1], arcname=f"blobs/sha256/{digest.split(':')[1]}")
    proc.stdin.close()
    assert proc.stderr is not None
    err = proc.stderr.read()
    if proc.wait() != 0:
        raise RuntimeError(f"ctr images import failed: {err.decode(errors='replace')[-2000:]}")


def _share_blobs(node: Containerd, layout: Path) -> None:
    """Each layout blob containerd now holds becomes a hard link to containerd's copy (both are immutable files
    named by their digest): gigabytes of layers are stored once, not twice."""
    store = node.containerd_root / "io.containerd.content.v1.content" / "blobs" / "sha256"
    for blob in (layout / "blobs" / "sha256").iterdir():
        theirs = store / blob.name
        if theirs.exists() and not blob.samefile(theirs):
            tmp = blob.with_name(blob.name + ".link")
            os.link(theirs, tmp)
            tmp.replace(blob)


def load(node: Containerd, names: tuple[str, ...] = tuple(IMAGES)) -> None:
    """Copy the named images from buildah's store into the node's containerd, which is a cache kept across nodes:
    nothing is copied when buildah's image ID is the one last imported, and only new layers otherwise."""
    stamps_file = node.containerd_root / STAMPS
    stamps = json.loads(stamps_file.read_text()) if stamps_file.exists() else {}
    todo: dict[str, str] = {}
    for name in names:
        image = IMAGES[name]
        wanted = image_id(image.local)
        if wanted is None:
            raise ImagesUnavailable(f"{image.local} is not built: python -m kubestill.dev.images build {name}")
        present = image.ref in node.ctr("images", "ls", "-q", check=False).stdout.split()
        if stamps.get(image.ref) != wanted or not present:
            todo[name] = wanted
    if not todo:
        return
    t0 = time.monotonic()
    layout = _oci_layout(node)
    for name in todo:
        # Uncompressed, as buildah stores them: no gzip of gigabytes, and the digests containerd already knows.
        # stderr kept for a failure only: containers/storage logs its graph driver choice there at info level.
        copied = subprocess.run(["skopeo", "copy", "--quiet", "--dest-oci-accept-uncompressed-layers",
                                 f"containers-storage:{IMAGES[name].local}", f"oci:{layout}:{name}"],
                                text=True, stderr=subprocess.PIPE)
        if copied.returncode != 0:
            raise RuntimeError(f"skopeo copy of {IMAGES[name].local} failed: {copied.stderr.strip()[-2000:]}")
    # Blobs no image in the layout refers to any more (earlier builds) go.
    keep = {d.split(":")[1] for blobs in _referenced_blobs(layout).values() for d in blobs}
    for blob in (layout / "blobs" / "sha256").iterdir():
        if blob.name not in keep:
            blob.unlink()
    _import_layout(node, layout, {name: IMAGES[name].ref for name in todo})
    _share_blobs(node, layout)
    for name, wanted in todo.items():
        stamps[IMAGES[name].ref] = wanted
    stamps_file.write_text(json.dumps(stamps, indent=1))
    log.info("loaded %s into containerd in %.0fs", ", ".join(todo), time.monotonic() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubestill.dev.images", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    b = sub.add_parser("build", help="build images with buildah (default: all)")
    b.add_argument("names", nargs="*", metavar="NAME", help=f"one of {', '.join(IMAGES)}")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in IMAGES]
    if unknown:
        parser.error(f"unknown image {', '.join(unknown)} (images: {', '.join(IMAGES)})")
    logging.basicConfig(level=logging.INFO, format="[images] %(message)s", stream=sys.stderr)
    try:
        times = build(tuple(args.names) or tuple(IMAGES))
        t0 = time.monotonic()
        preload(tuple(args.names) or tuple(IMAGES))
        times["preload into containerd"] = time.monotonic() - t0
    except ImagesUnavailable as err:
        print(err, file=sys.stderr)
        return 2
    for name, seconds in times.items():
        print(f"{IMAGES[name].local if name in IMAGES else name}: {seconds:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
