//! Tests for RoPE: the defining properties on the reference, and the table path against it.

use proptest::prelude::*;

use super::*;

#[test]
fn position_zero_is_identity() {
    let mut x = vec![1.0, 2.0, 3.0, 4.0];
    rope_neox_reference(&mut x, &rope_inv_freq(4, 10_000.0), 0).unwrap();
    assert_eq!(x, vec![1.0, 2.0, 3.0, 4.0]);
    let table = RopeTable::new(&rope_inv_freq(4, 10_000.0), &[0]);
    rope_neox_row(&mut x, &table, 0).unwrap();
    assert_eq!(x, vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn rotates_pairs_across_halves() {
    // head_dim 2: one pair (x0, x1) rotated by pos * 1.0 radians.
    let mut x = vec![1.0, 0.0];
    rope_neox_reference(&mut x, &[1.0], 1).unwrap();
    assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[1] - 1f32.sin()).abs() < 1e-6);
}

#[test]
fn relative_positions_give_equal_dot_products() {
    // The defining property: <rope(q, m), rope(k, n)> depends only on m - n.
    let inv = rope_inv_freq(8, 10_000.0);
    let q: Vec<f32> = (0..8).map(|i| (i as f32 * 0.37).sin()).collect();
    let k: Vec<f32> = (0..8).map(|i| (i as f32 * 0.91).cos()).collect();
    let dot_at = |m: usize, n: usize| {
        let (mut a, mut b) = (q.clone(), k.clone());
        rope_neox_reference(&mut a, &inv, m).unwrap();
        rope_neox_reference(&mut b, &inv, n).unwrap();
        a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>()
    };
    assert!((dot_at(10, 7) - dot_at(103, 100)).abs() < 1e-4);
    assert!((dot_at(10, 7) - dot_at(10, 3)).abs() > 1e-3);
}

#[test]
fn bad_shapes_and_tokens_are_errors() {
    let table = RopeTable::new(&rope_inv_freq(4, 10_000.0), &[3, 4]);
    assert_eq!((table.tokens(), table.head_dim()), (2, 4));
    assert!(rope_neox_row(&mut [0.0; 6], &table, 0).is_err());
    assert!(rope_neox_row(&mut [0.0; 8], &table, 2).is_err());
    assert!(rope_neox_reference(&mut [0.0; 3], &[1.0], 0).is_err());
    let empty = RopeTable::new(&[], &[1, 2]);
    assert!(rope_neox_row(&mut [0.0; 2], &empty, 0).is_err());
}

proptest! {
    /// The table path rotates every token exactly as the reference does, to the bit, whatever
    /// the other positions in the table.
    #[test]
    fn table_rows_equal_reference(
        half in 1usize..=40,
        heads in 1usize..=5,
        positions in proptest::collection::vec(0usize..40_000, 1..40),
        base in prop_oneof![Just(10_000.0f64), Just(1_000_000.0f64)],
    ) {
        let inv = rope_inv_freq(2 * half, base);
        let table = RopeTable::new(&inv, &positions);
        for (t, &pos) in positions.iter().enumerate() {
            let x: Vec<f32> = (0..heads * 2 * half)
                .map(|i| ((i + 7 * t) as f32 * 0.73).sin() * 3.0)
                .collect();
            let (mut fast, mut reference) = (x.clone(), x);
            rope_neox_row(&mut fast, &table, t).unwrap();
            rope_neox_reference(&mut reference, &inv, pos).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&fast), bits(&reference));
        }
    }
}
