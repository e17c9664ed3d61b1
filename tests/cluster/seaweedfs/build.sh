#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (the S3 server of the tests and the demo) from its Go module into the same per-machine
# cache as the control plane (~/.cache/kubestill/bin) and prints its path. The module has a replace directive,
# so `go install` is refused: this wrapper module repeats it (go.mod) and builds the package from there. A stamp
# of go.mod/go.sum makes a second run a no-op; Go's module and build caches make a rebuild incremental.
# Cold: about 6 minutes on 2 cores, up to 2.7 GB of memory (GOMEMLIMIT and -p 1 keep a shared machine usable).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${KUBESTILL_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubestill/bin}
stamp=$(cat "$here/go.mod" "$here/go.sum" "$0" | sha256sum | cut -c1-16)
if [ -x "$bin/weed" ] && [ -f "$bin/.weed-stamp" ] && [ "$(cat "$bin/.weed-stamp")" = "$stamp" ]; then
  echo "$bin/weed"; exit 0
fi
mkdir -p "$bin"
cd "$here"
echo "building weed (SeaweedFS; the first build takes a while)" >&2
GOFLAGS=-mod=mod CGO_ENABLED=0 GOMEMLIMIT=${GOMEMLIMIT:-2GiB} \
  go build -p "${KUBESTILL_GO_PARALLEL:-1}" -trimpath -ldflags='-s -w' -o "$bin/weed.new" \
  github.com/seaweedfs/seaweedfs/weed
mv "$bin/weed.new" "$bin/weed"
echo "$stamp" > "$bin/.weed-stamp"
echo "$bin/weed"
