//! The peer comparison's rows: for each figure, llama.cpp's and gridserve's tok/s, their ratio
//! and the ratio gridserve has to reach.

use serde::Serialize;

use super::parse::{BatchedRow, LlamaBenchFigures};
use crate::bench::engine::EngineBenchReport;
use crate::bench::http::{HttpBenchReport, LevelReport};

/// Prefill and batch-1 decode: one sequence leaves no room for batching to help, so matching
/// llama.cpp's kernels is the bar.
pub const TARGET_SINGLE_RATIO: f64 = 1.0;
/// Batched decode and HTTP serving: continuous batching and the scheduler are what gridserve
/// adds, so it has to beat llama.cpp there by a margin.
pub const TARGET_BATCHED_RATIO: f64 = 1.2;

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    pub figure: String,
    /// Which llama.cpp tool and figure the peer value is.
    pub peer_source: String,
    pub peer_tokens_per_s: Option<f64>,
    pub gridserve_tokens_per_s: Option<f64>,
    /// gridserve / llama.cpp.
    pub ratio: Option<f64>,
    pub target_ratio: f64,
    /// `None` when a value is missing or the row's requests did not all succeed.
    pub met: Option<bool>,
    pub note: Option<String>,
}

impl Figure {
    pub fn new(
        figure: impl Into<String>,
        peer_source: impl Into<String>,
        peer_tokens_per_s: Option<f64>,
        gridserve_tokens_per_s: Option<f64>,
        target_ratio: f64,
    ) -> Figure {
        let ratio = ratio(peer_tokens_per_s, gridserve_tokens_per_s);
        Figure {
            figure: figure.into(),
            peer_source: peer_source.into(),
            peer_tokens_per_s,
            gridserve_tokens_per_s,
            ratio,
            target_ratio,
            met: ratio.map(|r| r >= target_ratio),
            note: None,
        }
    }
}

/// gridserve / llama.cpp; `None` if either is missing or llama.cpp's is not a positive number.
pub fn ratio(peer_tokens_per_s: Option<f64>, gridserve_tokens_per_s: Option<f64>) -> Option<f64> {
    let (peer, ours) = (peer_tokens_per_s?, gridserve_tokens_per_s?);
    (peer.is_finite() && peer > 0.0 && ours.is_finite()).then(|| ours / peer)
}

/// Everything measured; a part that was skipped stays `None`.
#[derive(Debug, Default, Serialize)]
pub struct Measured {
    pub llama_bench: Option<LlamaBenchFigures>,
    pub engine: Option<EngineBenchReport>,
    pub batched: Option<Vec<BatchedRow>>,
    pub http_peer: Option<HttpBenchReport>,
    pub http_gridserve: Option<HttpBenchReport>,
}

/// The table's rows, in the issue's order, for the parts that ran.
pub fn figures(m: &Measured, batch_sizes: &[usize]) -> Vec<Figure> {
    let mut rows = Vec::new();
    let engine_decode = |batch: usize| {
        m.engine
            .as_ref()
            .and_then(|e| e.decode.iter().find(|d| d.batch == batch))
            .map(|d| d.tokens_per_s)
    };
    if let Some(lb) = &m.llama_bench {
        rows.push(Figure::new(
            format!("prefill, {}-token prompt", lb.prompt_tokens),
            format!("llama-bench pp{}", lb.prompt_tokens),
            Some(lb.prefill_tokens_per_s),
            m.engine.as_ref().map(|e| e.prefill_tokens_per_s),
            TARGET_SINGLE_RATIO,
        ));
        rows.push(Figure::new(
            "decode, batch 1",
            format!("llama-bench tg{}", lb.decode_tokens),
            Some(lb.decode_tokens_per_s),
            engine_decode(1),
            TARGET_SINGLE_RATIO,
        ));
    }
    if let Some(batched) = &m.batched {
        for &batch in batch_sizes {
            let peer = batched.iter().find(|r| r.batch == batch);
            rows.push(Figure::new(
                format!("aggregate decode, batch {batch}"),
                format!("llama-batched-bench S_TG, npl {batch}"),
                peer.map(|r| r.decode_tokens_per_s),
                engine_decode(batch),
                TARGET_BATCHED_RATIO,
            ));
        }
    }
    if let (Some(peer), Some(ours)) = (&m.http_peer, &m.http_gridserve) {
        for p in &peer.levels {
            let o = ours.levels.iter().find(|l| l.clients == p.clients);
            rows.push(http_figure(p, o));
        }
    }
    rows
}

/// One HTTP level. Failed requests make the throughput incomparable (the failures' tokens are
/// missing), so such a row is not judged.
fn http_figure(peer: &LevelReport, ours: Option<&LevelReport>) -> Figure {
    let clients = peer.clients;
    let plural = if clients == 1 { "" } else { "s" };
    let mut row = Figure::new(
        format!("HTTP, {clients} client{plural}"),
        "llama-server -np 16",
        Some(peer.tokens_per_s),
        ours.map(|o| o.tokens_per_s),
        TARGET_BATCHED_RATIO,
    );
    let ours_failed = ours.map_or(0, |o| o.requests_failed);
    if peer.requests_failed > 0 || ours_failed > 0 {
        row.met = None;
        row.note = Some(format!(
            "failed requests: llama.cpp {}, gridserve {ours_failed}",
            peer.requests_failed
        ));
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::engine::DecodeResult;
    use crate::bench::http::Percentiles;

    fn engine() -> EngineBenchReport {
        let decode = |batch, tokens_per_s| DecodeResult {
            batch,
            tokens_per_s,
            ms_per_step: 0.0,
            steps: 1,
            profile_ms_per_step: None,
        };
        EngineBenchReport {
            model: "m".into(),
            threads: 2,
            load_s: 1.0,
            prompt_tokens: 128,
            prefill_tokens_per_s: 600.0,
            prefill_profile_ms: None,
            decode: vec![decode(1, 40.0), decode(4, 130.0), decode(16, 250.0)],
        }
    }

    fn http(levels: &[(usize, f64, usize)]) -> HttpBenchReport {
        let none = Percentiles {
            p50: None,
            p99: None,
        };
        let level = |&(clients, tokens_per_s, requests_failed): &(usize, f64, usize)| LevelReport {
            clients,
            requests_ok: 1,
            requests_failed,
            generated_tokens: 64,
            wall_s: 1.0,
            tokens_per_s,
            requests_per_s: 1.0,
            ttft_ms: none,
            itl_ms: none,
            errors: Vec::new(),
        };
        HttpBenchReport {
            url: "u".into(),
            model: "m".into(),
            prompt_tokens_target: 64,
            prompt_tokens: Some(68),
            prompt_reps: 5,
            max_tokens: 64,
            requests_per_client: 2,
            levels: levels.iter().map(level).collect(),
        }
    }

    #[test]
    fn ratio_needs_both_values_and_a_positive_peer() {
        assert_eq!(ratio(Some(100.0), Some(120.0)), Some(1.2));
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
        assert_eq!(ratio(Some(0.0), Some(1.0)), None);
        assert_eq!(ratio(Some(f64::NAN), Some(1.0)), None);
    }

    #[test]
    fn a_target_is_met_at_or_above_its_ratio() {
        assert_eq!(
            Figure::new("f", "s", Some(100.0), Some(100.0), 1.0).met,
            Some(true)
        );
        assert_eq!(
            Figure::new("f", "s", Some(100.0), Some(119.0), 1.2).met,
            Some(false)
        );
        assert_eq!(
            Figure::new("f", "s", Some(100.0), Some(121.0), 1.2).met,
            Some(true)
        );
        assert_eq!(Figure::new("f", "s", Some(100.0), None, 1.2).met, None);
    }

    #[test]
    fn rows_follow_the_issue_and_pair_the_same_batch_and_clients() {
        let m = Measured {
            llama_bench: Some(LlamaBenchFigures {
                prompt_tokens: 128,
                prefill_tokens_per_s: 500.0,
                decode_tokens: 64,
                decode_tokens_per_s: 50.0,
            }),
            engine: Some(engine()),
            batched: Some(vec![BatchedRow {
                batch: 4,
                prompt_tokens: 128,
                decode_tokens: 64,
                prefill_tokens_per_s: 400.0,
                decode_tokens_per_s: 100.0,
            }]),
            http_peer: Some(http(&[(1, 50.0, 0), (4, 100.0, 1)])),
            http_gridserve: Some(http(&[(4, 130.0, 0), (1, 40.0, 0)])),
        };
        let rows = figures(&m, &[4, 8]);
        let names: Vec<&str> = rows.iter().map(|r| r.figure.as_str()).collect();
        assert_eq!(
            names,
            [
                "prefill, 128-token prompt",
                "decode, batch 1",
                "aggregate decode, batch 4",
                "aggregate decode, batch 8",
                "HTTP, 1 client",
                "HTTP, 4 clients"
            ]
        );
        assert_eq!((rows[0].ratio, rows[0].met), (Some(1.2), Some(true)));
        assert_eq!((rows[1].ratio, rows[1].met), (Some(0.8), Some(false)));
        assert_eq!((rows[2].ratio, rows[2].met), (Some(1.3), Some(true)));
        // No batch-8 figure on either side: shown, not judged.
        assert_eq!((rows[3].peer_tokens_per_s, rows[3].met), (None, None));
        assert_eq!((rows[4].ratio, rows[4].met), (Some(0.8), Some(false)));
        assert_eq!((rows[5].ratio, rows[5].met), (Some(1.3), None));
        assert!(rows[5].note.as_deref().unwrap().contains("llama.cpp 1"));
    }

    #[test]
    fn skipped_parts_leave_no_rows() {
        let m = Measured {
            engine: Some(engine()),
            ..Measured::default()
        };
        assert!(figures(&m, &[4]).is_empty());
    }
}
