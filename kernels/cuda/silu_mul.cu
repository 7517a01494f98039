// SwiGLU's activation: out = silu(gate) * up, element-wise into `out` (Llama's and Qwen's MLP).
#include "common.cuh"

#define SILU_MUL_OPS(T, SUFFIX)                                                               \
    extern "C" __global__ void silu_mul_##SUFFIX(const T* gate, const T* up, T* out, size_t n) {           \
        for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;                 \
             i += (size_t)gridDim.x * blockDim.x) {                                           \
            const float g = to_f32(gate[i]);                                                  \
            out[i] = from_f32<T>(g / (1.f + expf(-g)) * to_f32(up[i]));                      \
        }                                                                                     \
    }

GRIDSERVE_FOR_EACH_DTYPE(SILU_MUL_OPS)
