#!/usr/bin/env bash
# Lints, checks the layering and generated files, then runs every test (unit, integration on a real
# kube-apiserver, trainer end to end, operator and canary end to end, the real node) in two lanes at once.
# Run scripts/setup.sh first.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${KUBESTILL_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kubestill/venv}
# shellcheck disable=SC1091
source "$VENV/bin/activate"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail=0
step "ruff";          ruff check . || fail=1
step "mypy";          mypy operator/kubestill trainer-image/kubestill_trainer || fail=1
step "layers";        lint-imports || fail=1
step "generated CRDs"; kubestill crds --check || fail=1
step "pytest"
# Two lanes at once, each a pytest session with its own control plane. On 2 cores the whole run is about 63
# core-minutes of work, about half of it spent waiting (Pods starting, Prometheus scrapes, canary steps), so the
# lanes pair CPU-heavy suites with waiting ones: the real-node suite, then the operator's e2e suites on the process
# node (mostly waiting), the examples run as written, then GPTQ; and unit, the real-apiserver suites, the chart,
# then the rest of the trainer's (CPU-bound training). The real-node suite leads its lane: one node per host, and
# its teardown test must run after every other real-node test; e2e follows it (only the trainer's examples come
# after) because its operator fixture runs cluster-wide for the rest of the session and would reconcile objects that
# earlier suites create. Arguments go to both pytest lanes (e.g. -x, -k NAME); each output line is prefixed by its
# lane, and each lane ends with its own summary.
# As root (CI) the real-node suite must run: a host that cannot start the real node fails it instead of
# skipping it, so the fallback to the process node is never silent.
[ "$(id -u)" -eq 0 ] && export KUBESTILL_REQUIRE_REAL_NODE=1
# Each run's temporary files under one directory (about 8 GB after a whole run: trained models, exports, the
# node's state): removed when the run passes, kept when it fails, the two newest failed runs besides this one.
tmp=${TMPDIR:-/tmp}
# shellcheck disable=SC2012
ls -1dt "$tmp"/kubestill-tests.* 2>/dev/null | tail -n +3 | xargs -r rm -rf
base=$(mktemp -d "$tmp/kubestill-tests.XXXXXX")
narrowed=$#  # arguments (-k, -m ...) may leave a lane nothing to run; without them that is a failure
lane() {  # lane NAME PYTHON PYTEST-ARGS...: one pytest session, its temporary files under $base/NAME
  local name=$1 python=$2; shift 2
  # --durations: the slowest tests of each lane, to balance the lanes and trim what dominates CI time.
  "$python" -m pytest --basetemp="$base/$name" --durations=25 "$@" 2>&1 | sed -u "s/^/[$name] /"
  local code=${PIPESTATUS[0]}
  if [ "$code" -eq 5 ]; then
    [ "$narrowed" -gt 0 ] && return 0
    echo "[$name] pytest collected no tests: that is a failure here" >&2; code=1
  fi
  return "$code"
}
# The examples run as written (about 5 CPU-minutes of training) end the node lane rather than the trainer suite:
# measured, the api lane ran 7 minutes past the node lane, alone on the machine.
EXAMPLES=(tests/trainer/test_examples_run.py)
# GPTQ in its own venv (gptqmodel needs numpy 2, tritonserver's python backend stub numpy 1; scripts/setup.sh).
GPTQ_VENV=${KUBESTILL_GPTQ_VENV:-$VENV-gptq}
(
  code=0
  lane node python tests/realnode tests/e2e "${EXAMPLES[@]}" "$@" || code=1
  KUBESTILL_REQUIRE_GPTQ=1 lane gptq "$GPTQ_VENV/bin/python" tests/trainer/test_gptq.py || code=1
  exit $code
) &
node_pid=$!
lane api python tests/unit tests/integration tests/chart tests/trainer --ignore="${EXAMPLES[0]}" "$@" || fail=1
wait "$node_pid" || fail=1
if [ "$fail" -eq 0 ]; then
  rm -rf "$base"
else
  echo "the failed run's temporary files are kept in $base" >&2
fi
exit $fail
