#!/usr/bin/env bash
# The CUDA path, checked on a machine without a GPU (CI runs this from scripts/test.sh):
#  1. installs nvcc from PyPI's CUDA 13.0 wheels into a cache outside the repo (once);
#  2. compiles every kernels/cuda/*.cu to PTX and runs `ptxas -v` for sm_80 and sm_90,
#     printing a register / shared-memory table and failing on any register spill;
#  3. generates stub CUDA libraries (scripts/cuda_stubs.py) so `cuda` binaries link and start;
#  4. builds with `--features cuda`, in one cargo invocation, the gridserve binary, every crate's
#     unit tests and the device backend's tests (sharing ./target with scripts/test.sh, so only
#     the crates the feature changes are rebuilt), and runs the kernels' and models' tests from
#     it: the parity tests' CUDA halves print SKIPPED without a GPU;
#  5. checks that a `cuda` gridserve asked for `--device cuda:0` fails with a clear message.
# Env: GRIDSERVE_CUDA_DIR (the toolkit cache), CUDA_COMPUTE_CAP (PTX target, default 80).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log() { printf '[check-cuda] %s\n' "$*" >&2; }

# nvcc 13.0.x: its PTX (ISA 9.0) loads on R580+ drivers, the oldest that run CUDA 13 at all.
cache="${GRIDSERVE_CUDA_DIR:-$HOME/.cache/gridserve/cuda-13.0}"
cuda="$cache/nvidia/cu13"
if [ ! -x "$cuda/bin/nvcc" ]; then
  log "installing nvcc (CUDA 13.0 wheels from PyPI) into $cache"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$cache" \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
fi
# candle-kernels links its MoE kernels against the CUDA runtime: the wheel ships only the
# versioned library, so give the linker its unversioned name.
ln -sf libcudart.so.13 "$cuda/lib/libcudart.so"
export CUDA_HOME="$cuda" CUDA_PATH="$cuda" PATH="$cuda/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}" CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-2}"
nvcc --version | tail -1 >&2

log "ptxas over kernels/cuda for sm_80 and sm_90"
ptx_dir="$(mktemp -d)"
trap 'rm -rf "$ptx_dir"' EXIT
for cap in 80 90; do
  for cu in kernels/cuda/*.cu; do
    ptx="$ptx_dir/$(basename "${cu%.cu}")_$cap.ptx"
    nvcc --ptx -O3 -std=c++17 -arch="compute_$cap" -o "$ptx" "$cu"
    ptxas -v -arch="sm_$cap" -o /dev/null "$ptx" 2>&1
  done
done | python3 scripts/ptxas_table.py

cargo fetch --quiet
# cudarc's bindings name the functions to stub. `cargo fetch` downloads crates without always
# unpacking them, so fall back to the downloaded archive.
registry="${CARGO_HOME:-$HOME/.cargo}/registry"
cudarc_src="$(ls -d "$registry"/src/*/cudarc-0.19.*/src 2>/dev/null | sort -V | tail -1)"
if [ -z "$cudarc_src" ]; then
  crate="$(ls "$registry"/cache/*/cudarc-0.19.*.crate | sort -V | tail -1)"
  tar -xzf "$crate" -C "$ptx_dir"
  cudarc_src="$(ls -d "$ptx_dir"/cudarc-0.19.*/src)"
fi
stubs="$cuda/lib/stubs"
python3 scripts/cuda_stubs.py "$cudarc_src" "$stubs" >&2
export LD_LIBRARY_PATH="$stubs:$cuda/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# One cargo invocation builds everything (llama_serve is there for the gridserve binary its
# tests need), so features (build scripts' included) resolve once
# and candle's CUDA kernels compile once; the tests then run from their binaries.
features="gridserve/cuda,gridserve-models/cuda,gridserve-kernels/cuda"
target="${CARGO_TARGET_DIR:-target}"
log "cargo test --no-run --features cuda: the gridserve binary, the unit-test binaries and the device backend's"
cargo test -p gridserve-kernels -p gridserve-models -p gridserve --lib --bins --test device_backend --test llama_serve \
  --features "$features" --no-run --message-format=json-render-diagnostics > "$ptx_dir/build.jsonl"
tests="$(python3 - "$ptx_dir/build.jsonl" <<'PY'
import json, sys
# By crate directory: the package id's spelling differs between cargo versions.
want = {("kernels", "lib"), ("models", "lib"), ("models", "device_backend")}
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]:
        continue
    pkg = m["manifest_path"].rsplit("/", 2)[-2]
    kind = "lib" if "lib" in m["target"]["kind"] else m["target"]["name"]
    if (pkg, kind) in want:
        print(m["executable"])
PY
)"
[ "$(echo "$tests" | wc -l)" -eq 3 ] || { log "FAIL: expected 3 test binaries, got: $tests"; exit 1; }
log "kernel and model tests in the cuda build (CUDA halves print SKIPPED without a GPU)"
for t in $tests; do
  "$t" --nocapture --test-threads 2 > "$ptx_dir/test.log" 2>&1 \
    || { cat "$ptx_dir/test.log"; log "FAIL: $t"; exit 1; }
  grep -E "SKIPPED|test result" "$ptx_dir/test.log" >&2
done

log "a cuda build without a GPU: --device cuda:0 must fail clearly, not panic"
bin="$target/debug/gridserve"
set +e
# `generate` (no port to bind): the device is opened before the model file is read.
out="$("$bin" --device cuda:0 --model /nonexistent.gguf generate --prompt hi 2>&1)"
code=$?
set -e
echo "$out" | tail -3 >&2
if [ "$code" -eq 0 ] || echo "$out" | grep -q "panicked"; then
  log "FAIL: expected a clean error exit (got $code)"; exit 1
fi
echo "$out" | grep -q "cuda:0" || { log "FAIL: the error does not name cuda:0"; exit 1; }
# Disk is what CI ran out of once (two builds of ./target); keep the figure in the log.
log "ok (target: $(du -sh "$target" | cut -f1); free: $(df -h --output=avail "$target" | tail -1 | tr -d ' '))"
