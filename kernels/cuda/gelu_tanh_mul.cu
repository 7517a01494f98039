// GeGLU's activation: out = gelu_tanh(gate) * up, element-wise into `out` (Gemma's MLP).
#include "common.cuh"

__device__ __forceinline__ float gelu_tanh(float x) {
    const float k = 0.7978845608028654f;  // sqrt(2 / pi)
    return 0.5f * x * (1.f + tanhf(k * (x + 0.044715f * x * x * x)));
}

#define GELU_TANH_MUL_OPS(T, SUFFIX)                                                          \
    extern "C" __global__ void gelu_tanh_mul_##SUFFIX(const T* gate, const T* up, T* out, size_t n) {      \
        for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;                 \
             i += (size_t)gridDim.x * blockDim.x)                                             \
            out[i] = from_f32<T>(gelu_tanh(to_f32(gate[i])) * to_f32(up[i]));                \
    }

GRIDSERVE_FOR_EACH_DTYPE(GELU_TANH_MUL_OPS)
