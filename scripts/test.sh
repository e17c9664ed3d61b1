#!/usr/bin/env bash
# Lints, checks the layering and generated files, then runs every test (unit, integration on a real
# kube-apiserver, trainer end to end, operator and canary end to end). Run scripts/setup.sh first.
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
# Unit first (fast feedback), then the real-apiserver suites; e2e last because its operator fixture runs
# cluster-wide for the rest of the session and would reconcile the objects earlier suites create.
# As root (CI) the real-node suite must run: a host that cannot start the real node fails it instead of
# skipping it, so the fallback to the process node is never silent.
[ "$(id -u)" -eq 0 ] && export KUBESTILL_REQUIRE_REAL_NODE=1
python -m pytest tests/unit tests/integration tests/trainer tests/chart tests/realnode tests/e2e "$@"
rc=$?
if [ $rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here" >&2; rc=1; fi
[ $rc -eq 0 ] || fail=1
# GPTQ in its own venv (gptqmodel needs numpy 2, tritonserver's python backend stub numpy 1; scripts/setup.sh).
step "pytest: GPTQ (in ${GPTQ_VENV:=${KUBESTILL_GPTQ_VENV:-$VENV-gptq}})"
KUBESTILL_REQUIRE_GPTQ=1 "$GPTQ_VENV/bin/python" -m pytest tests/trainer/test_gptq.py || fail=1
exit $fail
