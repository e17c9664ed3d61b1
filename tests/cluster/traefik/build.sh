#!/usr/bin/env bash
# Builds Traefik (the Gateway API data plane of the tests and the demo: kubestill/dev/gateway.py) from its Go module
# into the same per-machine cache as the control plane (~/.cache/kubestill/bin) and prints its path.
# Traefik's go.mod has replace directives, so `go install` is refused: this wrapper module (go.mod) repeats them,
# and works around what the module proxy (proxy.golang.org) does not serve:
#   - github.com/traefik/traefik/dynamic/ext: a nested module of Traefik's repository, never in a module zip;
#     ./ext stands in for it (two empty structs, as in the open-source build);
#   - containous/go-http-auth at Traefik's pinned pseudo-version (403): go.mod picks an older, served commit;
#   - 13 DNS-provider SDKs that go-acme/lego/v5 requires (403): lego is replaced by a copy of its module, made here
#     from the module cache, without those providers (only ACME DNS challenges through them are lost; Traefik's
#     HTTP routing, the Gateway API and the CRD providers do not use lego at all).
# A stamp of the inputs makes a second run a no-op; Go's module and build caches make a rebuild incremental.
# Cold (every module downloaded, Go's build cache holding only the control plane's): 16 minutes on 2 cores under
# load ~7, with -p 1 and GOMEMLIMIT keeping the shared machine usable; after a change of these inputs 12-17 s.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
self="$here/$(basename "$0")"  # $0 may be relative, and the build runs after `cd "$here"`
bin=${KUBESTILL_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubestill/bin}
# The lego DNS providers whose SDK modules the proxy refuses (403; checked 2026-11-30 for lego v5.4.1):
# "provider package  module(s) to drop from lego's go.mod".
refused=(
  "alidns        github.com/go-acme/alidns-20150109/v5"
  "aliesa        github.com/go-acme/esa-20240910/v3"
  "azion         github.com/aziontech/azionapi-go-sdk"
  "dnsimple      github.com/dnsimple/dnsimple-go/v9"
  "edgedns       github.com/akamai/AkamaiOPEN-edgegrid-golang/v13"
  "edgeone       github.com/go-acme/tencentedgdeone"
  "huaweicloud   github.com/huaweicloud/huaweicloud-sdk-go-v3"
  "oraclecloud   github.com/nrdcg/oci-go-sdk/common/v1065 github.com/nrdcg/oci-go-sdk/dns/v1065"
  "regfish       github.com/regfish/regfish-dnsapi-go"
  "sakuracloud   github.com/sacloud/sacloud-sdk-go"
  "tencentcloud  github.com/go-acme/tencentclouddnspod"
  "ucloud        github.com/ucloud/ucloud-sdk-go"
  "yandexcloud   github.com/yandex-cloud/go-sdk/services/dns"
)
stamp=$(cat "$self" "$here/go.mod" "$here/go.sum" "$here"/ext/* | sha256sum | cut -c1-16)
if [ -x "$bin/traefik" ] && [ -f "$bin/traefik-crds.yml" ] && [ -f "$bin/.traefik-stamp" ] &&
   [ "$(cat "$bin/.traefik-stamp")" = "$stamp" ]; then
  echo "$bin/traefik"; exit 0
fi
mkdir -p "$bin"
cd "$here"
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOMEMLIMIT=${GOMEMLIMIT:-2GiB}

# Where the module cache holds a module (downloading it if needed); run outside this module, whose go.mod
# points at lego-trimmed/ before it exists.
module_dir() {
  (cd / && GOFLAGS= go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
}

traefik_version=$(sed -n 's|^require github.com/traefik/traefik/v3 \(v[^ ]*\)$|\1|p' go.mod)
traefik_dir=$(module_dir "github.com/traefik/traefik/v3@$traefik_version")
# The lego version Traefik requires, read from its go.mod rather than typed here.
lego_version=$(sed -n 's|^\tgithub.com/go-acme/lego/v5 \(v[^ ]*\)$|\1|p' "$traefik_dir/go.mod")
lego_dir=$(module_dir "github.com/go-acme/lego/v5@$lego_version")

echo "trimming lego $lego_version (${#refused[@]} DNS providers whose SDKs are not served)" >&2
rm -rf lego-trimmed
cp -r "$lego_dir" lego-trimmed
chmod -R u+w lego-trimmed
registry=lego-trimmed/providers/dns/zz_gen_dns_providers.go
unavailable='return nil, fmt.Errorf("DNS provider %q is not in this build (the proxy does not serve its SDK)", name)'
for entry in "${refused[@]}"; do
  read -r p modules <<<"$entry"
  # Fail loudly when a newer lego changed the generated registry: a silent no-op would fail later, in go build.
  if ! grep -q "^[[:space:]]*return $p\.NewDNSProvider()$" "$registry"; then
    echo "lego $lego_version: no registry entry for $p" >&2; exit 1
  fi
  rm -r "lego-trimmed/providers/dns/$p"
  sed -i -e "\|^[[:space:]]*\"github.com/go-acme/lego/v5/providers/dns/$p\"$|d" \
    -e "s|^\([[:space:]]*\)return $p\.NewDNSProvider()$|\1$unavailable|" "$registry"
  for m in $modules; do (cd lego-trimmed && go mod edit -droprequire "$m"); done
done

echo "building traefik $traefik_version (the first build takes a while)" >&2
go build -p "${KUBESTILL_GO_PARALLEL:-1}" -trimpath -o "$bin/traefik.new" \
  -ldflags="-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$traefik_version" \
  github.com/traefik/traefik/v3/cmd/traefik
mv "$bin/traefik.new" "$bin/traefik"
# Traefik's CRDs (TraefikService, Middleware ...) for its kubernetescrd provider, from the same module zip.
install -m 0644 "$traefik_dir/docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml" \
  "$bin/traefik-crds.yml"
# Stamped after the build: -mod=mod may have completed go.sum.
stamp=$(cat "$self" "$here/go.mod" "$here/go.sum" "$here"/ext/* | sha256sum | cut -c1-16)
echo "$stamp" > "$bin/.traefik-stamp"
echo "$bin/traefik"
