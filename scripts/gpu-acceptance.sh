#!/usr/bin/env bash
# First-GPU qualification: run on a machine with an NVIDIA GPU, its driver (R580+ for the
# CUDA 13.0 PTX we build; see README) and root (clock locks and power limits need it).
#  1. builds with `--features cuda` (nvcc from $CUDA_HOME, else the PyPI wheels check-cuda.sh
#     installs) and runs the CUDA parity tests: kernels vs their CPU references, the device
#     backend vs the CPU backend. Here no test may print SKIPPED.
#  2. measures prefill and batched-decode throughput (`gridserve bench engine --device cuda:N`)
#     with NVML power sampled every 100 ms, at each batch size, at default clocks and at each
#     locked SM clock; writes throughput.csv (tokens per joule included).
#  3. measures step responses at 10 ms: under a decode load, locks the SM clock low and back,
#     then sets the power limit to its minimum and back; reports command → clock reached and
#     command → power settled (scripts/acceptance/step_response.py).
#  4. fits the twin to the default-clock rows (`gridserve twin fit`) and writes
#     config/gpus/<name>.toml with the fit error per row in its header.
# usage: scripts/gpu-acceptance.sh --model PATH --shape NAME [--gpu N] [--name NAME]
#          [--batches 1,8,32,64] [--clocks 1500,1000] [--base h100-sxm]
#   --shape: the model's shape under config/models/ (e.g. llama-3.1-8b) for the twin fit.
# Output: acceptance/<date>/ (logs, CSVs, measured.json, the fitted profile).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log() { printf '[gpu-acceptance] %s\n' "$*" >&2; }

model="" shape="" gpu=0 name="" batches="1,8,32,64" clocks="" base="h100-sxm"
prompt_tokens=128 decode_tokens=128
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --shape) shape="$2"; shift 2 ;;
    --gpu) gpu="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    --batches) batches="$2"; shift 2 ;;
    --clocks) clocks="$2"; shift 2 ;;
    --base) base="$2"; shift 2 ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
[ -n "$model" ] && [ -n "$shape" ] || { echo "usage: $0 --model PATH --shape NAME [...]" >&2; exit 2; }
command -v nvidia-smi >/dev/null || { log "no nvidia-smi: this script needs an NVIDIA GPU"; exit 1; }
gpu_name="$(nvidia-smi -i "$gpu" --query-gpu=name --format=csv,noheader)"
name="${name:-$(echo "$gpu_name" | tr '[:upper:] ' '[:lower:]-' | tr -cd 'a-z0-9-')}"
out="acceptance/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
log "GPU $gpu: $gpu_name; results in $out"
nvidia-smi -i "$gpu" -q > "$out/nvidia-smi-q.txt"

# 1. Build and parity.
if ! command -v nvcc >/dev/null && [ -z "${CUDA_HOME:-}" ]; then
  cache="${GRIDSERVE_CUDA_DIR:-$HOME/.cache/gridserve/cuda-13.0}"
  [ -x "$cache/nvidia/cu13/bin/nvcc" ] || bash scripts/check-cuda.sh
  export CUDA_HOME="$cache/nvidia/cu13"
fi
export CUDA_HOME="${CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc)")")}"
export PATH="$CUDA_HOME/bin:$PATH"
# A `cuda` gridserve loads libcuda (the driver's), libcudart, libcublas, libcublasLt,
# libcurand and libnvrtc (CUDA 13). Without a system toolkit, take them from PyPI's wheels.
if ! ldconfig -p | grep -q 'libcublas.so.13'; then
  libs="${GRIDSERVE_CUDA_DIR:-$HOME/.cache/gridserve/cuda-13.0}"
  if [ ! -d "$libs/nvidia/cu13/lib" ] || ! ls "$libs"/nvidia/cu13/lib/libcublas.so.13 >/dev/null 2>&1; then
    log "installing the CUDA 13 runtime libraries from PyPI into $libs"
    python3 -m pip install --quiet --no-deps --target "$libs" nvidia-cublas nvidia-curand \
      nvidia-cuda-nvrtc nvidia-cuda-runtime
  fi
  export LD_LIBRARY_PATH="$libs/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
ln -sf libcudart.so.13 "$CUDA_HOME/lib/libcudart.so" 2>/dev/null || true
cap="$(nvidia-smi -i "$gpu" --query-gpu=compute_cap --format=csv,noheader | tr -d .)"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-$cap}"
export CUDA_VISIBLE_DEVICES="$gpu"
log "building with --features cuda for sm_$CUDA_COMPUTE_CAP"
cargo build --release -p gridserve --bin gridserve --features cuda
bin="target/release/gridserve"
log "CUDA parity tests"
cargo test --release -p gridserve-kernels -p gridserve-models --features gridserve-kernels/cuda,gridserve-models/cuda \
  -- --include-ignored --nocapture 2>&1 | tee "$out/parity.log" | grep -E "test result|FAILED|SKIPPED" || true
if grep -q "SKIPPED" "$out/parity.log" || ! grep -q "test result: ok" "$out/parity.log" || grep -q "FAILED" "$out/parity.log"; then
  log "FAIL: parity tests failed or skipped on a GPU machine (see $out/parity.log)"; exit 1
fi

sample() {  # sample FILE PERIOD_MS: nvidia-smi trace in the background; prints its pid
  nvidia-smi -i "$gpu" --query-gpu=timestamp,power.draw,clocks.sm --format=csv,noheader,nounits \
    -lms "$2" > "$1" 2>/dev/null &
  echo $!
}
bench() {  # bench CLOCK BATCH
  local pid
  pid="$(sample "$out/power-$1-$2.csv" 100)"
  "$bin" --model "$model" --device cuda:0 bench engine --batch-sizes "$2" \
    --prompt-tokens "$prompt_tokens" --decode-tokens "$decode_tokens" --repeats 3 \
    --json "$out/run-$1-$2.json" > "$out/run-$1-$2.log" 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

# 2. Throughput and power at default clocks, then at each locked clock.
nvidia-smi -i "$gpu" -rgc > /dev/null
for b in ${batches//,/ }; do log "decode batch $b, default clocks"; bench default "$b"; done
for c in ${clocks//,/ }; do
  nvidia-smi -i "$gpu" -lgc "$c,$c" > /dev/null
  for b in ${batches//,/ }; do log "decode batch $b, SM clock locked at $c MHz"; bench "$c" "$b"; done
done
nvidia-smi -i "$gpu" -rgc > /dev/null
python3 scripts/acceptance/rows.py "$out" "$gpu_name" "$shape" "$prompt_tokens" "$decode_tokens" | tee "$out/throughput.txt"

# 3. Step responses at 10 ms under a long decode.
log "step responses (clock lock, power limit) at 10 ms"
limits="$(nvidia-smi -i "$gpu" --query-gpu=power.min_limit,power.default_limit,clocks.max.sm --format=csv,noheader,nounits)"
IFS=', ' read -r pl_min pl_default sm_max <<< "$limits"
low_clock=$(( sm_max / 2 ))
"$bin" --model "$model" --device cuda:0 bench engine --batch-sizes 32 --prompt-tokens 128 \
  --decode-tokens 4000 --repeats 1 > "$out/step-load.log" 2>&1 &
load=$!
sleep 20  # load the model and reach steady decode
tracer="$(sample "$out/step-trace.csv" 10)"
: > "$out/step-commands.txt"
step() {  # step WHAT TARGET COMMAND...
  local what="$1" target="$2"; shift 2
  echo "$(date +%s.%N) $what $target" >> "$out/step-commands.txt"
  "$@" > /dev/null
  sleep 3
}
sleep 2
step lock-clock-low "$low_clock" nvidia-smi -i "$gpu" -lgc "$low_clock,$low_clock"
step lock-clock-max "$sm_max" nvidia-smi -i "$gpu" -lgc "$sm_max,$sm_max"
step reset-clocks 0 nvidia-smi -i "$gpu" -rgc
step power-limit-min "$pl_min" nvidia-smi -i "$gpu" -pl "$pl_min"
step power-limit-default "$pl_default" nvidia-smi -i "$gpu" -pl "$pl_default"
kill "$tracer" "$load" 2>/dev/null || true
wait 2>/dev/null || true
python3 scripts/acceptance/step_response.py "$out/step-trace.csv" "$out/step-commands.txt" | tee "$out/step-response.txt"

# 4. The twin, fitted to what was measured.
"$bin" twin fit --measured "$out/measured.json" --base "$base" --name "$name" \
  --out "$out/$name.toml" | tee "$out/fit.txt"
cp "$out/$name.toml" "config/gpus/$name.toml"
log "done: config/gpus/$name.toml written; review $out and commit both"
