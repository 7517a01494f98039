// Batched sampling on the device: one block per logits row returns the token id and its
// logprob, so only 8 bytes per sequence cross to the host instead of the vocabulary's logits.
//
// params `[rows, 5]` f32: temperature, top_k (0 = off), top_p, min_p, and the uniform draw
// u in [0, 1) (drawn on the host from the sequence's own seeded generator, so a seed gives
// the same tokens on any device and in any batch). out `[rows, 2]` f32: token id (exact below
// 2^24) and the logprob of that token under the model's raw distribution (as OpenAI reports).
//
// Filtering, on weights w_i = exp((l_i - max) * (1 / temperature)) (the top token weighs 1):
//   top-k keeps l_i >= the k-th largest logit (ties kept);
//   top-p keeps, of those, the largest-logit set whose weight reaches top_p of their total;
//   min-p keeps w_i >= min_p (that is p_i >= min_p * p_max).
// Thresholds are found by bisection over the logits' order-preserving integer keys (32
// counting passes, no sort); the draw walks the kept weights in index order, in per-thread
// chunks whose sums are scanned by one thread, so the walk order is fixed (the CPU
// reference sorts instead: two different algorithms that must agree).
#include "common.cuh"

#define SAMPLE_THREADS 1024
#define GREEDY_TEMPERATURE 1e-5f

__device__ __forceinline__ float clean_logit(float x) { return isnan(x) ? -INFINITY : x; }

__device__ __forceinline__ uint32_t order_key(float x) {
    const uint32_t b = __float_as_uint(x);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Largest key K with sum over {i : key_i >= K, key_i >= floor} of (count ? 1 : w_i) >= need.
__device__ uint32_t bisect_key(const float* row, int vocab, float m, float inv_t, uint32_t floor,
                               bool count, float need, float* scratch) {
    uint32_t ans = 0;
    for (int bit = 31; bit >= 0; --bit) {
        const uint32_t cand = ans | (1u << bit);
        float s = 0.f;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            const float x = clean_logit(row[i]);
            const uint32_t key = order_key(x);
            if (key >= cand && key >= floor) s += count ? 1.f : expf((x - m) * inv_t);
        }
        if (block_sum(s, scratch) >= need) ans = cand;
    }
    return ans;
}

__device__ bool kept(float x, float m, float inv_t, uint32_t floor, float min_p) {
    return order_key(x) >= floor && x > -INFINITY && expf((x - m) * inv_t) >= min_p;
}

// Index of the kept token where the running weight passes u * total, walking in index order.
__device__ int draw(const float* row, int vocab, float m, float inv_t, uint32_t floor, float min_p,
                    float u, float* partial) {
    __shared__ int chosen;
    const int chunk = (vocab + blockDim.x - 1) / blockDim.x;
    const int begin = threadIdx.x * chunk, end = min(vocab, begin + chunk);
    float s = 0.f;
    for (int i = begin; i < end; ++i) {
        const float x = clean_logit(row[i]);
        if (kept(x, m, inv_t, floor, min_p)) s += expf((x - m) * inv_t);
    }
    partial[threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        float total = 0.f;
        for (int c = 0; c < (int)blockDim.x; ++c) total += partial[c];
        float target = u * total, run = 0.f;
        chosen = -1;
        int last = -1;
        for (int c = 0; c < (int)blockDim.x && chosen < 0; ++c) {
            if (run + partial[c] <= target) {
                run += partial[c];
                continue;
            }
            for (int i = c * chunk; i < min(vocab, (c + 1) * chunk); ++i) {
                const float x = clean_logit(row[i]);
                if (!kept(x, m, inv_t, floor, min_p)) continue;
                last = i;
                run += expf((x - m) * inv_t);
                if (run > target) {
                    chosen = i;
                    break;
                }
            }
        }
        // Rounding can leave the target just past the end: take the last kept token seen
        // (or, with nothing seen, the scan's fallback below).
        if (chosen < 0) chosen = last;
    }
    __syncthreads();
    return chosen;
}

extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_f32(const float* logits, const float* params, float* out, int vocab) {
    __shared__ float scratch[32];
    __shared__ float partial[SAMPLE_THREADS];
    const float* row = logits + (size_t)blockIdx.x * vocab;
    const float* p = params + (size_t)blockIdx.x * 5;
    const float temperature = p[0], top_p = p[2], min_p = p[3], u = p[4];
    const int top_k = (int)p[1];

    // Max (lowest index wins a tie) and the raw log-normaliser, for the logprob.
    float best = -INFINITY;
    int best_i = 0x7fffffff;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float x = clean_logit(row[i]);
        if (x > best || (x == best && i < best_i)) best = x, best_i = i;
    }
    const float m = block_max(best, scratch);
    float z = 0.f;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) z += expf(clean_logit(row[i]) - m);
    const float log_z = logf(block_sum(z, scratch));
    // argmax: the smallest index holding the max.
    const float cand = best == m ? (float)best_i : 3.0e38f;
    const float argmax = -block_max(-cand, scratch);

    int id = (int)argmax;
    if (temperature >= GREEDY_TEMPERATURE && isfinite(m)) {
        // A reciprocal once, not a division per element: f32 division's slow path is a
        // called subroutine (a stack frame ptxas reports as a spill).
        const float inv_t = 1.f / temperature;
        uint32_t floor = 0;
        if (top_k > 0 && top_k < vocab)
            floor = bisect_key(row, vocab, m, inv_t, 0, true, (float)top_k, scratch);
        if (top_p < 1.f) {
            float mass = 0.f;
            for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
                const float x = clean_logit(row[i]);
                if (order_key(x) >= floor) mass += expf((x - m) * inv_t);
            }
            mass = block_sum(mass, scratch);
            floor = bisect_key(row, vocab, m, inv_t, floor, false, top_p * mass, scratch);
        }
        const int drawn = draw(row, vocab, m, inv_t, floor, min_p, u, partial);
        if (drawn >= 0) id = drawn;
    }
    if (threadIdx.x == 0) {
        out[(size_t)blockIdx.x * 2] = (float)id;
        out[(size_t)blockIdx.x * 2 + 1] = clean_logit(row[id]) - m - log_z;
    }
}
