#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), then runs the whole lifecycle locally: a real control plane, the
# operator, a local node, a DistillationJob (label -> train -> evaluate -> export on real data with a real
# MiniLM teacher), the StudentModel served by tritonserver, and a CanaryRollout stepping traffic to it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${KUBESTILL_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kubestill/venv}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$VENV/bin/kubestill" dev demo "$@"
