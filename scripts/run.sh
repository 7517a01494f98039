#!/usr/bin/env bash
# Sets up (idempotent) and runs gridserve on the default model. Arguments go to `gridserve`;
# with none, it serves the OpenAI-compatible API on http://127.0.0.1:8000.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
if [ "$#" -eq 0 ]; then
  set -- serve
fi
exec cargo run --release --quiet -p gridserve -- "$@"
