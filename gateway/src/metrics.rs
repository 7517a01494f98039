//! Metric names, descriptions and histogram buckets, and the Prometheus recorder. Names follow
//! vLLM's so existing dashboards work; gridserve's own live under `gridserve_`. Base units,
//! `_total` only on counters.

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const NUM_REQUESTS_RUNNING: &str = "vllm:num_requests_running";
pub const NUM_REQUESTS_WAITING: &str = "vllm:num_requests_waiting";
pub const KV_CACHE_USAGE: &str = "vllm:kv_cache_usage_perc";
pub const PROMPT_TOKENS: &str = "vllm:prompt_tokens_total";
pub const GENERATION_TOKENS: &str = "vllm:generation_tokens_total";
pub const REQUEST_SUCCESS: &str = "vllm:request_success_total";
pub const NUM_PREEMPTIONS: &str = "vllm:num_preemptions_total";
pub const TIME_TO_FIRST_TOKEN: &str = "vllm:time_to_first_token_seconds";
pub const INTER_TOKEN_LATENCY: &str = "vllm:inter_token_latency_seconds";
pub const E2E_REQUEST_LATENCY: &str = "vllm:e2e_request_latency_seconds";
pub const REQUEST_QUEUE_TIME: &str = "vllm:request_queue_time_seconds";
pub const STEP_DURATION: &str = "gridserve_step_duration_seconds";
pub const STEP_BATCH_SIZE: &str = "gridserve_step_batch_size";
pub const STEP_TOKENS: &str = "gridserve_step_tokens";
pub const ADMISSION_REJECTIONS: &str = "gridserve_admission_rejections_total";
pub const HTTP_REQUESTS: &str = "gridserve_http_requests_total";
pub const ENERGY_TOTAL: &str = "gridserve_energy_joules_total";
pub const OUTPUT_TOKENS_PER_JOULE: &str = "gridserve_output_tokens_per_joule";
pub const REQUEST_ENERGY: &str = "gridserve_request_energy_joules";
pub const TIER_GOODPUT_TOKENS: &str = "gridserve_tier_goodput_tokens_total";
pub const TIER_COMPLETED: &str = "gridserve_tier_requests_completed_total";
pub const TIER_DEFERRED: &str = "gridserve_tier_requests_deferred";
pub const TIER_REJECTIONS: &str = "gridserve_tier_rejections_total";
pub const POWER_WATTS: &str = "gridserve_power_watts";
pub const SM_CLOCK_HERTZ: &str = "gridserve_sm_clock_hertz";
pub const POWER_LIMIT_WATTS: &str = "gridserve_power_limit_watts";
pub const GRID_CAP_WATTS: &str = "gridserve_grid_cap_watts";
pub const OPENADR_LINK_UP: &str = "gridserve_openadr_link_up";
pub const OPENADR_POLLS: &str = "gridserve_openadr_polls_total";
pub const OPENADR_EVENTS: &str = "gridserve_openadr_events";
pub const OPENADR_REPORTS: &str = "gridserve_openadr_reports_total";
pub const OPENADR_SAFE_LIMIT: &str = "gridserve_openadr_safe_limit_engaged";

// vLLM's bucket boundaries (vllm/v1/metrics/loggers.py), so histograms line up.
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
const REQUEST_LATENCY_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
const STEP_DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const REQUEST_ENERGY_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
];
const STEP_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
];

/// Installs the process-wide Prometheus recorder once and returns its handle (tests start
/// several servers in one process; they share it).
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let buckets = [
                (TIME_TO_FIRST_TOKEN, TTFT_BUCKETS),
                (INTER_TOKEN_LATENCY, ITL_BUCKETS),
                (E2E_REQUEST_LATENCY, REQUEST_LATENCY_BUCKETS),
                (REQUEST_QUEUE_TIME, REQUEST_LATENCY_BUCKETS),
                (STEP_DURATION, STEP_DURATION_BUCKETS),
                (STEP_BATCH_SIZE, STEP_SIZE_BUCKETS),
                (STEP_TOKENS, STEP_SIZE_BUCKETS),
                (REQUEST_ENERGY, REQUEST_ENERGY_BUCKETS),
            ];
            let builder = buckets.iter().fold(builder, |b, (name, values)| {
                b.set_buckets_for_metric(Matcher::Full((*name).to_string()), values)
                    .expect("bucket lists are non-empty constants")
            });
            let handle = builder
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe();
            handle
        })
        .clone()
}

fn describe() {
    // Per engine (`engine` label: 0, 1, … — one engine per GPU), as vLLM's data parallel.
    describe_gauge!(
        NUM_REQUESTS_RUNNING,
        "Requests in the running batch, per engine."
    );
    describe_gauge!(
        NUM_REQUESTS_WAITING,
        "Requests waiting to be scheduled, per engine."
    );
    describe_gauge!(
        KV_CACHE_USAGE,
        "Fraction of KV-cache blocks in use (0 to 1), per engine."
    );
    describe_counter!(
        PROMPT_TOKENS,
        Unit::Count,
        "Prompt tokens of finished requests."
    );
    describe_counter!(GENERATION_TOKENS, Unit::Count, "Generated tokens.");
    describe_counter!(
        REQUEST_SUCCESS,
        Unit::Count,
        "Finished requests, by finished_reason."
    );
    describe_counter!(
        NUM_PREEMPTIONS,
        Unit::Count,
        "Sequences preempted for lack of KV blocks."
    );
    describe_histogram!(
        TIME_TO_FIRST_TOKEN,
        Unit::Seconds,
        "Arrival to first generated token."
    );
    describe_histogram!(
        INTER_TOKEN_LATENCY,
        Unit::Seconds,
        "Time between consecutive generated tokens."
    );
    describe_histogram!(E2E_REQUEST_LATENCY, Unit::Seconds, "Arrival to last token.");
    describe_histogram!(
        REQUEST_QUEUE_TIME,
        Unit::Seconds,
        "Arrival to first scheduled step."
    );
    describe_histogram!(STEP_DURATION, Unit::Seconds, "Duration of one engine step.");
    describe_histogram!(
        STEP_BATCH_SIZE,
        Unit::Count,
        "Sequences in one engine step."
    );
    describe_histogram!(
        STEP_TOKENS,
        Unit::Count,
        "Tokens processed in one engine step."
    );
    describe_counter!(
        ADMISSION_REJECTIONS,
        Unit::Count,
        "Requests refused at admission, by reason."
    );
    describe_counter!(
        ENERGY_TOTAL,
        Unit::Count,
        "Joules used by engine steps, by source (nvml, rapl, estimate, twin)."
    );
    describe_gauge!(
        OUTPUT_TOKENS_PER_JOULE,
        "Generated tokens per joule over the last 10 s of steps."
    );
    describe_histogram!(
        REQUEST_ENERGY,
        Unit::Count,
        "Joules per finished request (its share of each step it was in)."
    );
    describe_gauge!(
        POWER_WATTS,
        "Power per device as its sensor reports it (NVML: ~1 s average), by source."
    );
    describe_counter!(
        TIER_GOODPUT_TOKENS,
        Unit::Count,
        "Generated tokens of requests that completed, by priority tier."
    );
    describe_counter!(
        TIER_COMPLETED,
        Unit::Count,
        "Requests that completed, by priority tier."
    );
    describe_gauge!(
        TIER_DEFERRED,
        "Queued requests the power controller holds back, by priority tier and engine."
    );
    describe_counter!(
        TIER_REJECTIONS,
        Unit::Count,
        "Requests refused for power reasons, by priority tier and reason."
    );
    describe_gauge!(SM_CLOCK_HERTZ, "Current SM clock per GPU.");
    describe_gauge!(POWER_LIMIT_WATTS, "Enforced power limit per GPU.");
    describe_gauge!(
        GRID_CAP_WATTS,
        "The grid cap the controller follows now (absent while unbounded)."
    );
    describe_gauge!(
        OPENADR_LINK_UP,
        "1 while the last poll of the OpenADR VTN succeeded, else 0."
    );
    describe_counter!(
        OPENADR_POLLS,
        Unit::Count,
        "Polls of the OpenADR VTN, by result (ok, error)."
    );
    describe_gauge!(
        OPENADR_EVENTS,
        "OpenADR events seen at the last poll, by state (followed, refused)."
    );
    describe_counter!(
        OPENADR_REPORTS,
        Unit::Count,
        "Reports sent to the OpenADR VTN, by result (ok, error)."
    );
    describe_gauge!(
        OPENADR_SAFE_LIMIT,
        "1 while the comms-loss safe limit is in the envelope store, else 0."
    );
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "HTTP requests, by route and status."
    );
}
