// RMSNorm over the last dimension, one block per row, in three forms:
//   rms_norm:           out = x / rms(x) * w
//   fused_add_rms_norm: sum = residual + x; out = sum / rms(sum) * w       (Llama, Qwen)
//   rms_norm_add:       out = residual + x / rms(x) * w                     (Gemma's post-norms)
// Out of place (the Rust ops are functional candle ops): fused_add_rms_norm writes both the
// new residual stream and the normed row, so the sum is read from memory only once more.
// Sums run in f32 whatever the storage dtype.
#include "common.cuh"

template <typename T>
__device__ float row_inv_rms(const T* row, int cols, float eps, float* scratch) {
    float ss = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float v = to_f32(row[c]);
        ss += v * v;
    }
    ss = block_sum(ss, scratch);
    return rsqrtf(ss / (float)cols + eps);
}

template <typename T>
__device__ void rms_norm(const T* x, const T* w, T* out, int cols, float eps) {
    __shared__ float scratch[32];
    const size_t off = (size_t)blockIdx.x * cols;
    const float inv = row_inv_rms(x + off, cols, eps, scratch);
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        out[off + c] = from_f32<T>(to_f32(x[off + c]) * inv * to_f32(w[c]));
}

template <typename T>
__device__ void fused_add_rms_norm(const T* x, const T* residual, const T* w, T* sum, T* out,
                                   int cols, float eps) {
    __shared__ float scratch[32];
    const size_t off = (size_t)blockIdx.x * cols;
    // Round the sum to T before the norm reads it, so the norm sees what is stored. Each
    // thread reads back only what it wrote itself, so no barrier is needed before the norm.
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        sum[off + c] = from_f32<T>(to_f32(residual[off + c]) + to_f32(x[off + c]));
    const float inv = row_inv_rms(sum + off, cols, eps, scratch);
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        out[off + c] = from_f32<T>(to_f32(sum[off + c]) * inv * to_f32(w[c]));
}

template <typename T>
__device__ void rms_norm_add(const T* x, const T* w, const T* residual, T* out, int cols,
                             float eps) {
    __shared__ float scratch[32];
    const size_t off = (size_t)blockIdx.x * cols;
    const float inv = row_inv_rms(x + off, cols, eps, scratch);
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        out[off + c] =
            from_f32<T>(to_f32(residual[off + c]) + to_f32(x[off + c]) * inv * to_f32(w[c]));
}

#define RMS_NORM_OPS(T, SUFFIX)                                                               \
    extern "C" __global__ void rms_norm_##SUFFIX(const T* x, const T* w, T* out, int cols,    \
                                                 float eps) {                                 \
        rms_norm<T>(x, w, out, cols, eps);                                                    \
    }                                                                                         \
    extern "C" __global__ void fused_add_rms_norm_##SUFFIX(                                   \
        const T* x, const T* residual, const T* w, T* sum, T* out, int cols, float eps) {     \
        fused_add_rms_norm<T>(x, residual, w, sum, out, cols, eps);                           \
    }                                                                                         \
    extern "C" __global__ void rms_norm_add_##SUFFIX(const T* x, const T* w,                  \
                                                     const T* residual, T* out, int cols,     \
                                                     float eps) {                             \
        rms_norm_add<T>(x, w, residual, out, cols, eps);                                      \
    }

GRIDSERVE_FOR_EACH_DTYPE(RMS_NORM_OPS)
