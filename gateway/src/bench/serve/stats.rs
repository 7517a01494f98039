//! The serving metrics of `bench serve`, computed exactly as `vllm bench serve` does (numpy's
//! linear-interpolation percentiles, population standard deviation, TPOT over tokens after the
//! first, goodput against all SLOs at once), so figures compare across the two tools.

use serde::Serialize;

use crate::GatewayError;

/// What happened to one request, as the client saw it. Times are seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestOutcome {
    /// Priority tier sent (`None` when the run has no priority mix).
    pub tier: Option<&'static str>,
    /// When it was sent, from the benchmark's start.
    pub start_s: f64,
    pub success: bool,
    /// Why it failed (HTTP status and the server's message, or the transport error).
    pub error: Option<String>,
    /// The HTTP status when the server answered one.
    pub status: Option<u16>,
    /// Request sent → first token.
    pub ttft_s: f64,
    /// Gaps between consecutive streamed chunks with text.
    pub itl_s: Vec<f64>,
    /// Request sent → end of stream.
    pub latency_s: f64,
    /// The server's usage figure when it sent one, else the client's count.
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    /// gridserve's per-request `usage.energy_joules`.
    pub energy_joules: Option<f64>,
    pub energy_source: Option<String>,
}

/// A latency metric whose percentiles can be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Ttft,
    Tpot,
    Itl,
    E2el,
}

impl Metric {
    pub const ALL: [Metric; 4] = [Metric::Ttft, Metric::Tpot, Metric::Itl, Metric::E2el];

    pub fn key(self) -> &'static str {
        match self {
            Metric::Ttft => "ttft",
            Metric::Tpot => "tpot",
            Metric::Itl => "itl",
            Metric::E2el => "e2el",
        }
    }

    /// The abbreviation in the summary's labels ("Mean TTFT (ms)").
    pub fn label(self) -> &'static str {
        match self {
            Metric::Ttft => "TTFT",
            Metric::Tpot => "TPOT",
            Metric::Itl => "ITL",
            Metric::E2el => "E2EL",
        }
    }

    /// The summary's section header, as vLLM prints it.
    pub fn header(self) -> &'static str {
        match self {
            Metric::Ttft => "Time to First Token",
            Metric::Tpot => "Time per Output Token (excl. 1st token)",
            Metric::Itl => "Inter-token Latency",
            Metric::E2el => "End-to-end Latency",
        }
    }

    fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.key() == s.trim())
    }
}

/// `--percentile-metrics ttft,tpot`.
pub fn parse_metrics(list: &str) -> Result<Vec<Metric>, GatewayError> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            Metric::parse(s).ok_or_else(|| {
                bad(
                    "percentile-metrics",
                    format!("unknown metric {s:?} (ttft, tpot, itl, e2el)"),
                )
            })
        })
        .collect()
}

/// `--metric-percentiles 50,90,99`: each in (0, 100].
pub fn parse_percentiles(list: &str) -> Result<Vec<f64>, GatewayError> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| match s.trim().parse::<f64>() {
            Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
            _ => Err(bad(
                "metric-percentiles",
                format!("{s:?} is not a percentile in (0, 100]"),
            )),
        })
        .collect()
}

/// `--goodput ttft:500 tpot:50` (milliseconds; also accepted as one space-separated string).
pub fn parse_goodput(items: &[String]) -> Result<Vec<(Metric, f64)>, GatewayError> {
    let mut slos = Vec::new();
    for item in items.iter().flat_map(|s| s.split_whitespace()) {
        let parsed = item.split_once(':').and_then(|(k, v)| {
            let metric = Metric::parse(k).filter(|m| *m != Metric::Itl)?;
            let ms = v
                .parse::<f64>()
                .ok()
                .filter(|ms| ms.is_finite() && *ms > 0.0)?;
            Some((metric, ms))
        });
        match parsed {
            Some(slo) => slos.push(slo),
            None => {
                return Err(bad(
                    "goodput",
                    format!("{item:?}: expected KEY:MILLISECONDS with KEY ttft, tpot or e2el"),
                ))
            }
        }
    }
    Ok(slos)
}

fn bad(param: &'static str, message: String) -> GatewayError {
    GatewayError::InvalidRequest { param, message }
}

/// Mean, median, standard deviation and the chosen percentiles of one metric, milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricStats {
    pub metric: Metric,
    pub mean_ms: f64,
    pub median_ms: f64,
    pub std_ms: f64,
    /// `(percentile, value_ms)`.
    pub percentiles_ms: Vec<(f64, f64)>,
}

/// The run's serving figures (vLLM's `BenchmarkMetrics`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub completed: usize,
    pub failed: usize,
    pub total_input_tokens: usize,
    pub total_output_tokens: usize,
    pub request_throughput: f64,
    /// `None` without `--goodput`.
    pub request_goodput: Option<f64>,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    /// Most output tokens in any one-second bucket of the run.
    pub max_output_tokens_per_s: f64,
    /// Most successful requests in flight at once.
    pub max_concurrent_requests: usize,
    /// One entry per metric in `Metric::ALL` order.
    pub metrics: Vec<MetricStats>,
}

impl Summary {
    pub fn metric(&self, metric: Metric) -> Option<&MetricStats> {
        self.metrics.iter().find(|m| m.metric == metric)
    }

    /// The `p`th percentile of `metric`, when it was computed.
    pub fn percentile_ms(&self, metric: Metric, p: f64) -> Option<f64> {
        let stats = self.metric(metric)?;
        stats
            .percentiles_ms
            .iter()
            .find(|(q, _)| (*q - p).abs() < 1e-9)
            .map(|&(_, v)| v)
    }
}

/// vLLM's metrics over `outcomes`, which ran for `duration_s`.
pub fn summarize(
    outcomes: &[RequestOutcome],
    duration_s: f64,
    percentiles: &[f64],
    goodput: &[(Metric, f64)],
) -> Summary {
    let ok: Vec<&RequestOutcome> = outcomes.iter().filter(|o| o.success).collect();
    let (mut ttfts, mut tpots, mut itls, mut e2els) = (vec![], vec![], vec![], vec![]);
    let mut good = 0usize;
    for o in &ok {
        // vLLM counts a one-token answer's TPOT as 0 for goodput but leaves it out of the TPOT
        // statistics.
        let tpot =
            (o.output_tokens > 1).then(|| (o.latency_s - o.ttft_s) / (o.output_tokens - 1) as f64);
        tpots.extend(tpot);
        ttfts.push(o.ttft_s);
        itls.extend_from_slice(&o.itl_s);
        e2els.push(o.latency_s);
        let value = |m: Metric| match m {
            Metric::Ttft => o.ttft_s,
            Metric::Tpot => tpot.unwrap_or(0.0),
            Metric::E2el | Metric::Itl => o.latency_s,
        };
        if goodput.iter().all(|&(m, ms)| value(m) * 1e3 <= ms) {
            good += 1;
        }
    }
    let total_input: usize = ok.iter().map(|o| o.prompt_tokens).sum();
    let total_output: usize = ok.iter().map(|o| o.output_tokens).sum();
    let per_s = |x: f64| {
        if duration_s > 0.0 {
            x / duration_s
        } else {
            0.0
        }
    };
    let stats = |metric, values: &[f64]| metric_stats(metric, values, percentiles);
    Summary {
        completed: ok.len(),
        failed: outcomes.len() - ok.len(),
        total_input_tokens: total_input,
        total_output_tokens: total_output,
        request_throughput: per_s(ok.len() as f64),
        request_goodput: (!goodput.is_empty()).then(|| per_s(good as f64)),
        output_throughput: per_s(total_output as f64),
        total_token_throughput: per_s((total_input + total_output) as f64),
        max_output_tokens_per_s: peak_tokens_per_s(&ok),
        max_concurrent_requests: peak_concurrency(&ok),
        metrics: vec![
            stats(Metric::Ttft, &ttfts),
            stats(Metric::Tpot, &tpots),
            stats(Metric::Itl, &itls),
            stats(Metric::E2el, &e2els),
        ],
    }
}

fn metric_stats(metric: Metric, seconds: &[f64], percentiles: &[f64]) -> MetricStats {
    let mut ms: Vec<f64> = seconds.iter().map(|s| s * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len().max(1) as f64;
    let mean = ms.iter().sum::<f64>() / n;
    let var = ms.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    MetricStats {
        metric,
        mean_ms: mean,
        median_ms: percentile_linear(&ms, 50.0),
        std_ms: var.sqrt(),
        percentiles_ms: percentiles
            .iter()
            .map(|&p| (p, percentile_linear(&ms, p)))
            .collect(),
    }
}

/// numpy's default percentile (linear interpolation between closest ranks) of ascending
/// `sorted`; 0 for no samples, as vLLM reports them.
pub fn percentile_linear(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n => {
            let rank = (p / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
            let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
        }
    }
}

/// Token arrival times of one request: the first token, then each inter-token gap.
pub(super) fn token_times(o: &RequestOutcome) -> impl Iterator<Item = f64> + '_ {
    let first = o.start_s + o.ttft_s;
    std::iter::once(first).chain(o.itl_s.iter().scan(first, |t, gap| {
        *t += gap;
        Some(*t)
    }))
}

/// Most streamed chunks in one 1 s bucket counted from the first successful request's start.
fn peak_tokens_per_s(ok: &[&RequestOutcome]) -> f64 {
    let Some(t0) = ok.iter().map(|o| o.start_s).min_by(f64::total_cmp) else {
        return 0.0;
    };
    let mut buckets = std::collections::HashMap::<u64, usize>::new();
    for o in ok {
        for t in token_times(o) {
            *buckets.entry((t - t0).max(0.0) as u64).or_default() += 1;
        }
    }
    buckets.values().copied().max().unwrap_or(0) as f64
}

/// Most requests in flight at once, over half-open intervals [start, end).
fn peak_concurrency(ok: &[&RequestOutcome]) -> usize {
    let mut events: Vec<(f64, i32)> = ok
        .iter()
        .flat_map(|o| [(o.start_s, 1), (o.start_s + o.latency_s, -1)])
        .collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, delta) in events {
        now += delta;
        peak = peak.max(now);
    }
    peak as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(start_s: f64, ttft_s: f64, itl_s: &[f64], output_tokens: usize) -> RequestOutcome {
        RequestOutcome {
            start_s,
            success: true,
            ttft_s,
            latency_s: ttft_s + itl_s.iter().sum::<f64>(),
            itl_s: itl_s.to_vec(),
            prompt_tokens: 10,
            output_tokens,
            ..Default::default()
        }
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        // numpy.percentile([1,2,3,4], [50, 99, 25]) = 2.5, 3.97, 1.75
        assert!((percentile_linear(&v, 50.0) - 2.5).abs() < 1e-12);
        assert!((percentile_linear(&v, 99.0) - 3.97).abs() < 1e-12);
        assert!((percentile_linear(&v, 25.0) - 1.75).abs() < 1e-12);
        assert_eq!(percentile_linear(&[], 99.0), 0.0);
        assert_eq!(percentile_linear(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn tpot_itl_ttft_and_throughput_on_known_timings() {
        // A: TTFT 100 ms, then 4 tokens 20 ms apart → TPOT (180-100)/4 = 20 ms.
        // B: TTFT 300 ms, 2 tokens 50 ms apart → TPOT 50 ms. C failed.
        let a = ok(0.0, 0.1, &[0.02; 4], 5);
        let b = ok(0.5, 0.3, &[0.05; 2], 3);
        let c = RequestOutcome {
            error: Some("HTTP 429".into()),
            status: Some(429),
            ..Default::default()
        };
        let s = summarize(&[a, b, c], 2.0, &[50.0, 99.0], &[]);
        assert_eq!((s.completed, s.failed), (2, 1));
        assert_eq!((s.total_input_tokens, s.total_output_tokens), (20, 8));
        assert!((s.output_throughput - 4.0).abs() < 1e-12);
        assert!((s.total_token_throughput - 14.0).abs() < 1e-12);
        assert!((s.request_throughput - 1.0).abs() < 1e-12);
        let tpot = s.metric(Metric::Tpot).unwrap();
        assert!((tpot.mean_ms - 35.0).abs() < 1e-9);
        assert!((tpot.std_ms - 15.0).abs() < 1e-9);
        let ttft = s.metric(Metric::Ttft).unwrap();
        assert!((ttft.median_ms - 200.0).abs() < 1e-9);
        // ITL: four 20 ms and two 50 ms gaps.
        let itl = s.metric(Metric::Itl).unwrap();
        assert!((itl.mean_ms - 30.0).abs() < 1e-9);
        assert!((s.percentile_ms(Metric::Itl, 99.0).unwrap() - 50.0).abs() < 1e-9);
        // E2EL 180 and 400 ms: p99 interpolates to 397.8 ms.
        assert!((s.percentile_ms(Metric::E2el, 99.0).unwrap() - 397.8).abs() < 1e-9);
        assert_eq!(s.request_goodput, None);
        // A runs [0, 0.18), B [0.5, 0.9): never together.
        assert_eq!(s.max_concurrent_requests, 1);
        // A's 5 tokens land in second 0, B's 3 tokens at 0.8–0.9 s too.
        assert_eq!(s.max_output_tokens_per_s, 8.0);
    }

    #[test]
    fn goodput_needs_every_slo_and_one_token_answers_have_zero_tpot() {
        let fast = ok(0.0, 0.1, &[0.02; 4], 5);
        let slow_decode = ok(0.0, 0.1, &[0.08; 4], 5);
        let one_token = ok(0.0, 0.2, &[], 1);
        let outcomes = [fast, slow_decode, one_token];
        let slos = parse_goodput(&["ttft:250 tpot:50".into()]).unwrap();
        let s = summarize(&outcomes, 1.0, &[99.0], &slos);
        assert_eq!(s.request_goodput, Some(2.0));
        assert_eq!(s.max_concurrent_requests, 3);
        // The one-token answer has no TPOT sample.
        let tpot = s.metric(Metric::Tpot).unwrap();
        assert!((tpot.mean_ms - 50.0).abs() < 1e-9);
        let strict = summarize(
            &outcomes,
            1.0,
            &[99.0],
            &parse_goodput(&["ttft:150".into()]).unwrap(),
        );
        assert_eq!(strict.request_goodput, Some(2.0));
    }

    #[test]
    fn no_successes_give_zeros_not_nan() {
        let failed = RequestOutcome::default();
        let s = summarize(&[failed], 1.0, &[99.0], &[]);
        assert_eq!((s.completed, s.failed), (0, 1));
        for m in &s.metrics {
            assert_eq!((m.mean_ms, m.median_ms, m.std_ms), (0.0, 0.0, 0.0));
        }
        assert_eq!(s.max_output_tokens_per_s, 0.0);
    }

    #[test]
    fn option_lists_parse_and_refuse_nonsense() {
        assert_eq!(
            parse_metrics("ttft, e2el").unwrap(),
            vec![Metric::Ttft, Metric::E2el]
        );
        assert!(parse_metrics("ttft,latency").is_err());
        assert_eq!(parse_percentiles("50,99.9").unwrap(), vec![50.0, 99.9]);
        assert!(parse_percentiles("0").is_err());
        assert!(parse_percentiles("101").is_err());
        assert!(parse_goodput(&["ttft".into()]).is_err());
        assert!(parse_goodput(&["itl:5".into()]).is_err());
        assert!(parse_goodput(&["tpot:-1".into()]).is_err());
        let slos = parse_goodput(&["ttft:1".into(), "e2el:2.5".into()]).unwrap();
        assert_eq!(slos, vec![(Metric::Ttft, 1.0), (Metric::E2el, 2.5)]);
    }
}
