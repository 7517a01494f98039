//! CPU reference kernels, one op per file.

mod activation;
mod attention;
mod norm;
mod q8_0_matmul;
mod rope;

pub use activation::{gelu_tanh, gelu_tanh_mul};
pub use attention::{paged_attention, PagedKv, PagedQuery};
pub use norm::{rms_norm_rows, rms_norm_rows_in_place};
pub use q8_0_matmul::{
    q8_0_matmul, q8_0_matmul_on, q8_0_matmul_path, q8_0_matmul_reference, Q8_0Path, RayonRunner,
    TaskRunner, Q8_0_BLOCK, Q8_0_BLOCK_BYTES,
};
pub use rope::{rope_inv_freq, rope_neox_in_place};
