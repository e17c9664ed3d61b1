#!/usr/bin/env bash
# Builds a real single-node Kubernetes from Go modules into a per-machine cache and prints the directory
# holding it: etcd, kube-apiserver, kube-controller-manager, kubectl, helm (the control plane of the tests and
# `kubestill dev up`), kubelet, kube-scheduler, kube-proxy, crictl, coredns and the pod sandbox's `pause` (the
# real node, operator/kubestill/dev/realnode.py). A stamp of the inputs makes a second run a no-op (seconds),
# so CI and `kubestill dev up` can call it every time. Go's own module and build caches make a rebuild
# incremental.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
HELM_VERSION=v3.22.0
GATEWAY_API_VERSION=v1.5.1
CRICTL_VERSION=v1.37.0
bin=${KUBESTILL_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubestill/bin}
stamp=$( (cat "$0" "$here/go.mod" "$here/go.sum" "$here"/cmd/*/main.go "$here"/coredns/go.* "$here"/coredns/*.go
          echo "$HELM_VERSION $GATEWAY_API_VERSION $CRICTL_VERSION") | sha256sum | cut -c1-16)
if [ -f "$bin/.stamp" ] && [ "$(cat "$bin/.stamp")" = "$stamp" ]; then
  echo "$bin"; exit 0
fi
mkdir -p "$bin"
cd "$here"
export GOFLAGS=-mod=mod CGO_ENABLED=0
# Version stamping, as Kubernetes' own hack/lib/version.sh does: unstamped, every component reports
# v0.0.0-master+$Format:%H$, which some clients cannot parse (Kueue exits at start-up) and the Node shows.
k8s=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
minor=$(echo "$k8s" | cut -d. -f2)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  ldflags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
for cmd in etcd kube-apiserver kube-controller-manager kubectl kube-scheduler kubelet kube-proxy pause; do
  echo "building $cmd $k8s (first build takes a while)" >&2
  go build -trimpath -ldflags="$ldflags" -o "$bin/$cmd" "./cmd/$cmd"
done
# Cluster DNS: CoreDNS with only the plugins a cluster's Corefile uses (its own small module: CoreDNS pins a
# newer client-go than the control plane's replace block allows, and the full plugin set pulls every cloud SDK).
echo "building coredns" >&2
(cd coredns && go build -trimpath -ldflags='-s -w' -o "$bin/coredns" .)
echo "building helm $HELM_VERSION, crictl $CRICTL_VERSION" >&2
GOBIN="$bin" go install -trimpath -ldflags='-s -w' "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
GOBIN="$bin" go install -trimpath -ldflags='-s -w' "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
# The Gateway API CRDs ship inside the Go module; copy the standard channel next to the binaries.
gw=$(go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
rm -rf "$bin/gateway-api-crds"; mkdir -p "$bin/gateway-api-crds"
cp "$gw"/config/crd/standard/*.yaml "$bin/gateway-api-crds/"
chmod -R u+w "$bin/gateway-api-crds"
echo "$stamp" > "$bin/.stamp"
echo "$bin"
