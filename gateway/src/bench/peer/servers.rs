//! The HTTP half of the peer comparison: start `llama-server`, run the HTTP benchmark against
//! it, stop it; then the same against `gridserve serve`, sent the very same prompt text.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{command_line, free_port, ChildGuard};
use crate::bench::http::{self, HttpBenchArgs, HttpBenchReport};
use crate::GatewayError;

/// Prompt and output length of every HTTP request, in tokens (the "64 in, 64 out").
pub const HTTP_PROMPT_TOKENS: usize = 64;
pub const HTTP_MAX_TOKENS: usize = 64;
/// llama-server's slots: the issue's `-np 16`, or more if more clients are asked for.
const MIN_PEER_SLOTS: usize = 16;
/// Context per llama-server slot: prompt + output + room for the prompt to calibrate longer.
const PEER_CONTEXT_PER_SLOT: usize = HTTP_PROMPT_TOKENS + HTTP_MAX_TOKENS + 128;
/// Loading takes seconds; this much allows for cores shared with other work.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// What both servers are run with.
pub struct HttpPlan {
    pub llama_bin: PathBuf,
    pub config: PathBuf,
    pub model: PathBuf,
    pub threads: usize,
    pub clients: Vec<usize>,
    pub requests_per_client: usize,
    /// Logs go here.
    pub out: PathBuf,
}

pub struct HttpPair {
    pub peer: HttpBenchReport,
    pub gridserve: HttpBenchReport,
    pub peer_command: String,
}

/// llama-server first (its calibration fixes the prompt text), then gridserve; never both up.
pub fn run_pair(plan: &HttpPlan) -> Result<HttpPair, GatewayError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| GatewayError::Bench(format!("starting the async runtime: {e}")))?;
    runtime.block_on(async {
        let (peer_command, peer) = bench_llama_server(plan).await?;
        let gridserve = bench_gridserve(plan, peer.prompt_reps).await?;
        Ok(HttpPair {
            peer,
            gridserve,
            peer_command,
        })
    })
}

async fn bench_llama_server(plan: &HttpPlan) -> Result<(String, HttpBenchReport), GatewayError> {
    let port = free_port()?;
    let slots = plan
        .clients
        .iter()
        .copied()
        .fold(MIN_PEER_SLOTS, usize::max);
    let mut cmd = Command::new(plan.llama_bin.join("llama-server"));
    cmd.arg("-m").arg(&plan.model);
    cmd.args(["-t", &plan.threads.to_string(), "-np", &slots.to_string()]);
    cmd.args(["-c", &(slots * PEER_CONTEXT_PER_SLOT).to_string()]);
    cmd.args([
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--no-webui",
    ]);
    let line = command_line(&cmd);
    tracing::info!("peer: {line}");
    let mut server = spawn_server("llama-server", cmd, &plan.out)?;
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&mut server, &format!("{base}/health")).await?;
    let report = http::measure(&http_args(plan, base, None, None)).await;
    server.stop();
    Ok((line, report?))
}

/// `gridserve serve` from this very binary, on the same config, model and threads, with a grid
/// store of its own (a throwaway directory) and a fresh API key, so neither the repository's
/// data nor the configured keys get in the way.
async fn bench_gridserve(
    plan: &HttpPlan,
    prompt_reps: usize,
) -> Result<HttpBenchReport, GatewayError> {
    let port = free_port()?;
    let exe = std::env::current_exe()
        .map_err(|e| GatewayError::Bench(format!("locating the gridserve binary: {e}")))?;
    let data_dir = std::env::temp_dir().join(format!("gridserve-peer-{}", std::process::id()));
    let api_key = uuid::Uuid::new_v4().to_string();
    let mut cmd = Command::new(exe);
    cmd.arg("--config")
        .arg(&plan.config)
        .arg("--model")
        .arg(&plan.model);
    cmd.args([
        "--threads",
        &plan.threads.to_string(),
        "serve",
        "--host",
        "127.0.0.1",
    ]);
    cmd.args(["--port", &port.to_string()])
        .arg("--data-dir")
        .arg(&data_dir);
    cmd.env("GRIDSERVE_API_KEY", &api_key);
    // Its log is a file: no colour codes in it.
    cmd.env("NO_COLOR", "1");
    tracing::info!("peer: {}", command_line(&cmd));
    let mut server = spawn_server("gridserve serve", cmd, &plan.out)?;
    let base = format!("http://127.0.0.1:{port}");
    let result = async {
        wait_ready(&mut server, &format!("{base}/ready")).await?;
        http::measure(&http_args(plan, base, Some(prompt_reps), Some(api_key))).await
    }
    .await;
    server.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}

fn http_args(
    plan: &HttpPlan,
    url: String,
    prompt_reps: Option<usize>,
    api_key: Option<String>,
) -> HttpBenchArgs {
    HttpBenchArgs {
        url,
        clients: plan.clients.clone(),
        prompt_tokens: HTTP_PROMPT_TOKENS,
        max_tokens: HTTP_MAX_TOKENS,
        requests_per_client: plan.requests_per_client,
        prompt_reps,
        api_key,
        json: None,
    }
}

/// Starts a server with its output in `<out>/<name>.log`.
fn spawn_server(name: &str, mut cmd: Command, out: &Path) -> Result<ChildGuard, GatewayError> {
    let log = out.join(format!("{}.log", name.replace(' ', "-")));
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    ChildGuard::spawn(name, &mut cmd, Some(&log))
}

/// Polls `url` until it answers 2xx; fails early if the server exits.
async fn wait_ready(server: &mut ChildGuard, url: &str) -> Result<(), GatewayError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| GatewayError::Bench(format!("http client: {e}")))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = server.exited()? {
            return Err(server.failure(format!("exited ({status}) before it was ready")));
        }
        if let Ok(resp) = client.get(url).send().await {
            if resp.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            let secs = READY_TIMEOUT.as_secs();
            return Err(server.failure(format!("was not ready at {url} after {secs} s")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
