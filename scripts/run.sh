#!/usr/bin/env bash
# Sets up (idempotent) and runs gridserve on the default model. Arguments go to `gridserve`;
# with none, it generates a completion for a sample prompt.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
if [ "$#" -eq 0 ]; then
  set -- generate --prompt "The capital of France" --max-tokens 32
fi
exec cargo run --release --quiet -p gridserve -- "$@"
