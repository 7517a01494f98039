//! CPU reference kernels, one op per file.

mod activation;
mod attention;
mod norm;
mod rope;

pub use activation::{gelu_tanh, gelu_tanh_mul};
pub use attention::{paged_attention, PagedKv, PagedQuery};
pub use norm::{rms_norm_rows, rms_norm_rows_in_place};
pub use rope::{rope_inv_freq, rope_neox_in_place};
