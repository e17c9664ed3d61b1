#!/usr/bin/env bash
# kubestill on a kind cluster, for users with Docker (the project's own tests use a node-less control plane
# instead: Docker is not needed there). Creates the cluster if missing, builds the operator (and trainer and
# serving) images from this checkout and loads them into kind, installs the Gateway API CRDs and the Helm chart, and
# waits for the operator. Idempotent: run it again after changing the code.
#
#   scripts/kind-up.sh
#   KIND_CLUSTER=dev KUBESTILL_TAG=test SKIP_TRAINER_IMAGE=1 scripts/kind-up.sh
#   scripts/kind-up.sh --set watch.mode=namespaced     # extra arguments go to `helm upgrade --install`
#
# Needs docker, kind, kubectl and helm on PATH (kubectl and helm built by tests/cluster/build.sh also work:
# PATH=~/.cache/kubestill/bin:$PATH). Remove everything with: kind delete cluster --name "$KIND_CLUSTER".
set -euo pipefail

cluster=${KIND_CLUSTER:-kubestill}
tag=${KUBESTILL_TAG:-dev}
namespace=${KUBESTILL_NAMESPACE:-kubestill-system}
gateway_api_version=${GATEWAY_API_VERSION:-v1.5.1}
root=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=${KUBESTILL_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubestill/bin}

say() { printf '\033[1m== %s\033[0m\n' "$*"; }
need() { command -v "$1" >/dev/null || { echo "kind-up: '$1' is not on PATH ($2)" >&2; exit 1; }; }
need docker "https://docs.docker.com/engine/install/"
need kind "go install sigs.k8s.io/kind@latest"
need kubectl "or PATH=$bin_dir:\$PATH after tests/cluster/build.sh"
need helm "or PATH=$bin_dir:\$PATH after tests/cluster/build.sh"

if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  say "kind cluster $cluster exists"
else
  say "creating kind cluster $cluster"
  kind create cluster --name "$cluster" --wait 180s
fi
kubectl config use-context "kind-$cluster" >/dev/null

say "building kubestill-operator:$tag"
docker build -f "$root/operator/Dockerfile" -t "kubestill-operator:$tag" "$root"
kind load docker-image "kubestill-operator:$tag" --name "$cluster"
if [ -z "${SKIP_TRAINER_IMAGE:-}" ] && [ -f "$root/trainer-image/Dockerfile" ]; then
  say "building kubestill-trainer:$tag (large: the torch stack)"
  docker build -f "$root/trainer-image/Dockerfile" -t "kubestill-trainer:$tag" "$root"
  kind load docker-image "kubestill-trainer:$tag" --name "$cluster"
  say "building kubestill-serving:$tag (tritonserver on the trainer image: what StudentModels run)"
  docker build -f "$root/serving-image/Dockerfile" --build-arg "TRAINER_IMAGE=kubestill-trainer:$tag" \
    -t "kubestill-serving:$tag" "$root"
  kind load docker-image "kubestill-serving:$tag" --name "$cluster"
fi

say "Gateway API $gateway_api_version CRDs"
# The copy tests/cluster/build.sh took from the Go module when present, else the upstream release bundle.
# Server-side: the HTTPRoute CRD is too large for client-side apply.
if [ -d "$bin_dir/gateway-api-crds" ]; then
  kubectl apply --server-side -f "$bin_dir/gateway-api-crds"
else
  kubectl apply --server-side -f \
    "https://github.com/kubernetes-sigs/gateway-api/releases/download/$gateway_api_version/standard-install.yaml"
fi

say "installing the chart into $namespace"
# Images were loaded into the nodes: never pull them. kind has nodes, so --wait works here.
helm upgrade --install kubestill "$root/charts/kubestill" \
  --namespace "$namespace" --create-namespace \
  --set image.repository=kubestill-operator \
  --set image.tag="$tag" \
  --set image.pullPolicy=Never \
  --set operator.trainerImage="kubestill-trainer:$tag" \
  --set operator.tritonImage="kubestill-serving:$tag" \
  --set operator.imagePullPolicy=IfNotPresent \
  --wait --timeout 5m "$@"

kubectl -n "$namespace" get pods -l app.kubernetes.io/instance=kubestill
cat <<MSG

kubestill runs on kind-$cluster. Next:
  kubectl apply -f $root/examples/distillationjob-classification.yaml
  kubectl get dj -w
MSG
