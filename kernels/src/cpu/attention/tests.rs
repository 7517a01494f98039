//! Tests for paged attention: the reference against dense attention, every kernel path this
//! CPU runs against the reference (random shapes, odd widths, windows, positions across block
//! boundaries), per-token determinism, and shape errors.

use proptest::prelude::*;

use super::*;

const LEVELS: [SimdLevel; 3] = [SimdLevel::Avx512, SimdLevel::Avx2, SimdLevel::Portable];

/// Dense reference: plain causal attention over contiguous K/V `[len, head_dim]`.
fn dense(q: &[f32], k: &[Vec<f32>], v: &[Vec<f32>], scale: f32) -> Vec<f32> {
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let s: Vec<f32> = k.iter().map(|k| dot(q, k) * scale).collect();
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = s.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    let mut o = vec![0.0; q.len()];
    for (w, v) in e.iter().zip(v) {
        for (a, x) in o.iter_mut().zip(v) {
            *a += w / sum * x;
        }
    }
    o
}

fn vecs(n: usize, d: usize, seed: f32) -> Vec<Vec<f32>> {
    (0..n)
        .map(|i| (0..d).map(|j| ((i * d + j) as f32 * seed).sin()).collect())
        .collect()
}

/// Scatters contiguous K/V into blocks given by `table` (block size 2, one kv head).
fn paged(rows: &[Vec<f32>], table: &[u32], blocks: usize) -> Vec<f32> {
    let d = rows[0].len();
    let mut data = vec![f32::NAN; blocks * 2 * d];
    for (p, r) in rows.iter().enumerate() {
        let start = (table[p / 2] as usize * 2 + p % 2) * d;
        data[start..start + d].copy_from_slice(r);
    }
    data
}

#[test]
fn paged_equals_dense_with_scattered_blocks_and_window() {
    let (d, len) = (4, 5);
    let (k, v) = (vecs(len, d, 0.7), vecs(len, d, 1.3));
    let table = [3u32, 0, 5];
    let (pk, pv) = (paged(&k, &table, 6), paged(&v, &table, 6));
    let kv = PagedKv {
        k: &pk,
        v: &pv,
        block_size: 2,
        kv_heads: 1,
        head_dim: d,
    };
    let q: Vec<f32> = (0..2 * d).map(|i| (i as f32).cos()).collect(); // two query heads
    for window in [None, Some(2)] {
        let query = PagedQuery {
            q: &q,
            pos: len - 1,
            block_table: &table,
            window,
        };
        let (mut fast, mut reference) = (vec![0.0; 2 * d], vec![0.0; 2 * d]);
        paged_attention(&kv, &query, 0.5, &mut fast).unwrap();
        paged_attention_reference(&kv, &query, 0.5, &mut reference).unwrap();
        let first = window.map_or(0, |w| len - w);
        for h in 0..2 {
            let want = dense(&q[h * d..(h + 1) * d], &k[first..], &v[first..], 0.5);
            let got = [&fast[h * d..(h + 1) * d], &reference[h * d..(h + 1) * d]];
            for (a, b) in got.iter().flat_map(|g| g.iter()).zip(want.iter().cycle()) {
                assert!(
                    (a - b).abs() < 1e-5,
                    "window {window:?} head {h}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    let data = vec![0.0; 8];
    let kv = |block_size| PagedKv {
        k: &data,
        v: &data,
        block_size,
        kv_heads: 1,
        head_dim: 2,
    };
    let q = [1.0, 0.0];
    let query = |pos, block_table, window| PagedQuery {
        q: &q,
        pos,
        block_table,
        window,
    };
    let mut out = [0.0; 2];
    for f in [paged_attention, paged_attention_reference] {
        assert!(f(&kv(2), &query(2, &[0], None), 1.0, &mut out).is_err()); // short table
        assert!(f(&kv(2), &query(1, &[2], None), 1.0, &mut out).is_err()); // block 2 of 2
        assert!(f(&kv(0), &query(1, &[0], None), 1.0, &mut out).is_err());
        assert!(f(&kv(2), &query(1, &[0], Some(0)), 1.0, &mut out).is_err());
        assert!(f(&kv(2), &query(1, &[0], None), 1.0, &mut [0.0; 3]).is_err());
        assert!(f(&kv(2), &query(3, &[1, 0], Some(2)), 1.0, &mut out).is_ok());
    }
}

/// A random paged layout: K/V for positions `0..=pos` scattered over shuffled blocks (unused
/// slots NaN, so reading a wrong row shows), and the queries' heads.
#[derive(Debug)]
struct Case {
    hd: usize,
    kv_heads: usize,
    block_size: usize,
    pos: usize,
    window: Option<usize>,
    table: Vec<u32>,
    k: Vec<f32>,
    v: Vec<f32>,
    q: Vec<f32>,
}

fn case() -> impl Strategy<Value = Case> {
    let hd = prop_oneof![
        1usize..=40,
        (1usize..=17).prop_map(|m| 16 * m),
        Just(8usize),
        Just(24usize)
    ];
    (
        hd,
        1usize..=3,
        1usize..=6,
        1usize..=9,
        0usize..=90,
        any::<u64>(),
    )
        .prop_flat_map(|(hd, kv_heads, group, block_size, pos, seed)| {
            let window = prop_oneof![Just(None), (1usize..=pos + 3).prop_map(Some)];
            (Just((hd, kv_heads, group, block_size, pos, seed)), window)
        })
        .prop_map(|((hd, kv_heads, group, block_size, pos, seed), window)| {
            build(hd, kv_heads, group, block_size, pos, window, seed)
        })
}

fn build(
    hd: usize,
    kv_heads: usize,
    group: usize,
    bs: usize,
    pos: usize,
    window: Option<usize>,
    seed: u64,
) -> Case {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let used = pos / bs + 1;
    let blocks = used + 3;
    let mut table: Vec<u32> = (0..blocks as u32).collect();
    for i in (1..blocks).rev() {
        table.swap(
            i,
            ((next() + 1.0) * 0.5 * (i + 1) as f32) as usize % (i + 1),
        );
    }
    table.truncate(used);
    let row = kv_heads * hd;
    let (mut k, mut v) = (
        vec![f32::NAN; blocks * bs * row],
        vec![f32::NAN; blocks * bs * row],
    );
    for p in 0..=pos {
        let start = (table[p / bs] as usize * bs + p % bs) * row;
        for i in start..start + row {
            (k[i], v[i]) = (next() * 2.0, next());
        }
    }
    let q = (0..kv_heads * group * hd).map(|_| next() * 2.0).collect();
    Case {
        hd,
        kv_heads,
        block_size: bs,
        pos,
        window,
        table,
        k,
        v,
        q,
    }
}

fn run(c: &Case, level: SimdLevel) -> Result<Vec<f32>, KernelError> {
    let kv = PagedKv {
        k: &c.k,
        v: &c.v,
        block_size: c.block_size,
        kv_heads: c.kv_heads,
        head_dim: c.hd,
    };
    let query = PagedQuery {
        q: &c.q,
        pos: c.pos,
        block_table: &c.table,
        window: c.window,
    };
    let mut out = vec![f32::NAN; c.q.len()];
    paged_attention_on(level, &kv, &query, 1.0 / (c.hd as f32).sqrt(), &mut out)?;
    Ok(out)
}

fn reference(c: &Case) -> Vec<f32> {
    let kv = PagedKv {
        k: &c.k,
        v: &c.v,
        block_size: c.block_size,
        kv_heads: c.kv_heads,
        head_dim: c.hd,
    };
    let query = PagedQuery {
        q: &c.q,
        pos: c.pos,
        block_table: &c.table,
        window: c.window,
    };
    let mut out = vec![f32::NAN; c.q.len()];
    paged_attention_reference(&kv, &query, 1.0 / (c.hd as f32).sqrt(), &mut out).unwrap();
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every path this CPU runs agrees with the reference: outputs are convex combinations of
    /// V values in [-1, 1], and FMA, summation order and `exp_approx` move them by < 2e-5.
    #[test]
    fn every_path_matches_reference(c in case()) {
        let want = reference(&c);
        for level in LEVELS.into_iter().filter(|&l| crate::cpu::simd::supports(l)) {
            let got = run(&c, level).unwrap();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                prop_assert!((a - b).abs() < 2e-5, "{level:?} [{i}]: {a} vs {b}");
            }
        }
    }

    /// A token's output is the same bits whatever ran before on the thread (longer or shorter
    /// contexts leave the scratch in another state) and whichever thread runs it.
    #[test]
    fn output_is_independent_of_earlier_calls_and_threads(c in case(), other in case()) {
        let first = run(&c, simd_level()).unwrap();
        run(&other, simd_level()).unwrap();
        prop_assert_eq!(bits(&first), bits(&run(&c, simd_level()).unwrap()));
        let on_another_thread = std::thread::scope(|s| s.spawn(|| run(&c, simd_level())).join());
        prop_assert_eq!(bits(&first), bits(&on_another_thread.unwrap().unwrap()));
    }
}
