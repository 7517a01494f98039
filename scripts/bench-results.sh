#!/usr/bin/env bash
# Regenerates the README's "Results" section from fresh runs on this machine (≈ 10 min on 2
# cores, after the one-time builds): the CPU table against llama.cpp (`bench peer`), the same
# open-loop load against `gridserve serve` and `llama-server` (`bench serve`, energy from this
# machine's sensor for both), an envelope scenario and a cap sweep on the H100 twin
# (`bench serve --envelope-scenario`, `bench sweep --param cap`), and the twin's grid-response
# proof (`simulate-proof`). Raw results go to bench-results/readme/, the plots shown in the
# README to docs/bench/; then scripts/render_bench_results.py rewrites the section between the
# README's `<!-- bench-results:begin -->` and `<!-- bench-results:end -->` markers.
#
#   scripts/bench-results.sh            # everything
#   SKIP_PEER=1 SKIP_PROOF=1 scripts/bench-results.sh   # reuse the last peer/proof results
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh >&2
cargo build --release -p gridserve >&2
llama_bin="$(bash scripts/install-llama-cpp.sh)"
G="$root/target/release/gridserve"
OUT="$root/bench-results/readme"
MODEL="$root/models-data/gemma-3-270m-q4_k_m.gguf"
THREADS="$(nproc)"
mkdir -p "$OUT"
mkdir -p "$OUT/commands"
say() { echo "[bench-results] $*" >&2; }
# Runs a command, recording it (paths relative to the repository) for the README.
record() {
    local key="$1"
    shift
    echo "$*" | sed "s|$root/||g; s|$HOME|~|g" > "$OUT/commands/$key.txt"
    "$@"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() {
    for _ in $(seq 1 600); do
        curl -sf "$1" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    say "server at $1 never became ready"
    return 1
}
SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
trap stop_server EXIT

# The load both servers get: 64 requests at 2/s (Poisson), 128 tokens in, 64 out.
LOAD=(--num-prompts 64 --request-rate 2 --random-input-len 128 --random-output-len 64
      --ignore-eos --seed 1 --metric-percentiles 50,99 --disable-tqdm --save-result)

if [[ -z "${SKIP_PEER:-}" ]]; then
    say "bench peer (gridserve vs llama.cpp kernels and serving)"
    record peer "$G" --threads "$THREADS" bench peer --llama-bin "$llama_bin" --out "$OUT/peer" >&2
fi

say "bench serve: gridserve on the CPU"
port="$(free_port)"
"$G" --threads "$THREADS" serve --port "$port" --data-dir "$OUT/data-cpu" > "$OUT/gridserve-cpu.log" 2>&1 &
SERVER_PID=$!
wait_ready "http://127.0.0.1:$port/ready"
record serve-gridserve "$G" bench serve --base-url "http://127.0.0.1:$port" "${LOAD[@]}" \
    --energy-source local --label gridserve --result-dir "$OUT/serve" --result-filename gridserve-cpu.json \
    > "$OUT/serve-gridserve-cpu.txt"
stop_server

say "bench serve: llama-server on the CPU"
port="$(free_port)"
"$llama_bin/llama-server" -m "$MODEL" --host 127.0.0.1 --port "$port" -t "$THREADS" -np 16 -c 16384 \
    --no-webui > "$OUT/llama-server.log" 2>&1 &
SERVER_PID=$!
wait_ready "http://127.0.0.1:$port/health"
record serve-llama "$G" bench serve --base-url "http://127.0.0.1:$port" "${LOAD[@]}" \
    --energy-source local --label llama-cpp --result-dir "$OUT/serve" --result-filename llama-cpp-cpu.json \
    > "$OUT/serve-llama-cpu.txt"
stop_server

say "bench serve + bench sweep on the H100 twin, with an envelope scenario"
export GRIDSERVE_OPERATOR_TOKEN="bench-results-$RANDOM$RANDOM"
port="$(free_port)"
rm -rf "$OUT/data-twin"
"$G" --threads "$THREADS" serve --port "$port" --power twin:h100 --data-dir "$OUT/data-twin" \
    > "$OUT/gridserve-twin.log" 2>&1 &
SERVER_PID=$!
wait_ready "http://127.0.0.1:$port/ready"
record serve-twin "$G" bench serve --base-url "http://127.0.0.1:$port" --num-prompts 160 \
    --request-rate 4 --random-input-len 64 --random-output-len 32 --ignore-eos --seed 1 \
    --metric-percentiles 50,99 --disable-tqdm --save-result \
    --priority-mix interactive=0.3,standard=0.4,flexible=0.3 \
    --envelope-scenario config/envelopes/step-down.toml --label gridserve-twin \
    --result-dir "$OUT/serve" --result-filename gridserve-twin.json > "$OUT/serve-twin.txt"
record sweep-cap "$G" bench sweep --param cap --values 200,120,100,90 --base-url "http://127.0.0.1:$port" \
    --num-prompts 48 --request-rate 4 --random-input-len 64 --random-output-len 32 --ignore-eos \
    --seed 1 --disable-tqdm --label cap --result-dir "$OUT/sweep" > "$OUT/sweep-cap.txt"
stop_server

if [[ -z "${SKIP_PROOF:-}" ]]; then
    say "simulate-proof (the twin's grid-response table)"
    record proof "$G" simulate-proof --out "$OUT/simulate" > "$OUT/proof.txt"
fi

python3 scripts/render_bench_results.py --results "$OUT" --readme README.md --plots docs/bench
say "README.md's results section and docs/bench/ are regenerated"
