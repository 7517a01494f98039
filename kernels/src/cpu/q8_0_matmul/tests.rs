//! Tests for the Q8_0 matmul: every path this CPU supports against the reference (bit for
//! bit), batch invariance, the reference against dense f32, and shape errors.

use half::f16;
use proptest::prelude::*;

use super::*;

const PATHS: [Q8_0Path; 3] = [Q8_0Path::Avx512Vnni, Q8_0Path::Avx2, Q8_0Path::Scalar];

/// GGUF Q8_0 bytes from per-block scales and quants.
fn encode(scales: &[f32], quants: &[i8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(scales.len() * Q8_0_BLOCK_BYTES);
    for (d, q) in scales.iter().zip(quants.chunks_exact(Q8_0_BLOCK)) {
        out.extend_from_slice(&f16::from_f32(*d).to_le_bytes());
        out.extend(q.iter().map(|&v| v as u8));
    }
    out
}

/// Deterministic pseudo-random weights `[n, k]` (quants cover -128..=127) and activations.
fn fixture(m: usize, n: usize, k: usize, seed: u64) -> (Vec<f32>, Vec<u8>) {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as u32
    };
    let nb = n * k / Q8_0_BLOCK;
    let scales: Vec<f32> = (0..nb)
        .map(|_| (next() % 2000) as f32 * 1e-5 - 0.01)
        .collect();
    let quants: Vec<i8> = (0..n * k).map(|_| next() as u8 as i8).collect();
    let x: Vec<f32> = (0..m * k)
        .map(|_| (next() % 20001) as f32 / 1000.0 - 10.0)
        .collect();
    (x, encode(&scales, &quants))
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn supported() -> Vec<Q8_0Path> {
    PATHS
        .into_iter()
        .filter(|&p| q8_0_matmul_with(&RayonRunner, p, &[], 0, 32, &[], 0).is_ok())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_path_matches_reference_exactly(
        m in 1usize..=20,
        n in 1usize..=70,
        kb in 1usize..=32,
        seed in any::<u64>(),
        zero_row in any::<bool>(),
    ) {
        let k = kb * Q8_0_BLOCK;
        let (mut x, w) = fixture(m, n, k, seed);
        if zero_row {
            // An all-zero block gives a zero scale: the reciprocal guard must match too.
            x[..k].fill(0.0);
        }
        let want = q8_0_matmul_reference(&x, m, k, &w, n).unwrap();
        for path in supported() {
            let got = q8_0_matmul_with(&RayonRunner, path, &x, m, k, &w, n).unwrap();
            prop_assert_eq!(bits(&got), bits(&want), "{:?} m={} n={} k={}", path, m, n, k);
        }
        let got = q8_0_matmul(&x, m, k, &w, n).unwrap();
        prop_assert_eq!(bits(&got), bits(&want));
        if PackedQ8_0::available() {
            let packed = PackedQ8_0::new(&w, n, k).unwrap();
            let got = packed.matmul(&RayonRunner, &x, m).unwrap();
            prop_assert_eq!(bits(&got), bits(&want), "packed m={} n={} k={}", m, n, k);
        }
    }
}

#[test]
fn rows_are_bit_identical_alone_and_in_any_batch() {
    let (k, n) = (640, 67);
    let (x, w) = fixture(33, n, k, 7);
    for path in supported() {
        let alone: Vec<Vec<f32>> = (0..33)
            .map(|i| {
                q8_0_matmul_with(&RayonRunner, path, &x[i * k..(i + 1) * k], 1, k, &w, n).unwrap()
            })
            .collect();
        for m in 1..=33 {
            let batched = q8_0_matmul_with(&RayonRunner, path, &x[..m * k], m, k, &w, n).unwrap();
            for (i, alone) in alone.iter().take(m).enumerate() {
                assert_eq!(
                    bits(&batched[i * n..(i + 1) * n]),
                    bits(alone),
                    "{path:?}: row {i} of {m}"
                );
            }
        }
    }
}

/// The reference itself is a Q8_0 matmul: within activation-quantization error of the dense
/// product (each quantized value is off by at most half a step, `amax / 254`).
#[test]
fn reference_is_close_to_dense_product() {
    let (m, n, k) = (3, 9, 640);
    let (x, w) = fixture(m, n, k, 11);
    let y = q8_0_matmul_reference(&x, m, k, &w, n).unwrap();
    let nb = k / Q8_0_BLOCK;
    for i in 0..m {
        for j in 0..n {
            let (mut dense, mut bound) = (0.0f64, 1e-4f64);
            for b in 0..nb {
                let block = &w[(j * nb + b) * Q8_0_BLOCK_BYTES..][..Q8_0_BLOCK_BYTES];
                let d = f16::from_le_bytes([block[0], block[1]]).to_f64();
                let xs = &x[i * k + b * Q8_0_BLOCK..][..Q8_0_BLOCK];
                let amax = xs.iter().fold(0.0f64, |a, &v| a.max(v.abs() as f64));
                for (&q, &v) in block[2..].iter().zip(xs) {
                    let wv = d * (q as i8) as f64;
                    dense += wv * v as f64;
                    bound += wv.abs() * amax / 254.0 * 1.01;
                }
            }
            let got = y[i * n + j] as f64;
            assert!(
                (got - dense).abs() <= bound,
                "({i},{j}): {got} vs {dense} ± {bound}"
            );
        }
    }
}

#[test]
fn fast_rounding_matches_roundf() {
    let mut edge = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1e-30];
    for i in -260..=260 {
        let h = i as f32 * 0.5;
        edge.extend([h, h.next_up(), h.next_down()]);
    }
    let sweep = (0..200_000).map(|i| (i as f32 - 100_000.0) * 0.001_37);
    for v in edge.into_iter().chain(sweep) {
        assert_eq!(quant::round_to_i8(v), v.round() as i8, "{v}");
    }
}

/// Row quantization (the AVX-512 copy where the CPU has it) equals `quantize_block` value for
/// value and scale for scale, on blocks with NaN, ±inf, exact halves and zeros.
#[test]
fn row_quantization_matches_the_block_rule() {
    let mut x: Vec<f32> = (0..64 * 32)
        .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) * 0.013)
        .collect();
    x[3] = f32::NAN;
    x[40] = f32::INFINITY;
    x[70] = f32::NEG_INFINITY;
    x[96..128].fill(0.0);
    for (i, v) in x[128..160].iter_mut().enumerate() {
        *v = (i as f32 - 16.0) * 0.5;
    }
    let acts = quant::QuantizedActs::new(&x, 2, 32, false);
    for (b, block) in x.chunks_exact(Q8_0_BLOCK).enumerate() {
        let mut q = [0i8; Q8_0_BLOCK];
        let d = quant::quantize_block(block, &mut q);
        assert_eq!(acts.rows_d[b].to_bits(), d.to_bits(), "block {b}");
        assert_eq!(
            &acts.rows_q[b * Q8_0_BLOCK..(b + 1) * Q8_0_BLOCK],
            &q[..],
            "block {b}"
        );
    }
}

/// A packed row reads back as `d · q` of its GGUF blocks (the embedding lookup).
#[test]
fn packed_rows_read_back_exactly() {
    let (n, k) = (37, 96);
    let (_, w) = fixture(1, n, k, 7);
    let packed = PackedQ8_0::new(&w, n, k).unwrap();
    let mut row = vec![0.0f32; k];
    for r in [0, 15, 16, 36] {
        packed.row_into(r, &mut row).unwrap();
        let want: Vec<f32> = w[r * 3 * Q8_0_BLOCK_BYTES..(r + 1) * 3 * Q8_0_BLOCK_BYTES]
            .chunks_exact(Q8_0_BLOCK_BYTES)
            .flat_map(|b| {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                b[2..].iter().map(move |&q| d * f32::from(q as i8))
            })
            .collect();
        assert_eq!(row, want, "row {r}");
    }
    assert!(packed.row_into(37, &mut row).is_err());
    assert!(packed.row_into(0, &mut row[..5]).is_err());
}

#[test]
fn hand_computed_block() {
    // Weights: scale 0.5, quants 0..32; activations: all 2.0 → quantized to 127 with
    // d = 2/127, so y = 0.5 * (2/127) * 127 * Σ 0..32.
    let quants: Vec<i8> = (0..32).collect();
    let w = encode(&[0.5], &quants);
    let x = vec![2.0f32; 32];
    let y = q8_0_matmul(&x, 1, 32, &w, 1).unwrap();
    let want = (0.5f32 * (2.0 / 127.0)) * (127 * 496) as f32;
    assert_eq!(y, vec![want]);
    assert!((y[0] - 496.0).abs() < 1e-3);
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let (x, w) = fixture(2, 3, 64, 1);
    for f in [q8_0_matmul, q8_0_matmul_reference] {
        assert!(f(&x, 2, 64, &w, 3).is_ok());
        assert!(matches!(
            f(&x, 2, 48, &w, 3),
            Err(KernelError::Invalid { .. })
        ));
        assert!(matches!(
            f(&x[1..], 2, 64, &w, 3),
            Err(KernelError::Shape { .. })
        ));
        assert!(matches!(
            f(&x, 2, 64, &w[1..], 3),
            Err(KernelError::Shape { .. })
        ));
        assert!(matches!(
            f(&x, 2, 64, &w, 4),
            Err(KernelError::Shape { .. })
        ));
        assert!(matches!(
            f(&x, usize::MAX, 64, &w, 3),
            Err(KernelError::Invalid { .. })
        ));
        assert_eq!(f(&[], 0, 64, &w, 3).unwrap(), Vec::<f32>::new());
        assert_eq!(f(&x, 2, 64, &[], 0).unwrap(), Vec::<f32>::new());
    }
}
