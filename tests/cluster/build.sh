#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kubectl and helm from Go modules into a per-machine cache and prints the
# directory holding them. A stamp of the inputs makes a second run a no-op (seconds), so CI and
# `kubestill dev up` can call it every time. Go's own module and build caches make a rebuild incremental.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
HELM_VERSION=v3.22.0
GATEWAY_API_VERSION=v1.5.1
bin=${KUBESTILL_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubestill/bin}
stamp=$( (cat "$here/go.mod" "$here/go.sum" "$here"/cmd/*/main.go; echo "$HELM_VERSION $GATEWAY_API_VERSION") | sha256sum | cut -c1-16)
if [ -f "$bin/.stamp" ] && [ "$(cat "$bin/.stamp")" = "$stamp" ]; then
  echo "$bin"; exit 0
fi
mkdir -p "$bin"
cd "$here"
export GOFLAGS=-mod=mod CGO_ENABLED=0
for cmd in etcd kube-apiserver kube-controller-manager kubectl; do
  echo "building $cmd (first build takes a while)" >&2
  go build -trimpath -ldflags='-s -w' -o "$bin/$cmd" "./cmd/$cmd"
done
echo "building helm $HELM_VERSION" >&2
GOBIN="$bin" go install -trimpath -ldflags='-s -w' "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
# The Gateway API CRDs ship inside the Go module; copy the standard channel next to the binaries.
gw=$(go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
rm -rf "$bin/gateway-api-crds"; mkdir -p "$bin/gateway-api-crds"
cp "$gw"/config/crd/standard/*.yaml "$bin/gateway-api-crds/"
chmod -R u+w "$bin/gateway-api-crds"
echo "$stamp" > "$bin/.stamp"
echo "$bin"
