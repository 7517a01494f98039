// Stores a step's K (or V) rows (`[tokens, kv_heads * head_dim]`) into a paged cache at each
// token's slot (`block * block_size + offset`, from the block table), one block of threads
// per token; called once for K and once for V. vLLM calls this reshape_and_cache.
#include "common.cuh"

#define KV_CACHE_WRITE_OPS(T, SUFFIX)                                                         \
    extern "C" __global__ void kv_cache_write_##SUFFIX(const T* rows, T* cache,              \
                                                       const uint32_t* slots, int row_len) {  \
        const size_t src = (size_t)blockIdx.x * row_len;                                      \
        const size_t dst = (size_t)slots[blockIdx.x] * row_len;                               \
        for (int i = threadIdx.x; i < row_len; i += blockDim.x) {                             \
            cache[dst + i] = rows[src + i];                                                   \
        }                                                                                     \
    }

GRIDSERVE_FOR_EACH_DTYPE(KV_CACHE_WRITE_OPS)
