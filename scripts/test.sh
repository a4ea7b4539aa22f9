#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a fresh machine: installs what the tests need
# (CUDA toolchain wheels, Terraform checker tools) into ./.cache, then runs every check.
# This is the README's test command; .ci/run calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
started=$(date +%s)

step "CUDA toolchain (cached in .cache/)"
eval "$(scripts/cuda-toolchain.sh)"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test --workspace"
cargo test --workspace

step "fuzz: bounded run of the frame decoder"
scripts/fuzz.sh --seconds "${GPUFN_FUZZ_SECONDS:-30}"

step "Observability: InfluxDB line protocol and promtool (installs both from Debian)"
scripts/test-observability.sh

step "Terraform modules"
scripts/test-terraform.sh

echo
echo "all checks passed in $(( $(date +%s) - started ))s"
