//! When each request is sent and in which priority tier: vLLM's arrival process (all at once,
//! Poisson, or gamma gaps of a given burstiness, rescaled so the run lasts `n / rate`) and an
//! exact, seeded split of the requests over the `--priority-mix` shares.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand_distr::{Distribution, Gamma};

use crate::engine::Priority;
use crate::GatewayError;

/// Send times, seconds from the start, for `n` requests at `rate` per second.
pub fn arrival_offsets(
    n: usize,
    rate: f64,
    burstiness: f64,
    rng: &mut StdRng,
) -> Result<Vec<f64>, GatewayError> {
    if rate.is_nan() || rate <= 0.0 || burstiness.is_nan() || burstiness <= 0.0 {
        return Err(GatewayError::InvalidRequest {
            param: "request-rate",
            message: format!(
                "need --request-rate > 0 (or inf) and --burstiness > 0 (got {rate}, {burstiness})"
            ),
        });
    }
    if rate.is_infinite() {
        return Ok(vec![0.0; n]);
    }
    let gaps: Vec<f64> = if burstiness.is_infinite() {
        vec![1.0 / rate; n]
    } else {
        let gamma = Gamma::new(burstiness, 1.0 / (rate * burstiness)).map_err(|e| {
            GatewayError::Bench(format!("gamma(burstiness {burstiness}, rate {rate}): {e}"))
        })?;
        (0..n).map(|_| gamma.sample(rng)).collect()
    };
    let mut at: Vec<f64> = gaps
        .iter()
        .scan(0.0, |t, gap| {
            *t += gap;
            Some(*t)
        })
        .collect();
    // As vLLM: the random gaps' sum is off the target by a percent or two, which would move
    // throughput between seeds; stretch them so the last request goes at exactly n / rate.
    if let Some(&last) = at.last().filter(|&&l| l > 0.0) {
        let scale = n as f64 / rate / last;
        at.iter_mut().for_each(|t| *t *= scale);
    }
    Ok(at)
}

/// `interactive=0.2,standard=0.5,flexible=0.3` → shares (normalised to sum 1).
pub fn parse_priority_mix(text: &str) -> Result<Vec<(Priority, f64)>, GatewayError> {
    let bad = |message: String| GatewayError::InvalidRequest {
        param: "priority-mix",
        message,
    };
    let mut mix: Vec<(Priority, f64)> = Vec::new();
    for item in text.split(',').filter(|s| !s.trim().is_empty()) {
        let (name, share) = item
            .split_once('=')
            .ok_or_else(|| bad(format!("{item:?}: expected TIER=SHARE")))?;
        let tier = match name.trim() {
            "interactive" => Priority::Interactive,
            "standard" => Priority::Standard,
            "flexible" => Priority::Flexible,
            other => return Err(bad(format!("unknown tier {other:?}"))),
        };
        let share: f64 = share
            .trim()
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| bad(format!("{item:?}: the share must be a number >= 0")))?;
        if mix.iter().any(|(t, _)| *t == tier) {
            return Err(bad(format!("tier {} given twice", tier.as_str())));
        }
        mix.push((tier, share));
    }
    let total: f64 = mix.iter().map(|(_, s)| s).sum();
    if total <= 0.0 {
        return Err(bad("the shares must add up to more than 0".into()));
    }
    mix.iter_mut().for_each(|(_, s)| *s /= total);
    Ok(mix)
}

/// A tier for each of `n` requests: each tier gets its share rounded by largest remainder (so
/// the counts are exact and add up to `n`), in a seeded random order.
pub fn assign_tiers(n: usize, mix: &[(Priority, f64)], rng: &mut StdRng) -> Vec<Priority> {
    let exact: Vec<f64> = mix.iter().map(|(_, s)| s * n as f64).collect();
    let mut counts: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut order: Vec<usize> = (0..mix.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    let short = n - counts.iter().sum::<usize>();
    for &i in order.iter().cycle().take(short) {
        counts[i] += 1;
    }
    let mut tiers: Vec<Priority> = mix
        .iter()
        .zip(&counts)
        .flat_map(|((tier, _), &c)| std::iter::repeat_n(*tier, c))
        .collect();
    tiers.shuffle(rng);
    tiers
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn infinite_rate_sends_everything_at_once() {
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(
            arrival_offsets(3, f64::INFINITY, 1.0, &mut rng).unwrap(),
            vec![0.0; 3]
        );
    }

    #[test]
    fn poisson_and_gamma_arrivals_end_at_n_over_rate_and_are_seeded() {
        for burstiness in [1.0, 0.5, 4.0] {
            let at = arrival_offsets(200, 10.0, burstiness, &mut StdRng::seed_from_u64(7)).unwrap();
            assert!((at[199] - 20.0).abs() < 1e-9);
            assert!(at.windows(2).all(|w| w[0] <= w[1]));
            let again = arrival_offsets(200, 10.0, burstiness, &mut StdRng::seed_from_u64(7));
            assert_eq!(at, again.unwrap());
        }
        // Burstier arrivals have more variable gaps.
        let cv = |b: f64| {
            let at = arrival_offsets(2000, 10.0, b, &mut StdRng::seed_from_u64(1)).unwrap();
            let gaps: Vec<f64> = at.windows(2).map(|w| w[1] - w[0]).collect();
            let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
            let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
            var.sqrt() / mean
        };
        assert!(cv(0.25) > 1.5 && (cv(1.0) - 1.0).abs() < 0.15 && cv(16.0) < 0.4);
        let uniform = arrival_offsets(4, 2.0, f64::INFINITY, &mut StdRng::seed_from_u64(0));
        assert_eq!(uniform.unwrap(), vec![0.5, 1.0, 1.5, 2.0]);
        assert!(arrival_offsets(4, 0.0, 1.0, &mut StdRng::seed_from_u64(0)).is_err());
        assert!(arrival_offsets(4, 1.0, -1.0, &mut StdRng::seed_from_u64(0)).is_err());
    }

    #[test]
    fn priority_mix_splits_exactly() {
        let mix = parse_priority_mix("interactive=2, standard=5,flexible=3").unwrap();
        assert_eq!(mix[0], (Priority::Interactive, 0.2));
        let tiers = assign_tiers(11, &mix, &mut StdRng::seed_from_u64(3));
        let count = |t| tiers.iter().filter(|&&x| x == t).count();
        // 2.2, 5.5, 3.3 → 2, 6, 3 (the largest remainder gets the last one).
        assert_eq!(
            (
                count(Priority::Interactive),
                count(Priority::Standard),
                count(Priority::Flexible)
            ),
            (2, 6, 3)
        );
        assert!(parse_priority_mix("urgent=1").is_err());
        assert!(parse_priority_mix("standard=-1").is_err());
        assert!(parse_priority_mix("standard=0").is_err());
        assert!(parse_priority_mix("standard=1,standard=2").is_err());
        assert!(parse_priority_mix("standard").is_err());
    }
}
