//! CPU kernels, one op per file: a fast path for each op and the scalar reference it is
//! tested against.

mod activation;
mod attention;
mod fast_math;
mod norm;
mod q8_0_matmul;
mod rope;
mod sample;
mod simd;

pub use activation::{
    gelu_tanh, gelu_tanh_fast, gelu_tanh_mul, gelu_tanh_mul_reference, silu, silu_mul,
};
pub use attention::{paged_attention, paged_attention_reference, PagedKv, PagedQuery};
pub use norm::{rms_norm_add_rows, rms_norm_rows, rms_norm_rows_in_place, rms_norm_rows_reference};
pub use q8_0_matmul::{
    q8_0_matmul, q8_0_matmul_on, q8_0_matmul_path, q8_0_matmul_reference, PackedQ8_0, Q8_0Path,
    RayonRunner, TaskRunner, Q8_0_BLOCK, Q8_0_BLOCK_BYTES,
};
pub use rope::{rope_inv_freq, rope_neox_reference, rope_neox_row, rope_neox_rows, RopeTable};
pub use sample::{sample_reference, SampleRow, Sampled, GREEDY_TEMPERATURE};
pub use simd::{simd_level, SimdLevel};
