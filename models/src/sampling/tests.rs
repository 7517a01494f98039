//! Tests for the sampler: parameter validation, filter semantics against full-sort
//! references, logprob reporting, penalties, non-finite rows and the row helpers.

use super::row::BLOCK;
use super::*;
use proptest::prelude::*;

fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
    let mut p = SamplingParams {
        seed: Some(7),
        ..SamplingParams::default()
    };
    f(&mut p);
    p
}

fn softmax(logits: &[f32], t: f32) -> Vec<f64> {
    let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = logits
        .iter()
        .map(|&x| (f64::from(x - m) / f64::from(t)).exp())
        .collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn frequencies(sampler: &mut Sampler, logits: &[f32], draws: usize) -> Vec<f64> {
    let mut hits = vec![0usize; logits.len()];
    for _ in 0..draws {
        hits[sampler.sample(logits).token as usize] += 1;
    }
    hits.iter().map(|&h| h as f64 / draws as f64).collect()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() < tol,
            "token {i}: got {g:.4}, want {w:.4} (all: {got:?})"
        );
    }
}

/// Logits whose softmax is exactly 0.1, 0.2, 0.3, 0.4.
fn four() -> [f32; 4] {
    [0.1f32, 0.2, 0.3, 0.4].map(f32::ln)
}

#[test]
fn greedy_picks_argmax_lowest_id_on_ties() {
    let mut s = Sampler::new(SamplingParams::greedy());
    assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]).token, 1);
    assert_eq!(s.sample(&[1.0, 5.0, 5.0, 5.0]).token, 1);
    assert_eq!(s.sample(&[-3.0, -2.0, -1.0]).token, 2);
    // Ties in different blocks of a larger vocab.
    let mut wide = vec![0.0f32; 1000];
    wide[900] = 2.0;
    wide[300] = 2.0;
    assert_eq!(s.sample(&wide).token, 300);
}

#[test]
fn tiny_temperature_is_greedy() {
    let mut s = Sampler::new(params(|p| p.temperature = 1e-6));
    for _ in 0..100 {
        assert_eq!(s.sample(&[1.0, 1.01, 0.99]).token, 1);
    }
}

#[test]
fn same_seed_reproduces_and_different_seeds_differ() {
    let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
    let run = |seed| {
        let mut s = Sampler::new(params(|p| p.seed = Some(seed)));
        (0..200)
            .map(|_| s.sample(&logits).token)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
    // Unseeded samplers draw from fresh entropy, so two of them should disagree too.
    let mut a = Sampler::new(SamplingParams::default());
    let mut b = Sampler::new(SamplingParams::default());
    let ta: Vec<u32> = (0..200).map(|_| a.sample(&logits).token).collect();
    let tb: Vec<u32> = (0..200).map(|_| b.sample(&logits).token).collect();
    assert_ne!(ta, tb);
}

#[test]
fn top_k_one_is_greedy() {
    let logits = [0.5, 0.4, 0.6, 0.1, 0.6];
    let mut s = Sampler::new(params(|p| p.top_k = Some(1)));
    for _ in 0..200 {
        assert_eq!(s.sample(&logits).token, 2);
    }
}

#[test]
fn top_k_restricts_and_renormalises() {
    let mut s = Sampler::new(params(|p| p.top_k = Some(2)));
    let f = frequencies(&mut s, &four(), 20_000);
    assert_close(&f, &[0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0], 0.02);
}

#[test]
fn tiny_top_p_is_greedy() {
    let logits = [0.5, 0.4, 0.6, 0.1, 0.59];
    let mut s = Sampler::new(params(|p| p.top_p = 1e-6));
    for _ in 0..200 {
        assert_eq!(s.sample(&logits).token, 2);
    }
}

#[test]
fn top_p_keeps_smallest_sufficient_prefix() {
    // Probabilities .4 .3 .2 .1: the 0.65 nucleus is {3, 2}, renormalised to 4/7 and 3/7.
    let mut s = Sampler::new(params(|p| p.top_p = 0.65));
    let f = frequencies(&mut s, &four(), 20_000);
    assert_close(&f, &[0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0], 0.02);
}

#[test]
fn nucleus_breaks_ties_by_lower_id() {
    // Uniform weights put every token in one boundary bucket: exactly half must survive.
    let mut c: Vec<(u32, f32)> = (0..1000).rev().map(|i| (i, 1.0)).collect();
    nucleus(&mut c, 500.0);
    c.sort_by(desc);
    assert_eq!(c.len(), 500);
    assert!(
        c.iter().enumerate().all(|(i, e)| e.0 == i as u32),
        "ties must keep lower ids"
    );
}

#[test]
fn min_p_filters_relative_to_max() {
    // p/p_max = .25 .5 .75 1, so min_p = 0.6 keeps only tokens 2 and 3.
    let mut s = Sampler::new(params(|p| p.min_p = 0.6));
    let f = frequencies(&mut s, &four(), 20_000);
    assert_close(&f, &[0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0], 0.02);
    let mut s = Sampler::new(params(|p| p.min_p = 1.0));
    assert!((0..200).all(|_| s.sample(&four()).token == 3));
}

#[test]
fn temperature_one_matches_softmax() {
    let mut s = Sampler::new(params(|_| {}));
    let f = frequencies(&mut s, &four(), 20_000);
    assert_close(&f, &[0.1, 0.2, 0.3, 0.4], 0.015);
}

#[test]
fn temperature_scales_distribution() {
    for t in [0.5f32, 2.0] {
        let mut s = Sampler::new(params(|p| p.temperature = t));
        let f = frequencies(&mut s, &four(), 20_000);
        assert_close(&f, &softmax(&four(), t), 0.015);
    }
    let mut cold = Sampler::new(params(|p| p.temperature = 0.3));
    let mut hot = Sampler::new(params(|_| {}));
    assert!(
        frequencies(&mut cold, &four(), 5_000)[3] > frequencies(&mut hot, &four(), 5_000)[3] + 0.2
    );
}

#[test]
fn logprobs_are_raw_log_softmax_sorted_descending() {
    let logits = [1.0f32, 3.0, -2.0, 3.0, 0.5, f32::NAN];
    let want: Vec<f64> = softmax(&logits[..5], 1.0).iter().map(|p| p.ln()).collect();
    // Neither temperature, filters nor penalties may change what is reported; the
    // temperature-1 paths reuse the draw's normaliser, so they are covered separately.
    let cases = [
        params(|p| {
            p.temperature = 0.7;
            p.top_k = Some(2);
        }),
        params(|_| {}),
        params(|p| p.top_p = 0.8),
        params(|p| p.min_p = 0.2),
        params(|p| p.frequency_penalty = 1.0),
        SamplingParams::greedy(),
    ];
    for case in cases {
        let mut s = Sampler::new(SamplingParams {
            logprobs: Some(3),
            ..case
        });
        for _ in 0..50 {
            let out = s.sample(&logits);
            s.observe(out.token);
            assert!((f64::from(out.logprob) - want[out.token as usize]).abs() < 1e-5);
            let ids: Vec<u32> = out.top.iter().map(|t| t.token).collect();
            assert_eq!(ids, [1, 3, 0]);
            for t in &out.top {
                assert!((f64::from(t.logprob) - want[t.token as usize]).abs() < 1e-5);
            }
            assert!(out.top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
        }
    }
    let mut s = Sampler::new(params(|p| p.logprobs = Some(0)));
    assert!(s.sample(&logits).top.is_empty());
    let mut s = Sampler::new(params(|p| p.logprobs = None));
    assert!(s.sample(&logits).top.is_empty());
    // Asking for more alternatives than there are possible tokens lists only possible ones.
    let mut s = Sampler::new(params(|p| p.logprobs = Some(20)));
    assert_eq!(s.sample(&logits).top.len(), 5);
}

#[test]
fn frequency_and_presence_penalties_lower_repeats() {
    let logits = [0.0f32, 0.0];
    let mut s = Sampler::new(params(|p| p.frequency_penalty = 0.5));
    s.observe(0);
    s.observe(0);
    let f = frequencies(&mut s, &logits, 20_000);
    assert_close(&f, &softmax(&[-1.0, 0.0], 1.0), 0.015);

    let mut s = Sampler::new(params(|p| p.presence_penalty = 1.0));
    s.observe(1);
    s.observe(1);
    s.observe(1);
    let f = frequencies(&mut s, &logits, 20_000);
    assert_close(&f, &softmax(&[0.0, -1.0], 1.0), 0.015);
}

#[test]
fn repetition_penalty_follows_hf_and_applies_when_greedy() {
    let mut s = Sampler::new(params(|p| {
        p.temperature = 0.0;
        p.repetition_penalty = 2.0;
    }));
    // 4.0 / 2 = 2.0 < 3.0, so the repeated token loses its lead.
    assert_eq!(s.sample(&[4.0, 3.0]).token, 0);
    s.observe(0);
    assert_eq!(s.sample(&[4.0, 3.0]).token, 1);
    // Negative logits are multiplied, so a repeat falls further behind.
    s.observe(1);
    assert_eq!(s.sample(&[-1.0, -1.2, -1.9]).token, 2);
    // Penalties on out-of-vocab ids are ignored rather than panicking.
    s.observe(99);
    assert_eq!(s.sample(&[-1.0, -1.2, -1.9]).token, 2);
}

#[test]
fn non_finite_rows_never_panic() {
    let nan = f32::NAN;
    let ninf = f32::NEG_INFINITY;
    for p in [
        SamplingParams::greedy(),
        params(|p| p.top_p = 0.9),
        params(|p| p.top_k = Some(3)),
    ] {
        let mut s = Sampler::new(SamplingParams {
            logprobs: Some(5),
            ..p
        });
        assert_eq!(s.sample(&[nan, nan, nan]).token, 0);
        assert_eq!(s.sample(&[ninf, ninf]).token, 0);
        assert_eq!(s.sample(&[]).token, 0);
        assert_eq!(s.sample(&[nan, 1.0, nan]).token, 1);
        assert_eq!(s.sample(&[nan, ninf, 0.0, ninf]).token, 2);
        let out = s.sample(&[f32::INFINITY, 0.0, nan]);
        assert_eq!(out.token, 0);
        assert!(out.logprob.abs() < 1e-6);
    }
    // Penalties that push the only viable token to -inf fall back to the raw argmax.
    let mut s = Sampler::new(params(|p| p.repetition_penalty = f32::MAX));
    s.observe(1);
    assert_eq!(s.sample(&[nan, -1e30, nan]).token, 1);
}

#[test]
fn validate_names_the_bad_parameter() {
    assert!(SamplingParams::default().validate().is_ok());
    assert!(SamplingParams::greedy().validate().is_ok());
    let cases: Vec<(&str, SamplingParams)> = vec![
        ("temperature", params(|p| p.temperature = -0.1)),
        ("temperature", params(|p| p.temperature = 2.5)),
        ("temperature", params(|p| p.temperature = f32::NAN)),
        ("top_p", params(|p| p.top_p = 0.0)),
        ("top_p", params(|p| p.top_p = 1.01)),
        ("top_p", params(|p| p.top_p = f32::NAN)),
        ("min_p", params(|p| p.min_p = -0.01)),
        ("min_p", params(|p| p.min_p = 1.5)),
        ("top_k", params(|p| p.top_k = Some(0))),
        ("presence_penalty", params(|p| p.presence_penalty = 2.1)),
        ("frequency_penalty", params(|p| p.frequency_penalty = -2.1)),
        (
            "frequency_penalty",
            params(|p| p.frequency_penalty = f32::NAN),
        ),
        ("repetition_penalty", params(|p| p.repetition_penalty = 0.0)),
        (
            "repetition_penalty",
            params(|p| p.repetition_penalty = f32::INFINITY),
        ),
        ("logprobs", params(|p| p.logprobs = Some(21))),
    ];
    for (want, p) in cases {
        match p.validate() {
            Err(ModelError::InvalidParam { param, message }) => {
                assert_eq!(param, want, "{message}");
                assert!(!message.is_empty());
            }
            other => panic!("{want}: expected InvalidParam, got {other:?}"),
        }
    }
    assert!(params(|p| {
        p.temperature = 2.0;
        p.top_k = Some(1);
        p.min_p = 1.0;
        p.logprobs = Some(20);
        p.presence_penalty = -2.0;
    })
    .validate()
    .is_ok());
}

#[test]
fn fast_exp_is_accurate_and_flushes_underflow() {
    let mut worst = 0f64;
    for i in 0..=873_000 {
        let x = -(i as f32) * 1e-4;
        let want = f64::from(x).exp();
        worst = worst.max((f64::from(fast_exp(x)) - want).abs() / want);
    }
    assert!(worst < 3e-7, "worst relative error {worst:e}");
    assert_eq!(fast_exp(0.0), 1.0);
    assert_eq!(fast_exp(-88.0), 0.0);
    assert_eq!(fast_exp(f32::NEG_INFINITY), 0.0);
}

#[test]
fn full_size_vocab_behaves() {
    let vocab = 262_144;
    let mut logits: Vec<f32> = (0..vocab)
        .map(|i| ((i * 7919) % 1013) as f32 * 0.01 - 25.0)
        .collect();
    logits[200_000] = 9.0;
    logits[3] = 8.5;
    logits[131_071] = f32::NAN;
    let mut greedy = Sampler::new(SamplingParams {
        logprobs: Some(2),
        ..SamplingParams::greedy()
    });
    let out = greedy.sample(&logits);
    assert_eq!(out.token, 200_000);
    assert_eq!(
        out.top.iter().map(|t| t.token).collect::<Vec<_>>(),
        [200_000, 3]
    );
    let want = f64::from(out.logprob).exp();
    let sum: f64 = logits
        .iter()
        .filter(|x| x.is_finite())
        .map(|&x| f64::from(x - 9.0).exp())
        .sum();
    assert!(
        (want - 1.0 / sum).abs() < 1e-6 * want,
        "{want} vs {}",
        1.0 / sum
    );
    for p in [
        params(|p| p.top_k = Some(2)),
        params(|p| p.top_p = 0.3),
        params(|p| p.min_p = 0.5),
        params(|p| p.temperature = 0.3),
    ] {
        let mut s = Sampler::new(p.clone());
        for _ in 0..20 {
            let t = s.sample(&logits).token;
            assert!(t == 200_000 || t == 3, "{p:?} drew {t}");
        }
    }
}

fn logit() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -30.0f32..30.0,
        1 => Just(f32::NEG_INFINITY),
        1 => Just(f32::NAN),
    ]
}

proptest! {
    #[test]
    fn sampled_token_is_finite_and_within_top_k(
        logits in prop::collection::vec(logit(), 1..300),
        top_k in prop::option::of(1usize..40),
        top_p in 0.01f32..=1.0,
        min_p in 0.0f32..=1.0,
        temperature in 0.0f32..=2.0,
        seed in any::<u64>(),
        repeats in prop::collection::vec(0u32..300, 0..10),
    ) {
        let p = SamplingParams {
            temperature, top_k, top_p, min_p, seed: Some(seed),
            frequency_penalty: 0.5, logprobs: Some(3), ..SamplingParams::default()
        };
        prop_assert!(p.validate().is_ok());
        let mut s = Sampler::new(p);
        for t in repeats {
            s.observe(t);
        }
        let out = s.sample(&logits);
        let chosen = logits[out.token as usize];
        if logits.iter().any(|x| x.is_finite()) {
            prop_assert!(chosen.is_finite(), "picked {} with logit {}", out.token, chosen);
            prop_assert!(out.logprob.is_finite() && out.logprob <= 1e-6);
        }
        if let Some(k) = top_k {
            // Penalties can reorder tokens, so compare against the penalised ranking.
            let row = s.penalised_row(&logits);
            let mine = row[out.token as usize];
            let mut ranked = row;
            ranked.sort_by(|a, b| b.total_cmp(a));
            if let Some(&kth) = ranked.get(k - 1) {
                prop_assert!(mine >= kth, "token {} ({mine}) < k-th logit {kth}", out.token);
            }
        }
    }

    #[test]
    fn nucleus_matches_full_sort(
        weights in prop::collection::vec(
            prop_oneof![0.0f32..1.0, (-30.0f32..0.0).prop_map(f32::exp)],
            1..600,
        ),
        top_p in 0.01f32..=1.0,
    ) {
        let mut c: Vec<(u32, f32)> =
            weights.iter().enumerate().map(|(i, &w)| (i as u32, w)).collect();
        let mut reference = c.clone();
        reference.sort_by(desc);
        let target = f64::from(top_p) * weights.iter().map(|&w| f64::from(w)).sum::<f64>();
        prop_assume!(target > 0.0);
        let mut cum = 0f64;
        let mut keep = reference.len();
        for (i, e) in reference.iter().enumerate() {
            if i > 0 && cum >= target {
                keep = i;
                break;
            }
            cum += f64::from(e.1);
        }
        nucleus(&mut c, target);
        c.sort_by(desc);
        prop_assert!(!c.is_empty());
        prop_assert_eq!(&c[..], &reference[..c.len()]);
        prop_assert_eq!(c.len(), keep);
    }
}

/// Full-sort reference of the filter chain on an unpenalised row: (token, weight) in
/// descending order, plus how many leading entries top-p may keep at each end of a 1e-5
/// tolerance on its target (the two implementations sum in different orders).
fn reference_support(logits: &[f32], p: &SamplingParams) -> (Vec<(u32, f32)>, usize, usize) {
    let mut all: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, x)| x.is_finite())
        .map(|(i, &x)| (i as u32, x))
        .collect();
    all.sort_by(desc);
    all.truncate(p.top_k.unwrap_or(usize::MAX));
    let max = all[0].1;
    for c in &mut all {
        c.1 = fast_exp((c.1 - max) * (1.0 / p.temperature));
    }
    all.sort_by(desc);
    let total: f64 = all.iter().map(|c| f64::from(c.1)).sum();
    let prefix = |target: f64| {
        let mut cum = 0f64;
        for (i, c) in all.iter().enumerate() {
            if i > 0 && cum >= target {
                return i;
            }
            cum += f64::from(c.1);
        }
        all.len()
    };
    let (lo, hi) = if p.top_p < 1.0 {
        let target = f64::from(p.top_p) * total;
        (prefix(target * (1.0 - 1e-5)), prefix(target * (1.0 + 1e-5)))
    } else {
        (all.len(), all.len())
    };
    (all, lo, hi)
}

fn filter_params() -> impl Strategy<Value = SamplingParams> {
    (
        prop::option::of(1usize..400),
        prop_oneof![Just(1.0f32), 0.05f32..1.0],
        prop_oneof![Just(0.0f32), 0.0f32..0.5],
        0.05f32..2.0,
    )
        .prop_map(|(top_k, top_p, min_p, temperature)| SamplingParams {
            top_k,
            top_p,
            min_p,
            temperature,
            seed: Some(1),
            logprobs: Some(MAX_LOGPROBS),
            ..SamplingParams::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// The block-skipping, histogram and prefilter shortcuts must keep exactly the tokens
    /// a full sort keeps (ignoring tokens too unlikely to matter in f32).
    #[test]
    fn filters_match_full_sort_reference(
        noise in prop::collection::vec(-8.0f32..8.0, 1..2500),
        offsets in prop::collection::vec(prop_oneof![Just(0.0f32), -120.0f32..0.0], 10),
        p in filter_params(),
    ) {
        let logits: Vec<f32> =
            noise.iter().enumerate().map(|(i, &x)| x + offsets[i / BLOCK]).collect();
        let (reference, lo, hi) = reference_support(&logits, &p);
        let mut s = Sampler::new(p.clone());
        let mut ours = s.support(&logits);
        ours.sort_by(desc);
        let significant = |w: f32| w >= 1e-6;
        let allowed: Vec<(u32, f32)> =
            reference[..hi].iter().copied().filter(|c| c.1 > 0.0 && c.1 >= p.min_p).collect();
        for c in &ours {
            prop_assert!(allowed.iter().any(|r| r.0 == c.0), "{:?} kept but not allowed", c);
        }
        let required = reference[..lo].iter().filter(|c| significant(c.1) && c.1 >= p.min_p);
        for r in required {
            prop_assert!(ours.iter().any(|c| c.0 == r.0), "token {:?} dropped", r);
        }

        // Reported alternatives: the raw top-n in order, with log-softmax values.
        let out = s.sample(&logits);
        let mut raw: Vec<(u32, f32)> =
            logits.iter().enumerate().map(|(i, &x)| (i as u32, x)).collect();
        raw.sort_by(desc);
        let top = raw[0].1;
        let lse = f64::from(top)
            + raw.iter().map(|c| f64::from(c.1 - top).exp()).sum::<f64>().ln();
        prop_assert_eq!(out.top.len(), raw.len().min(MAX_LOGPROBS));
        for (t, r) in out.top.iter().zip(&raw) {
            prop_assert_eq!(t.token, r.0);
            prop_assert!((f64::from(t.logprob) - (f64::from(r.1) - lse)).abs() < 1e-4);
        }
    }
}

impl Sampler {
    /// Tokens left with positive weight after filtering, as (token, weight).
    fn support(&mut self, logits: &[f32]) -> Vec<(u32, f32)> {
        block_maxima(logits, &mut self.raw_maxima);
        self.load_row(logits, false);
        let best = argmax(&self.row, &self.row_maxima).expect("a finite logit");
        match self.filter(self.row[best as usize]) {
            Support::Row(_) => self
                .row
                .iter()
                .enumerate()
                .map(|(i, &w)| (i as u32, w))
                .collect(),
            Support::Cands => self.cands.clone(),
        }
        .into_iter()
        .filter(|c| c.1 > 0.0)
        .collect()
    }

    /// Penalised logits of all finite tokens, for checking top-k against what it ranked.
    fn penalised_row(&mut self, logits: &[f32]) -> Vec<f32> {
        block_maxima(logits, &mut self.raw_maxima);
        self.load_row(logits, true);
        self.row.clone()
    }
}

#[test]
fn device_rows_are_offered_only_when_the_logits_are_not_needed_on_the_host() {
    let mut greedy = Sampler::new(SamplingParams::greedy());
    let row = greedy.device_row().expect("greedy samples on the device");
    assert_eq!((row.temperature, row.uniform), (0.0, 0.0));
    for p in [
        params(|p| p.frequency_penalty = 0.5),
        params(|p| p.repetition_penalty = 1.1),
        params(|p| p.logprobs = Some(3)),
    ] {
        assert_eq!(Sampler::new(p.clone()).device_row(), None, "{p:?}");
    }
    let chosen_only = params(|p| p.logprobs = Some(0));
    assert!(Sampler::new(chosen_only).device_row().is_some());
    // A seed gives the same draws, so a seeded request repeats on the same device.
    let seeded = params(|p| {
        p.top_k = Some(3);
        p.min_p = 0.05
    });
    let draws = |s: &mut Sampler| (0..4).map(|_| s.device_row().unwrap()).collect::<Vec<_>>();
    let (a, b) = (
        draws(&mut Sampler::new(seeded.clone())),
        draws(&mut Sampler::new(seeded)),
    );
    assert_eq!(a, b);
    assert_eq!((a[0].top_k, a[0].min_p), (3, 0.05));
    assert!(a.windows(2).all(|w| w[0].uniform != w[1].uniform));
}

#[test]
fn device_rows_drawn_by_the_reference_kernel_follow_the_softmax() {
    // The device path end to end on the CPU: the sampler's rows through the kernel's CPU
    // reference give the same distribution as host sampling.
    let logits = four();
    let mut sampler = Sampler::new(params(|p| p.temperature = 1.0));
    let draws = 20_000;
    let mut hits = [0usize; 4];
    for _ in 0..draws {
        let row = sampler.device_row().unwrap();
        let got = gridserve_kernels::cpu::sample_reference(&logits, &row).unwrap();
        hits[got.token as usize] += 1;
        let want = (0.1f32 + 0.1 * got.token as f32).ln();
        assert!((got.logprob - want).abs() < 1e-5, "{got:?}");
    }
    let freq: Vec<f64> = hits.iter().map(|&h| h as f64 / draws as f64).collect();
    assert_close(&freq, &softmax(&logits, 1.0), 0.015);
}
