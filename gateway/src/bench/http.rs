//! `gridserve bench http`: a load generator for a running server. At each concurrency level,
//! that many clients each stream `/v1/completions` requests back to back; reported per level are
//! the aggregate generation throughput, time to first token and inter-token latency (p50/p99).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};

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
    pub max_tokens: usize,
    pub requests_per_client: usize,
    pub levels: Vec<LevelReport>,
}

/// Runs the benchmark against a running server, prints a table and returns the report (also
/// written to `--json` if given).
pub async fn run(args: &HttpBenchArgs) -> Result<HttpBenchReport, GatewayError> {
    if args.clients.is_empty()
        || args.clients.contains(&0)
        || args.prompt_tokens == 0
        || args.max_tokens == 0
        || args.requests_per_client == 0
    {
        return Err(GatewayError::InvalidRequest {
            param: "bench",
            message: "need --clients >= 1 each, --prompt-tokens >= 1, --max-tokens >= 1, \
                      --requests-per-client >= 1"
                .into(),
        });
    }
    let base = base_url(&args.url);
    let client = reqwest::Client::builder()
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
    let reps = calibrate(&target, args.prompt_tokens).await?;
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
    let report = HttpBenchReport {
        url: base,
        model,
        prompt_tokens_target: args.prompt_tokens,
        prompt_tokens: prompt_tokens.or(warm.prompt_tokens),
        max_tokens: args.max_tokens,
        requests_per_client: args.requests_per_client,
        levels,
    };
    print_report(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| GatewayError::Bench(e.to_string()))?;
        std::fs::write(path, text)
            .map_err(|e| GatewayError::Bench(format!("writing {}: {e}", path.display())))?;
    }
    Ok(report)
}

/// `http://host:port` from what the user gave (trailing `/` and `/v1` dropped).
fn base_url(url: &str) -> String {
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

async fn first_model(client: &reqwest::Client, base: &str) -> Result<String, GatewayError> {
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
        .map_err(|e| format!("request: {e}"))?;
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
        let bytes = bytes.map_err(|e| format!("reading the stream: {e}"))?;
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

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// What the benchmark needs from one streamed completion chunk.
#[derive(Debug, Default, PartialEq)]
struct ChunkInfo {
    /// A choice carries non-empty text.
    content: bool,
    prompt_tokens: Option<usize>,
    completion_tokens: Option<usize>,
}

/// Parses one SSE `data` payload of a streamed completion: `None` for `[DONE]`, `Err` for an
/// error event or malformed JSON.
fn parse_chunk(data: &str) -> Result<Option<ChunkInfo>, String> {
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(data)
        .map_err(|e| format!("bad chunk {:?}: {e}", truncate(data, 200)))?;
    if let Some(err) = v.get("error") {
        let message = err["message"]
            .as_str()
            .map_or_else(|| err.to_string(), str::to_string);
        return Err(format!("error event: {}", truncate(&message, 300)));
    }
    let content = v["choices"].as_array().is_some_and(|choices| {
        choices.iter().any(|c| {
            c["text"]
                .as_str()
                .or_else(|| c["delta"]["content"].as_str())
                .is_some_and(|t| !t.is_empty())
        })
    });
    let count = |key: &str| v["usage"][key].as_u64().map(|n| n as usize);
    Ok(Some(ChunkInfo {
        content,
        prompt_tokens: count("prompt_tokens"),
        completion_tokens: count("completion_tokens"),
    }))
}

/// An incremental server-sent-events parser that yields each event's `data` (multi-line data
/// joined with `\n`); comments and other fields are skipped.
#[derive(Debug, Default)]
struct SseParser {
    buf: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds received bytes; returns the data of every event they complete.
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(len) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let mut line = &self.buf[start..start + len];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            let line = String::from_utf8_lossy(line).into_owned();
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
            start += len + 1;
        }
        self.buf.drain(..start);
        events
    }

    /// At the end of the stream: the last event's data if no blank line followed it.
    fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let line = String::from_utf8_lossy(&rest).into_owned();
        let line = line.trim_end_matches('\r');
        if !line.is_empty() {
            let _ = self.line(line);
        }
        self.data.take()
    }

    fn line(&mut self, line: &str) -> Option<String> {
        if line.is_empty() {
            return self.data.take();
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            }
        }
        None
    }
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
    fn sse_events_split_across_reads() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: {\"a\"").is_empty());
        assert!(p.push(b":1}\n").is_empty());
        assert_eq!(p.push(b"\ndata: [DONE]\n\n"), vec!["{\"a\":1}", "[DONE]"]);
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn sse_handles_crlf_comments_fields_and_multiline_data() {
        let mut p = SseParser::default();
        let events = p.push(
            b": keep-alive\r\n\r\nevent: message\r\nid: 3\r\ndata: one\r\ndata:two\r\n\r\ndata: x\n",
        );
        assert_eq!(events, vec!["one\ntwo"]);
        // A final event without the blank line after it.
        assert_eq!(p.finish().as_deref(), Some("x"));
        let mut p = SseParser::default();
        assert!(p.push(b"data: [DONE]").is_empty());
        assert_eq!(p.finish().as_deref(), Some("[DONE]"));
    }

    #[test]
    fn chunks_are_read_for_content_usage_and_errors() {
        assert_eq!(parse_chunk(" [DONE] "), Ok(None));
        let text = r#"{"object":"text_completion","choices":[{"index":0,"text":" Paris","finish_reason":null}]}"#;
        assert_eq!(
            parse_chunk(text),
            Ok(Some(ChunkInfo {
                content: true,
                ..ChunkInfo::default()
            }))
        );
        let empty = r#"{"choices":[{"index":0,"text":"","finish_reason":"length"}]}"#;
        assert_eq!(parse_chunk(empty), Ok(Some(ChunkInfo::default())));
        let chat = r#"{"choices":[{"index":0,"delta":{"content":"hi"}}]}"#;
        assert!(parse_chunk(chat).unwrap().unwrap().content);
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":65,"completion_tokens":64,"total_tokens":129}}"#;
        assert_eq!(
            parse_chunk(usage),
            Ok(Some(ChunkInfo {
                content: false,
                prompt_tokens: Some(65),
                completion_tokens: Some(64)
            }))
        );
        let usage_null = r#"{"choices":[{"text":"a"}],"usage":null}"#;
        assert_eq!(
            parse_chunk(usage_null).unwrap().unwrap().completion_tokens,
            None
        );
        let err = parse_chunk(r#"{"error":{"message":"boom","type":"server_error"}}"#);
        assert!(err.unwrap_err().contains("boom"));
        assert!(parse_chunk("{not json").is_err());
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
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("hi", 10), "hi");
    }
}
