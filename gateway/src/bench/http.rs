//! `gridserve bench http`: a load generator for a running server. At each concurrency level,
//! that many clients each stream `/v1/completions` requests back to back; reported per level are
//! the aggregate generation throughput, time to first token and inter-token latency (p50/p99).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};

use super::sse::{parse_chunk, truncate, SseParser};
use crate::GatewayError;

#[derive(Args, Debug, Clone)]
pub struct HttpBenchArgs {
    /// The server's base URL, e.g. http://127.0.0.1:8000 (a trailing /v1 is accepted).
    #[arg(long)]
    pub url: String,
    /// Concurrency levels: how many clients send requests at the same time.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16")]
    pub clients: Vec<usize>,
    /// Approximate prompt length in tokens (the actual figure, from the server's usage, is
    /// reported).
    #[arg(long, default_value_t = 64)]
    pub prompt_tokens: usize,
    /// Tokens generated per request (end of sequence is ignored, so each request makes exactly
    /// this many).
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Requests each client sends, one after the other.
    #[arg(long, default_value_t = 4)]
    pub requests_per_client: usize,
    /// Sentence copies per prompt, instead of calibrating against the server's tokenizer (so
    /// two servers can be sent the very same text; the report gives the figure used).
    #[arg(long)]
    pub prompt_reps: Option<usize>,
    /// Sent as `Authorization: Bearer KEY` (a server started with GRIDSERVE_API_KEY, or with
    /// `server.api_key_sha256` set, refuses requests without one).
    #[arg(long, env = "GRIDSERVE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// p50 and p99 of a set of samples, in milliseconds (`None` without samples).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

impl Percentiles {
    fn of(mut samples: Vec<f64>) -> Percentiles {
        samples.sort_by(f64::total_cmp);
        Percentiles {
            p50: percentile(&samples, 50.0),
            p99: percentile(&samples, 99.0),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LevelReport {
    /// Concurrent clients.
    pub clients: usize,
    pub requests_ok: usize,
    pub requests_failed: usize,
    /// Completion tokens over all successful requests (from the servers' usage figures).
    pub generated_tokens: usize,
    /// Wall time from the first request's start to the last one's end.
    pub wall_s: f64,
    /// `generated_tokens / wall_s`.
    pub tokens_per_s: f64,
    pub requests_per_s: f64,
    /// Request start → first chunk with content.
    pub ttft_ms: Percentiles,
    /// Between consecutive chunks with content, over all requests.
    pub itl_ms: Percentiles,
    /// The first few failures' messages.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpBenchReport {
    pub url: String,
    pub model: String,
    /// The requested (approximate) prompt length.
    pub prompt_tokens_target: usize,
    /// The prompt length the server reported for the first request.
    pub prompt_tokens: Option<usize>,
    /// Sentence copies in each prompt (calibrated, or `--prompt-reps`).
    pub prompt_reps: usize,
    pub max_tokens: usize,
    pub requests_per_client: usize,
    pub levels: Vec<LevelReport>,
}

/// Runs the benchmark against a running server, prints a table and returns the report (also
/// written to `--json` if given).
pub async fn run(args: &HttpBenchArgs) -> Result<HttpBenchReport, GatewayError> {
    let report = measure(args).await?;
    print_report(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| GatewayError::Bench(e.to_string()))?;
        std::fs::write(path, text)
            .map_err(|e| GatewayError::Bench(format!("writing {}: {e}", path.display())))?;
    }
    Ok(report)
}

/// Runs the benchmark against a running server and returns the report without printing.
pub async fn measure(args: &HttpBenchArgs) -> Result<HttpBenchReport, GatewayError> {
    if args.clients.is_empty()
        || args.clients.contains(&0)
        || args.prompt_tokens == 0
        || args.max_tokens == 0
        || args.requests_per_client == 0
        || args.prompt_reps == Some(0)
    {
        return Err(GatewayError::InvalidRequest {
            param: "bench",
            message: "need --clients >= 1 each, --prompt-tokens >= 1, --max-tokens >= 1, \
                      --requests-per-client >= 1, --prompt-reps >= 1"
                .into(),
        });
    }
    let base = base_url(&args.url);
    let client = reqwest::Client::builder()
        .default_headers(auth_headers(args.api_key.as_deref())?)
        // A fresh connection per request: llama-server closes some idle keep-alive connections
        // just as they are reused ("connection closed before message completed"), which would
        // count as failures that are the client's doing. On loopback a connect costs well under
        // a millisecond, next to seconds per request.
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(300))
        .build()
        .map_err(|e| GatewayError::Bench(format!("http client: {e}")))?;
    let model = first_model(&client, &base).await?;
    let target = Target {
        client,
        url: format!("{base}/v1/completions"),
        model: model.clone(),
        max_tokens: args.max_tokens,
    };

    tracing::info!("bench: calibrating the prompt length and warming up against {base}");
    let reps = match args.prompt_reps {
        Some(reps) => reps,
        None => calibrate(&target, args.prompt_tokens).await?,
    };
    let warm = one_request(&target, &prompt(0, 0, 0, reps), args.max_tokens)
        .await
        .map_err(|e| GatewayError::Bench(format!("warm-up request failed: {e}")))?;

    let mut levels = Vec::new();
    let mut prompt_tokens = None;
    for (level, &clients) in args.clients.iter().enumerate() {
        tracing::info!(
            "bench: {clients} client(s) x {} request(s)",
            args.requests_per_client
        );
        let (report, first_prompt_tokens) =
            run_level(&target, level + 1, clients, args.requests_per_client, reps).await?;
        prompt_tokens = prompt_tokens.or(first_prompt_tokens);
        levels.push(report);
    }
    Ok(HttpBenchReport {
        url: base,
        model,
        prompt_tokens_target: args.prompt_tokens,
        prompt_tokens: prompt_tokens.or(warm.prompt_tokens),
        prompt_reps: reps,
        max_tokens: args.max_tokens,
        requests_per_client: args.requests_per_client,
        levels,
    })
}

/// `Authorization: Bearer KEY` on every request when a key is given.
pub(crate) fn auth_headers(
    api_key: Option<&str>,
) -> Result<reqwest::header::HeaderMap, GatewayError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = api_key.filter(|k| !k.is_empty()) {
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| GatewayError::Bench("the API key is not a valid header value".into()))?;
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(headers)
}

/// `http://host:port` from what the user gave (trailing `/` and `/v1` dropped).
pub(crate) fn base_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    url.strip_suffix("/v1").unwrap_or(url).to_string()
}

/// What every request goes to.
#[derive(Clone)]
struct Target {
    client: reqwest::Client,
    url: String,
    model: String,
    max_tokens: usize,
}

pub(crate) async fn first_model(
    client: &reqwest::Client,
    base: &str,
) -> Result<String, GatewayError> {
    let url = format!("{base}/v1/models");
    let fail = |e: String| GatewayError::Bench(format!("GET {url}: {e}"));
    let resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(fail(format!("HTTP {status}")));
    }
    let body: Value = resp.json().await.map_err(|e| fail(e.to_string()))?;
    body["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| fail(format!("no model listed in {body}")))
}

const SENTENCE: &str = "The grid operator balances supply and demand across the region.";

/// A prompt of a unique fixed-width tag (so requests share no prefix, and all tokenize to the
/// same length) and `reps` copies of the sentence.
fn prompt(level: usize, client: usize, request: usize, reps: usize) -> String {
    let mut text = format!("Request {level:03}{client:03}{request:03}.");
    for _ in 0..reps {
        text.push(' ');
        text.push_str(SENTENCE);
    }
    text
}

/// How many sentence copies make a prompt of about `target` tokens: measured from the prompt
/// lengths the server reports for two one-token requests.
async fn calibrate(target: &Target, tokens: usize) -> Result<usize, GatewayError> {
    let measure = |reps: usize| async move {
        let stats = one_request(target, &prompt(0, 0, 0, reps), 1)
            .await
            .map_err(|e| GatewayError::Bench(format!("calibration request failed: {e}")))?;
        stats.prompt_tokens.ok_or_else(|| {
            GatewayError::Bench("the server sent no usage (stream_options.include_usage)".into())
        })
    };
    let a = tokens.div_ceil(12).max(1);
    let (pa, p2a) = (measure(a).await?, measure(2 * a).await?);
    Ok(reps_for(tokens, a, pa, p2a))
}

/// Copies for `target` tokens, given `a` copies gave `pa` tokens and `2a` gave `p2a`.
fn reps_for(target: usize, a: usize, pa: usize, p2a: usize) -> usize {
    let per_rep = (p2a.saturating_sub(pa) as f64 / a as f64).max(1.0);
    let overhead = pa as f64 - a as f64 * per_rep;
    ((target as f64 - overhead) / per_rep).round().max(1.0) as usize
}

/// One concurrency level; also the first successful request's prompt length.
async fn run_level(
    target: &Target,
    level: usize,
    clients: usize,
    requests: usize,
    reps: usize,
) -> Result<(LevelReport, Option<usize>), GatewayError> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let target = target.clone();
        tasks.spawn(async move {
            let mut results = Vec::with_capacity(requests);
            for request in 0..requests {
                let text = prompt(level, client, request, reps);
                results.push(one_request(&target, &text, target.max_tokens).await);
            }
            (client, results)
        });
    }
    let mut per_client = Vec::with_capacity(clients);
    while let Some(joined) = tasks.join_next().await {
        per_client.push(joined.map_err(|e| GatewayError::Bench(format!("client task: {e}")))?);
    }
    let wall = start.elapsed().as_secs_f64().max(f64::MIN_POSITIVE);
    per_client.sort_by_key(|(client, _)| *client);

    let (mut ok, mut failed, mut generated) = (0, 0, 0);
    let (mut ttft, mut itl, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    let mut prompt_tokens = None;
    for result in per_client.into_iter().flat_map(|(_, results)| results) {
        match result {
            Ok(stats) => {
                ok += 1;
                generated += stats.completion_tokens;
                prompt_tokens = prompt_tokens.or(stats.prompt_tokens);
                ttft.push(ms(stats.ttft));
                itl.extend(stats.itl.into_iter().map(ms));
            }
            Err(e) => {
                failed += 1;
                if errors.len() < 5 {
                    errors.push(e);
                }
            }
        }
    }
    let report = LevelReport {
        clients,
        requests_ok: ok,
        requests_failed: failed,
        generated_tokens: generated,
        wall_s: wall,
        tokens_per_s: generated as f64 / wall,
        requests_per_s: ok as f64 / wall,
        ttft_ms: Percentiles::of(ttft),
        itl_ms: Percentiles::of(itl),
        errors,
    };
    Ok((report, prompt_tokens))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// An error with its causes: reqwest's own message ("error sending request") says little; the
/// cause (connection reset, closed before the response…) tells a client fault from a server one.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Timings of one successful streamed request.
#[derive(Debug)]
struct RequestStats {
    ttft: Duration,
    itl: Vec<Duration>,
    completion_tokens: usize,
    prompt_tokens: Option<usize>,
}

/// Streams one greedy completion; `Err` describes why it failed.
async fn one_request(
    target: &Target,
    prompt: &str,
    max_tokens: usize,
) -> Result<RequestStats, String> {
    let body = json!({
        "model": target.model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": true,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let start = Instant::now();
    let resp = target
        .client
        .post(&target.url)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("request: {}", error_chain(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(format!("HTTP {status}: {}", truncate(&text, 300)));
    }
    let mut stream = resp.bytes_stream();
    let mut parser = SseParser::default();
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    let mut itl = Vec::new();
    let (mut chunks, mut usage) = (0usize, None::<(Option<usize>, usize)>);
    let mut done = false;
    'read: while let Some(bytes) = stream.next().await {
        let bytes = bytes.map_err(|e| format!("reading the stream: {}", error_chain(&e)))?;
        let now = Instant::now();
        for data in parser.push(&bytes) {
            let Some(chunk) = parse_chunk(&data)? else {
                done = true;
                break 'read;
            };
            if chunk.content {
                chunks += 1;
                first.get_or_insert(now);
                if let Some(prev) = last {
                    itl.push(now - prev);
                }
                last = Some(now);
            }
            if let Some(completion) = chunk.completion_tokens {
                usage = Some((chunk.prompt_tokens, completion));
            }
        }
    }
    if !done && parser.finish().as_deref() == Some("[DONE]") {
        done = true;
    }
    if !done {
        return Err("the stream ended without data: [DONE]".into());
    }
    let first = first.ok_or("the stream carried no text")?;
    let (prompt_tokens, completion_tokens) = usage.unwrap_or((None, chunks));
    Ok(RequestStats {
        ttft: first - start,
        itl,
        completion_tokens,
        prompt_tokens,
    })
}

/// Nearest-rank percentile `p` (0–100] of ascending `sorted` samples.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn print_report(r: &HttpBenchReport) {
    let actual = r
        .prompt_tokens
        .map_or_else(|| "unknown".to_string(), |n| n.to_string());
    println!(
        "{} | model {} | prompt {} tokens (asked ~{}) | max_tokens {} | {} requests/client",
        r.url, r.model, actual, r.prompt_tokens_target, r.max_tokens, r.requests_per_client
    );
    println!(
        "{:>7} {:>5} {:>5} {:>10} {:>8} {:>10} {:>10} {:>9} {:>9}",
        "clients", "ok", "fail", "tok/s", "req/s", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99"
    );
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    for l in &r.levels {
        println!(
            "{:>7} {:>5} {:>5} {:>10.1} {:>8.2} {:>10} {:>10} {:>9} {:>9}",
            l.clients,
            l.requests_ok,
            l.requests_failed,
            l.tokens_per_s,
            l.requests_per_s,
            cell(l.ttft_ms.p50),
            cell(l.ttft_ms.p99),
            cell(l.itl_ms.p50),
            cell(l.itl_ms.p99),
        );
    }
    println!("(latencies in ms)");
    for l in r.levels.iter().filter(|l| !l.errors.is_empty()) {
        println!("errors at {} clients:", l.clients);
        for e in &l.errors {
            println!("  {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 50.0), Some(7.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 99.0), Some(4.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 0.0), Some(1.0));
    }

    #[test]
    fn percentiles_sort_their_samples() {
        let p = Percentiles::of(vec![3.0, 1.0, 2.0]);
        assert_eq!(
            p,
            Percentiles {
                p50: Some(2.0),
                p99: Some(3.0)
            }
        );
        let none = Percentiles::of(Vec::new());
        assert_eq!((none.p50, none.p99), (None, None));
    }

    #[test]
    fn urls_and_prompts() {
        assert_eq!(base_url("http://h:1/"), "http://h:1");
        assert_eq!(base_url("http://h:1/v1/"), "http://h:1");
        assert_eq!(base_url(" http://h:1 "), "http://h:1");
        let (a, b) = (prompt(1, 2, 3, 2), prompt(16, 15, 3, 2));
        assert!(a.starts_with("Request 001002003."));
        assert_eq!(a.len(), b.len());
        assert_ne!(a, b);
        assert_eq!(a.matches(SENTENCE).count(), 2);
    }

    #[test]
    fn calibration_solves_for_the_repetitions() {
        // 5 tokens of overhead, 12 per sentence.
        assert_eq!(reps_for(64, 6, 5 + 72, 5 + 144), 5);
        assert_eq!(reps_for(1, 1, 17, 29), 1);
        assert_eq!(reps_for(512, 43, 5 + 43 * 12, 5 + 86 * 12), 42);
    }

    #[test]
    fn api_key_becomes_a_bearer_header() {
        assert!(auth_headers(None).unwrap().is_empty());
        assert!(auth_headers(Some("")).unwrap().is_empty());
        let h = auth_headers(Some("k1")).unwrap();
        assert_eq!(h[reqwest::header::AUTHORIZATION], "Bearer k1");
        assert!(auth_headers(Some("bad\nkey")).is_err());
    }
}
