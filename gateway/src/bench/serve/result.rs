//! What a `bench serve` run reports: the console summary (vLLM's labels and layout, then the
//! energy, per-tier and envelope blocks) and the JSON result (vLLM's keys plus energy keys).

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use super::energy::EnergyReport;
use super::envelopes::Compliance;
use super::probe::ProbeSample;
use super::stats::{Metric, RequestOutcome, Summary};

/// Everything one run produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub label: String,
    pub base_url: String,
    pub endpoint: &'static str,
    pub model: String,
    pub tokenizer: Option<String>,
    pub dataset: String,
    pub num_prompts: usize,
    pub request_rate: f64,
    pub burstiness: f64,
    pub max_concurrency: Option<usize>,
    pub duration_s: f64,
    pub summary: Summary,
    /// The selected metrics and percentiles (what the summary prints).
    pub metrics: Vec<Metric>,
    pub percentiles: Vec<f64>,
    /// Per tier, in tier order (empty without tiers).
    pub tiers: Vec<(String, Summary)>,
    pub energy: EnergyReport,
    pub compliance: Option<Compliance>,
    pub outcomes: Vec<RequestOutcome>,
    pub samples: Vec<ProbeSample>,
    /// When the run started, `YYYYmmdd-HHMMSS` UTC.
    pub date: String,
}

/// "99" for 99.0, "99.9" for 99.9 (vLLM's key spelling).
fn p_word(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{}", p as i64)
    } else {
        format!("{p}")
    }
}

fn line(out: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{label:<40} {value:<10}");
}

fn line_f(out: &mut String, label: &str, value: f64) {
    let _ = writeln!(out, "{label:<40} {value:<10.2}");
}

fn rule(out: &mut String, title: &str, fill: char) {
    let _ = writeln!(out, "{}", centre(title, 50, fill));
}

fn centre(title: &str, width: usize, fill: char) -> String {
    let len = title.chars().count();
    if len >= width {
        return title.to_string();
    }
    let left = (width - len) / 2;
    let fill_str = |n| std::iter::repeat_n(fill, n).collect::<String>();
    format!("{}{title}{}", fill_str(left), fill_str(width - len - left))
}

/// The console summary.
pub fn render(r: &RunResult) -> String {
    let s = &r.summary;
    let mut out = String::new();
    rule(&mut out, " Serving Benchmark Result ", '=');
    line(&mut out, "Successful requests:", s.completed);
    line(&mut out, "Failed requests:", s.failed);
    if let Some(c) = r.max_concurrency {
        line(&mut out, "Maximum request concurrency:", c);
    }
    if r.request_rate.is_finite() {
        line_f(&mut out, "Request rate configured (RPS):", r.request_rate);
    }
    line_f(&mut out, "Benchmark duration (s):", r.duration_s);
    line(&mut out, "Total input tokens:", s.total_input_tokens);
    line(&mut out, "Total generated tokens:", s.total_output_tokens);
    line_f(
        &mut out,
        "Request throughput (req/s):",
        s.request_throughput,
    );
    if let Some(g) = s.request_goodput {
        line_f(&mut out, "Request goodput (req/s):", g);
    }
    line_f(
        &mut out,
        "Output token throughput (tok/s):",
        s.output_throughput,
    );
    line_f(
        &mut out,
        "Peak output token throughput (tok/s):",
        s.max_output_tokens_per_s,
    );
    line_f(
        &mut out,
        "Peak concurrent requests:",
        s.max_concurrent_requests as f64,
    );
    line_f(
        &mut out,
        "Total token throughput (tok/s):",
        s.total_token_throughput,
    );
    for metric in &r.metrics {
        let Some(m) = s.metric(*metric) else { continue };
        rule(&mut out, metric.header(), '-');
        line_f(
            &mut out,
            &format!("Mean {} (ms):", metric.label()),
            m.mean_ms,
        );
        line_f(
            &mut out,
            &format!("Median {} (ms):", metric.label()),
            m.median_ms,
        );
        for (p, v) in &m.percentiles_ms {
            line_f(
                &mut out,
                &format!("P{} {} (ms):", p_word(*p), metric.label()),
                *v,
            );
        }
    }
    render_energy(&mut out, &r.energy);
    render_tiers(&mut out, r);
    if let Some(c) = &r.compliance {
        render_compliance(&mut out, c);
    }
    rule(&mut out, "", '=');
    out
}

fn render_energy(out: &mut String, e: &EnergyReport) {
    rule(out, "Energy", '-');
    line(
        out,
        "Energy source:",
        format!("{} ({})", e.source, e.detail),
    );
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("n/a".to_string(), |v| format!("{v:.digits$}"));
    line(out, "Total energy (J):", opt(e.total_joules, 2));
    line(
        out,
        "Energy per output token (J/tok):",
        opt(e.joules_per_output_token, 4),
    );
    line(
        out,
        "Output tokens per joule (tok/J):",
        opt(e.output_tokens_per_joule, 3),
    );
    if e.source != "device" && e.device_joules.is_some() {
        line(out, "Device energy counter (J):", opt(e.device_joules, 2));
        line(
            out,
            "Device-counter tokens per joule:",
            opt(e.device_output_tokens_per_joule, 3),
        );
    }
    line(out, "Average power (W):", opt(e.avg_power_watts, 2));
    line(out, "P99 power (W):", opt(e.p99_power_watts, 2));
    if let Some(p) = &e.power_source {
        line(out, "Power sampled from:", p);
    }
}

fn render_tiers(out: &mut String, r: &RunResult) {
    if r.tiers.is_empty() {
        return;
    }
    rule(out, "Per Priority Tier", '-');
    let _ = writeln!(
        out,
        "{:<12} {:>5} {:>6} {:>9} {:>11} {:>11} {:>11}",
        "tier", "ok", "failed", "out tok/s", "P99 TTFT ms", "P99 TPOT ms", "P99 E2EL ms"
    );
    for (tier, s) in &r.tiers {
        let p99 = |m| {
            s.percentile_ms(m, 99.0)
                .map_or("-".into(), |v| format!("{v:.1}"))
        };
        let _ = writeln!(
            out,
            "{tier:<12} {:>5} {:>6} {:>9.2} {:>11} {:>11} {:>11}",
            s.completed,
            s.failed,
            s.output_throughput,
            p99(Metric::Ttft),
            p99(Metric::Tpot),
            p99(Metric::E2el)
        );
    }
}

fn render_compliance(out: &mut String, c: &Compliance) {
    rule(out, &format!("Envelope Compliance ({})", c.scenario), '-');
    line_f(out, "Time under a cap (s):", c.seconds_capped);
    line_f(out, "Time over the cap (s):", c.seconds_over_cap);
    let _ = writeln!(
        out,
        "{:>6} {:>8} {:>7} {:>7} {:>7} {:>8} {:>8}  tiers (ok/failed, P99 TTFT ms)",
        "at s", "cap W", "ack s", "settle", "over s", "mean W", "max W"
    );
    let opt = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| format!("{v:.d$}"));
    for st in &c.steps {
        let tiers: Vec<String> = st
            .tiers
            .iter()
            .map(|t| {
                format!(
                    "{} {}/{} {:.0}",
                    t.tier, t.completed, t.failed, t.p99_ttft_ms
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "{:>6.1} {:>8} {:>7} {:>7} {:>7.2} {:>8} {:>8}  {}",
            st.step.at_s,
            st.step
                .cap_watts
                .map_or("none".to_string(), |c| format!("{c:.0}")),
            opt(st.ack_s, 2),
            opt(st.settle_s, 2),
            st.seconds_over_cap,
            opt(st.mean_power_watts, 1),
            opt(st.max_power_watts, 1),
            tiers.join("; ")
        );
        if let Some(e) = &st.posted.error {
            let _ = writeln!(out, "       step error: {e}");
        }
    }
}

/// Mean/median/std and percentile keys of the selected metrics, as vLLM names them.
fn metric_keys(map: &mut Map<String, Value>, s: &Summary, metrics: &[Metric]) {
    for metric in metrics {
        let Some(m) = s.metric(*metric) else { continue };
        let k = metric.key();
        map.insert(format!("mean_{k}_ms"), json!(m.mean_ms));
        map.insert(format!("median_{k}_ms"), json!(m.median_ms));
        map.insert(format!("std_{k}_ms"), json!(m.std_ms));
        for (p, v) in &m.percentiles_ms {
            map.insert(format!("p{}_{k}_ms", p_word(*p)), json!(v));
        }
    }
}

fn summary_keys(map: &mut Map<String, Value>, s: &Summary, metrics: &[Metric]) {
    map.insert("completed".into(), json!(s.completed));
    map.insert("failed".into(), json!(s.failed));
    map.insert("total_input_tokens".into(), json!(s.total_input_tokens));
    map.insert("total_output_tokens".into(), json!(s.total_output_tokens));
    map.insert("request_throughput".into(), json!(s.request_throughput));
    map.insert("request_goodput".into(), json!(s.request_goodput));
    map.insert("output_throughput".into(), json!(s.output_throughput));
    map.insert(
        "total_token_throughput".into(),
        json!(s.total_token_throughput),
    );
    map.insert(
        "max_output_tokens_per_s".into(),
        json!(s.max_output_tokens_per_s),
    );
    map.insert(
        "max_concurrent_requests".into(),
        json!(s.max_concurrent_requests),
    );
    metric_keys(map, s, metrics);
}

/// The JSON result: vLLM's keys, then the energy keys and gridserve's blocks.
pub fn to_json(r: &RunResult) -> Value {
    let mut map = Map::new();
    header_keys(&mut map, r);
    summary_keys(&mut map, &r.summary, &r.metrics);
    per_request_keys(&mut map, &r.outcomes);
    energy_keys(&mut map, &r.energy);
    let tiers: Map<String, Value> = r
        .tiers
        .iter()
        .map(|(t, s)| {
            let mut m = Map::new();
            summary_keys(&mut m, s, &r.metrics);
            (t.clone(), Value::Object(m))
        })
        .collect();
    map.insert("tiers".into(), Value::Object(tiers));
    map.insert("envelope_compliance".into(), json!(r.compliance));
    map.insert("power_samples".into(), json!(r.samples));
    Value::Object(map)
}

/// A rate or burstiness as vLLM writes it (`"inf"` for infinity, which JSON cannot hold).
fn finite_or_inf(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        json!("inf")
    }
}

/// What was run against what.
fn header_keys(map: &mut Map<String, Value>, r: &RunResult) {
    let endpoint_type = if r.endpoint.contains("chat") {
        "openai-chat"
    } else {
        "openai"
    };
    for (k, v) in [
        ("date", json!(r.date)),
        ("endpoint_type", json!(endpoint_type)),
        ("backend", json!("openai")),
        ("label", json!(r.label)),
        ("base_url", json!(r.base_url)),
        ("endpoint", json!(r.endpoint)),
        ("model_id", json!(r.model)),
        ("tokenizer_id", json!(r.tokenizer)),
        ("dataset_name", json!(r.dataset)),
        ("num_prompts", json!(r.num_prompts)),
        ("request_rate", finite_or_inf(r.request_rate)),
        ("burstiness", finite_or_inf(r.burstiness)),
        ("max_concurrency", json!(r.max_concurrency)),
        ("duration", json!(r.duration_s)),
    ] {
        map.insert(k.into(), v);
    }
}

/// One list per figure, one entry per request in sending order (vLLM's per-request keys).
fn per_request_keys(map: &mut Map<String, Value>, o: &[RequestOutcome]) {
    let list = |f: &dyn Fn(&RequestOutcome) -> Value| Value::Array(o.iter().map(f).collect());
    for (k, v) in [
        ("input_lens", list(&|o| json!(o.prompt_tokens))),
        ("output_lens", list(&|o| json!(o.output_tokens))),
        ("ttfts", list(&|o| json!(o.ttft_s))),
        ("itls", list(&|o| json!(o.itl_s))),
        ("latencies", list(&|o| json!(o.latency_s))),
        ("start_times", list(&|o| json!(o.start_s))),
        (
            "errors",
            list(&|o| json!(o.error.clone().unwrap_or_default())),
        ),
        ("priorities", list(&|o| json!(o.tier))),
        ("request_energy_joules", list(&|o| json!(o.energy_joules))),
    ] {
        map.insert(k.into(), v);
    }
}

/// The energy figures, flat (for tools that read vLLM-style keys) and as one block.
fn energy_keys(map: &mut Map<String, Value>, e: &EnergyReport) {
    for (k, v) in [
        ("energy_source", json!(e.source)),
        ("total_energy_joules", json!(e.total_joules)),
        (
            "energy_per_output_token_joules",
            json!(e.joules_per_output_token),
        ),
        ("output_tokens_per_joule", json!(e.output_tokens_per_joule)),
        ("avg_power_watts", json!(e.avg_power_watts)),
        ("p99_power_watts", json!(e.p99_power_watts)),
        ("device_energy_joules", json!(e.device_joules)),
        (
            "device_output_tokens_per_joule",
            json!(e.device_output_tokens_per_joule),
        ),
        ("energy", json!(e)),
    ] {
        map.insert(k.into(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::super::stats::summarize;
    use super::*;

    pub(crate) fn sample_result() -> RunResult {
        let outcomes = vec![
            RequestOutcome {
                tier: Some("interactive"),
                success: true,
                ttft_s: 0.1,
                itl_s: vec![0.02; 3],
                latency_s: 0.16,
                prompt_tokens: 8,
                output_tokens: 4,
                energy_joules: Some(2.0),
                energy_source: Some("twin".into()),
                ..Default::default()
            },
            RequestOutcome {
                tier: Some("flexible"),
                error: Some("HTTP 429 Too Many Requests: the waiting queue is full".into()),
                status: Some(429),
                ..Default::default()
            },
        ];
        let percentiles = vec![50.0, 99.9];
        let summary = summarize(&outcomes, 1.0, &percentiles, &[]);
        let tiers = ["interactive", "flexible"]
            .iter()
            .map(|t| {
                let mine: Vec<_> = outcomes
                    .iter()
                    .filter(|o| o.tier == Some(*t))
                    .cloned()
                    .collect();
                (t.to_string(), summarize(&mine, 1.0, &percentiles, &[]))
            })
            .collect();
        let energy = super::super::energy::report(
            super::super::args::EnergySourceArg::Auto,
            &outcomes,
            summary.total_output_tokens,
            1.0,
            &Default::default(),
        );
        RunResult {
            label: "test".into(),
            base_url: "http://x".into(),
            endpoint: "/v1/completions",
            model: "m".into(),
            tokenizer: None,
            dataset: "custom".into(),
            num_prompts: 2,
            request_rate: f64::INFINITY,
            burstiness: 1.0,
            max_concurrency: Some(2),
            duration_s: 1.0,
            summary,
            metrics: Metric::ALL.to_vec(),
            percentiles,
            tiers,
            energy,
            compliance: None,
            outcomes,
            samples: vec![],
            date: "20261206-120000".into(),
        }
    }

    #[test]
    fn the_summary_uses_vllms_labels_and_adds_energy_and_tiers() {
        let text = render(&sample_result());
        for label in [
            "============ Serving Benchmark Result ============",
            "Successful requests:                     1",
            "Failed requests:                         1",
            "Output token throughput (tok/s):         4.00",
            "---------------Time to First Token----------------",
            "Mean TTFT (ms):                          100.00",
            "P99.9 TPOT (ms):",
            "P50 E2EL (ms):                           160.00",
            "Energy source:                           usage",
            "Output tokens per joule (tok/J):         2.000",
            "interactive",
        ] {
            assert!(text.contains(label), "missing {label:?} in\n{text}");
        }
    }

    #[test]
    fn the_json_has_vllms_keys_and_energy_keys() {
        let v = to_json(&sample_result());
        for key in [
            "date",
            "backend",
            "model_id",
            "num_prompts",
            "request_rate",
            "burstiness",
            "max_concurrency",
            "duration",
            "completed",
            "failed",
            "total_input_tokens",
            "total_output_tokens",
            "request_throughput",
            "output_throughput",
            "total_token_throughput",
            "max_output_tokens_per_s",
            "max_concurrent_requests",
            "input_lens",
            "output_lens",
            "ttfts",
            "itls",
            "errors",
            "mean_ttft_ms",
            "median_tpot_ms",
            "std_itl_ms",
            "p99.9_e2el_ms",
            "p50_ttft_ms",
            "energy_source",
            "total_energy_joules",
            "energy_per_output_token_joules",
            "output_tokens_per_joule",
            "avg_power_watts",
            "p99_power_watts",
            "tiers",
            "envelope_compliance",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["request_rate"], "inf");
        assert_eq!(
            v["errors"][1],
            "HTTP 429 Too Many Requests: the waiting queue is full"
        );
        assert_eq!(v["tiers"]["flexible"]["failed"], 1);
        assert_eq!(v["total_energy_joules"], 2.0);
    }
}
