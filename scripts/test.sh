#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing (scripts/setup.sh: the
# model; scripts/install-openadr-vtn.sh: the OpenADR VTN and PostgreSQL the VEN's end-to-end
# test runs against, cached outside the repo), then runs every test of the workspace, the
# real-model and real-VTN ones included; then scripts/check-cuda.sh builds and checks the CUDA
# path (nvcc from PyPI, ptxas spill table, stub driver; no GPU needed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# A one-off build gains nothing from incremental state, which costs GBs of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
bash scripts/setup.sh
eval "$(bash scripts/install-openadr-vtn.sh)"
cargo test --workspace --all-targets
bash scripts/check-cuda.sh
