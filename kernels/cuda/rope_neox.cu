// Rotary position embedding, NeoX layout (pairs are (i, i + head_dim/2)), of a
// `[tokens, heads, head_dim]` tensor into `out`. cos/sin are `[tokens, head_dim/2]` f32, computed once
// per step for each token's own position, so a batch of sequences at different positions is
// one launch. Grid: (tokens, heads); block: head_dim/2 threads (one per pair).
#include "common.cuh"

template <typename T>
__device__ void rope_neox(const T* x, T* out, const float* cos, const float* sin, int heads, int head_dim) {
    const int token = blockIdx.x, head = blockIdx.y, half = head_dim / 2;
    const size_t base = ((size_t)token * heads + head) * head_dim;
    const T* row = x + base;
    T* orow = out + base;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const float c = cos[(size_t)token * half + i], s = sin[(size_t)token * half + i];
        const float a = to_f32(row[i]), b = to_f32(row[i + half]);
        orow[i] = from_f32<T>(a * c - b * s);
        orow[i + half] = from_f32<T>(b * c + a * s);
    }
}

#define ROPE_OPS(T, SUFFIX)                                                                   \
    extern "C" __global__ void rope_neox_##SUFFIX(const T* x, T* out, const float* cos,       \
                                                  const float* sin, int heads, int head_dim) {\
        rope_neox<T>(x, out, cos, sin, heads, head_dim);                                      \
    }

GRIDSERVE_FOR_EACH_DTYPE(ROPE_OPS)
