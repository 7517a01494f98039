//! Which vector instruction set this CPU offers, detected once, and `multiversion!`, which
//! compiles one portable loop body once per instruction set and picks the copy at run time.
//!
//! Multiversioned bodies use plain `*` and `+` (Rust never fuses them into FMA) with fixed lane
//! assignments, so every compiled copy rounds exactly like the portable one: the choice changes
//! speed, never a value.

use std::sync::OnceLock;

/// The widest vector instruction set the kernels use here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimdLevel {
    /// AVX-512 F (plus AVX2 and FMA): 16 f32 lanes.
    Avx512,
    /// AVX2 + FMA: 8 f32 lanes.
    Avx2,
    /// Whatever the compilation target guarantees (SSE2 on x86_64).
    Portable,
}

/// The level detected on this CPU: the same for every call, so a kernel's result for a token
/// never depends on which call (or which batch) computed it.
pub fn simd_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(detect)
}

/// Whether this CPU can run code compiled for `level`.
pub(crate) fn supports(level: SimdLevel) -> bool {
    match level {
        SimdLevel::Avx512 => simd_level() == SimdLevel::Avx512,
        SimdLevel::Avx2 => simd_level() != SimdLevel::Portable,
        SimdLevel::Portable => true,
    }
}

fn detect() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        if avx2 && is_x86_feature_detected!("avx512f") {
            return SimdLevel::Avx512;
        }
        if avx2 {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Portable
}

/// `multiversion!(vis fn name(a: A, ...) => body);` defines `name`, which runs `body(a, ...)`
/// compiled for AVX-512, for AVX2 or for the baseline target, whichever `simd_level` chose.
/// `body` should be `#[inline(always)]` so each copy is vectorised for its own width.
macro_rules! multiversion {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:path;) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                use $crate::cpu::simd::{simd_level, SimdLevel};
                #[target_feature(enable = "avx512f,avx2")]
                fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                match simd_level() {
                    // SAFETY: `simd_level` detected AVX-512 F and AVX2 on this CPU.
                    SimdLevel::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: `simd_level` detected AVX2 on this CPU.
                    SimdLevel::Avx2 => return unsafe { avx2($($arg),*) },
                    SimdLevel::Portable => {}
                }
            }
            $body($($arg),*)
        }
    };
}

pub(crate) use multiversion;
