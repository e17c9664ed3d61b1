#!/usr/bin/env bash
# Builds upstream Prometheus from its Go module into the same per-machine cache as the control plane
# (~/.cache/kubestill/bin) and prints its path. Used where the tests discover targets with kubernetes_sd_configs:
# Debian's prometheus package is built without Kubernetes service discovery (NEWS.Debian, 1.5.0+ds-1), and the
# project's static-target uses keep Debian's. The module has no replace directives, so `go install` works; the web
# UI is not embedded (the HTTP API, which is all the tests use, is). A stamp makes a second run a no-op.
# Only the Kubernetes service discovery is compiled in (Prometheus >= 3.10: build tag remove_all_sd drops every
# bundled provider, enable_kubernetes_sd restores that one; static and file discovery are always there): the
# cloud providers' SDKs (AWS, Azure, GCE, OpenStack, ...) were most of a cold build's time on 2 cores.
set -euo pipefail
PROMETHEUS_VERSION=v0.316.0   # Prometheus 3.16.0 (its Go module versions are v0.<minor>.<patch>)
release=3.16.0
v=github.com/prometheus/common/version   # where `prometheus --version` reads its stamp
bin=${KUBESTILL_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubestill/bin}
stamp=$( (cat "$0"; echo "$PROMETHEUS_VERSION") | sha256sum | cut -c1-16)
if [ -x "$bin/prometheus" ] && [ -f "$bin/.prometheus-stamp" ] && [ "$(cat "$bin/.prometheus-stamp")" = "$stamp" ]; then
  echo "$bin/prometheus"; exit 0
fi
mkdir -p "$bin"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "building prometheus $PROMETHEUS_VERSION (the first build takes a while)" >&2
GOBIN="$work" CGO_ENABLED=0 GOMEMLIMIT=${GOMEMLIMIT:-2GiB} \
  go install -p "${KUBESTILL_GO_PARALLEL:-1}" -trimpath -tags remove_all_sd,enable_kubernetes_sd -ldflags="-s -w -X $v.Version=$release -X $v.Revision=$PROMETHEUS_VERSION -X $v.Branch=HEAD" \
  "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION"
mv "$work/prometheus" "$bin/prometheus"
echo "$stamp" > "$bin/.prometheus-stamp"
echo "$bin/prometheus"
