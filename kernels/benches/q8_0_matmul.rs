//! Criterion bench of the batched Q8_0 matmul on Gemma-3-270M's tied output head
//! (262,144 × 640), the biggest matrix of a decode step, against the scalar reference.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gridserve_kernels::cpu::{q8_0_matmul, q8_0_matmul_reference, Q8_0_BLOCK, Q8_0_BLOCK_BYTES};

const N: usize = 262_144;
const K: usize = 640;

/// Pseudo-random GGUF Q8_0 bytes: small finite f16 scales, arbitrary quants.
fn weights(n: usize, k: usize) -> Vec<u8> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut w = Vec::with_capacity(n * k / Q8_0_BLOCK * Q8_0_BLOCK_BYTES);
    for _ in 0..n * k / Q8_0_BLOCK {
        w.extend_from_slice(&0x2000u16.to_le_bytes()); // f16 0.0078125
        for _ in 0..Q8_0_BLOCK {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            w.push(s as u8);
        }
    }
    w
}

fn activations(m: usize, k: usize) -> Vec<f32> {
    (0..m * k)
        .map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 4.0)
        .collect()
}

fn head(c: &mut Criterion) {
    let w = weights(N, K);
    let mut group = c.benchmark_group("q8_0_head_262144x640");
    group.sample_size(10);
    for m in [1usize, 2, 4, 8, 16] {
        let x = activations(m, K);
        group.throughput(Throughput::Elements((m * N) as u64));
        group.bench_with_input(BenchmarkId::new("fast", m), &m, |b, &m| {
            b.iter(|| q8_0_matmul(black_box(&x), m, K, black_box(&w), N).unwrap())
        });
    }
    // The reference is slow; one row is enough to show the gap.
    let x = activations(1, K);
    group.bench_function(BenchmarkId::new("reference", 1), |b| {
        b.iter(|| q8_0_matmul_reference(black_box(&x), 1, K, black_box(&w), N).unwrap())
    });
    group.finish();
}

/// A cache-resident matrix (attn_v, 256 × 640): the kernel's compute rate without DRAM.
fn small(c: &mut Criterion) {
    let n = 256;
    let w = weights(n, K);
    let mut group = c.benchmark_group("q8_0_attn_v_256x640");
    for m in [1usize, 4, 16] {
        let x = activations(m, K);
        group.throughput(Throughput::Elements((m * n) as u64));
        group.bench_with_input(BenchmarkId::new("fast", m), &m, |b, &m| {
            b.iter(|| q8_0_matmul(black_box(&x), m, K, black_box(&w), n).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, head, small);
criterion_main!(benches);
