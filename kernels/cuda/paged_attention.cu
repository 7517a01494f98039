// Attention of query tokens against a paged KV cache: causal, grouped-query heads, optional
// sliding window. Every query token carries its own sequence and position, so one launch
// serves a decode batch (one token per sequence, sequences at different lengths), a prefill
// chunk (many tokens of one sequence) or any mix of both (varlen): token t attends to
// positions max(0, pos_t + 1 - window) ..= pos_t of its sequence, whose K/V (this step's
// included) are already in the cache.
//
// Layouts: q/out `[tokens, heads, head_dim]`; k_cache/v_cache
// `[num_blocks, block_size, kv_heads, head_dim]`; block_tables `[seqs, max_blocks]` u32;
// token_seq/token_pos `[tokens]` u32. Grid: (tokens, heads); block: WARPS warps. Each warp
// walks every WARPS-th position with an online softmax (no score buffer, so context length
// is not limited by shared memory); the warps' partial results are merged at the end.
#include "common.cuh"

#define WARPS 4
#define MAX_HEAD_DIM 256
#define DIMS_PER_LANE (MAX_HEAD_DIM / 32)

template <typename T>
__device__ void paged_attention(const T* q, const T* k_cache, const T* v_cache,
                                const uint32_t* block_tables, const uint32_t* token_seq,
                                const uint32_t* token_pos, T* out, float scale, int heads,
                                int kv_heads, int head_dim, int block_size, int max_blocks,
                                int window) {
    __shared__ float warp_m[WARPS], warp_l[WARPS];
    __shared__ float warp_acc[WARPS][MAX_HEAD_DIM];
    const int token = blockIdx.x, head = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int kv_head = head / (heads / kv_heads);
    const int pos = (int)token_pos[token];
    const uint32_t* table = block_tables + (size_t)token_seq[token] * max_blocks;
    const int first = window > 0 ? max(0, pos + 1 - window) : 0;

    float qr[DIMS_PER_LANE], acc[DIMS_PER_LANE];
    const T* qrow = q + ((size_t)token * heads + head) * head_dim;
#pragma unroll
    for (int i = 0; i < DIMS_PER_LANE; ++i) {
        const int d = lane + 32 * i;
        qr[i] = d < head_dim ? to_f32(qrow[d]) * scale : 0.f;
        acc[i] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    for (int p = first + warp; p <= pos; p += WARPS) {
        const size_t slot = (size_t)table[p / block_size] * block_size + p % block_size;
        const size_t row = (slot * kv_heads + kv_head) * head_dim;
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < DIMS_PER_LANE; ++i) {
            const int d = lane + 32 * i;
            if (d < head_dim) s += qr[i] * to_f32(k_cache[row + d]);
        }
        s = warp_sum(s);
        const float m_new = fmaxf(m, s);
        const float correction = expf(m - m_new), w = expf(s - m_new);
        l = l * correction + w;
#pragma unroll
        for (int i = 0; i < DIMS_PER_LANE; ++i) {
            const int d = lane + 32 * i;
            if (d < head_dim) acc[i] = acc[i] * correction + w * to_f32(v_cache[row + d]);
        }
        m = m_new;
    }
    if (lane == 0) {
        warp_m[warp] = m;
        warp_l[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < DIMS_PER_LANE; ++i) {
        const int d = lane + 32 * i;
        if (d < head_dim) warp_acc[warp][d] = acc[i];
    }
    __syncthreads();
    float m_all = -INFINITY;
    for (int w = 0; w < WARPS; ++w) m_all = fmaxf(m_all, warp_m[w]);
    float l_all = 0.f;
    for (int w = 0; w < WARPS; ++w)
        if (warp_l[w] > 0.f) l_all += warp_l[w] * expf(warp_m[w] - m_all);
    T* orow = out + ((size_t)token * heads + head) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float o = 0.f;
        for (int w = 0; w < WARPS; ++w)
            if (warp_l[w] > 0.f) o += warp_acc[w][d] * expf(warp_m[w] - m_all);
        orow[d] = from_f32<T>(o / l_all);
    }
}

#define PAGED_ATTENTION_OPS(T, SUFFIX)                                                        \
    extern "C" __global__ void __launch_bounds__(WARPS * 32) paged_attention_##SUFFIX(        \
        const T* q, const T* k_cache, const T* v_cache, const uint32_t* block_tables,         \
        const uint32_t* token_seq, const uint32_t* token_pos, T* out, float scale, int heads, \
        int kv_heads, int head_dim, int block_size, int max_blocks, int window) {             \
        paged_attention<T>(q, k_cache, v_cache, block_tables, token_seq, token_pos, out,      \
                           scale, heads, kv_heads, head_dim, block_size, max_blocks, window); \
    }

GRIDSERVE_FOR_EACH_DTYPE(PAGED_ATTENTION_OPS)
