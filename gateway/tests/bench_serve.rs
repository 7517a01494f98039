//! `bench serve` and `bench sweep` against a scripted OpenAI-compatible server: the figures on
//! known timings, energy from each source, 429s counted as failures with their reason, the JSON
//! result and plots, and an envelope scenario's posts, compliance and clean-up.

mod fake_openai;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use fake_openai::{FakeServer, Script, OPERATOR_TOKEN};
use gridserve::bench::serve::run::{run, RunContext};
use gridserve::bench::serve::stats::Metric;
use gridserve::bench::serve::{BenchServeArgs, RunResult};
use gridserve::config::Config;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BenchServeArgs,
}

fn ctx() -> RunContext {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = Config::load(&root.join("config/default.toml")).unwrap();
    RunContext {
        default_tokenizer: root.join("models-data/missing.gguf"),
        local_power: config.power,
    }
}

/// A custom dataset of `n` prompts asking for `tokens` tokens each.
fn dataset(dir: &Path, n: usize, tokens: usize) -> PathBuf {
    let path = dir.join("prompts.jsonl");
    let rows: Vec<String> = (0..n)
        .map(|i| format!("{{\"prompt\": \"prompt {i}\", \"output_tokens\": {tokens}}}"))
        .collect();
    std::fs::write(&path, rows.join("\n")).unwrap();
    path
}

fn args(base: &str, data: &Path, extra: &[&str]) -> BenchServeArgs {
    let mut argv = vec![
        "bench".to_string(),
        "--base-url".into(),
        base.into(),
        "--dataset-path".into(),
        data.display().to_string(),
        "--disable-tqdm".into(),
    ];
    if !extra.contains(&"--dataset-name") {
        argv.extend(["--dataset-name".into(), "custom".into()]);
    }
    argv.extend(extra.iter().map(|s| s.to_string()));
    Cli::try_parse_from(argv).expect("options parse").args
}

async fn bench(
    server: &FakeServer,
    n: usize,
    tokens: usize,
    extra: &[&str],
) -> (RunResult, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), n, tokens);
    let n = n.to_string();
    let mut all = vec!["--num-prompts", n.as_str()];
    all.extend_from_slice(extra);
    let result = run(&args(&server.base, &data, &all), &ctx())
        .await
        .expect("bench runs");
    (result, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timings_failures_and_usage_energy() {
    let server = FakeServer::start(Script {
        reject_every: Some(4),
        ..Script::default()
    })
    .await;
    // 9 requests reach the server (the test request first): the 4th and 8th are refused.
    let (r, _dir) = bench(
        &server,
        8,
        10,
        &["--max-concurrency", "2", "--metric-percentiles", "50,99"],
    )
    .await;
    let s = &r.summary;
    assert_eq!((s.completed, s.failed), (6, 2));
    let errors: Vec<&str> = r
        .outcomes
        .iter()
        .filter_map(|o| o.error.as_deref())
        .collect();
    assert_eq!(errors.len(), 2);
    for e in &errors {
        assert!(
            e.contains("429") && e.contains("the waiting queue is full"),
            "{e}"
        );
    }
    assert!(r
        .outcomes
        .iter()
        .filter(|o| !o.success)
        .all(|o| o.status == Some(429)));
    assert_eq!((s.total_input_tokens, s.total_output_tokens), (30, 60));
    // TTFT ≈ 60 ms, each later token 15 ms: scheduling adds, never subtracts.
    let ttft = s.metric(Metric::Ttft).unwrap();
    assert!(ttft.median_ms >= 60.0 && ttft.median_ms < 400.0, "{ttft:?}");
    let tpot = s.metric(Metric::Tpot).unwrap();
    assert!(tpot.median_ms >= 14.0 && tpot.median_ms < 100.0, "{tpot:?}");
    let itl = s.metric(Metric::Itl).unwrap();
    assert!(itl.median_ms >= 10.0 && itl.median_ms < 100.0, "{itl:?}");
    assert!(s.max_concurrent_requests <= 2);
    // Energy: 0.5 J per token in the usage chunks → 30 J, 2 tokens per joule.
    assert_eq!(r.energy.source, "usage");
    assert!((r.energy.total_joules.unwrap() - 30.0).abs() < 1e-9);
    assert!((r.energy.output_tokens_per_joule.unwrap() - 2.0).abs() < 1e-9);
    assert!((r.energy.counter_joules.unwrap() - 30.0).abs() < 1e-9);
    let text = gridserve::bench::serve::result::render(&r);
    assert!(
        text.contains("Failed requests:                         2"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn energy_from_the_gridserve_counter_and_from_dcgm() {
    let server = FakeServer::start(Script {
        usage_joules_per_token: None,
        ..Script::default()
    })
    .await;
    // No energy in usage: auto falls back to the server's Prometheus counter.
    let (r, _d) = bench(&server, 4, 8, &[]).await;
    assert_eq!(r.energy.source, "prometheus:gridserve");
    assert!((r.energy.total_joules.unwrap() - 16.0).abs() < 1e-9);
    assert_eq!(r.energy.usage_joules, None);
    // A DCGM exporter (millijoules; it also counts what the requests did not use: 2×).
    let dcgm = format!("{}/dcgm/metrics", server.base);
    let (r, _d) = bench(&server, 4, 8, &["--energy-metrics-url", &dcgm]).await;
    assert_eq!(r.energy.source, "prometheus:dcgm");
    assert!((r.energy.total_joules.unwrap() - 32.0).abs() < 1e-6);
    assert_eq!(r.energy.power_source.as_deref(), Some(dcgm.as_str()));
    assert_eq!(r.energy.avg_power_watts, Some(250.0));
    // Usage asked for but not sent: no figure, and the reason says why.
    let (r, _d) = bench(&server, 2, 4, &["--energy-source", "usage"]).await;
    assert_eq!(
        (r.energy.source.as_str(), r.energy.total_joules),
        ("none", None)
    );
    assert!(r.energy.detail.contains("no usage.energy_joules"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_result_has_vllm_and_energy_keys_and_plots() {
    let server = FakeServer::start(Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 3, 6);
    let out = dir.path().join("results");
    let a = args(
        &server.base,
        &data,
        &[
            "--num-prompts",
            "3",
            "--endpoint",
            "/v1/chat/completions",
            "--save-result",
            "--result-dir",
            out.to_str().unwrap(),
            "--result-filename",
            "run.json",
            "--goodput",
            "ttft:5000",
        ],
    );
    let (r, files) = gridserve::bench::serve::run_cli(&a, &ctx()).await.unwrap();
    assert_eq!(r.summary.completed, 3);
    assert_eq!(r.summary.request_goodput.map(|g| g > 0.0), Some(true));
    let body = &server.seen.lock().unwrap().bodies[1];
    assert_eq!(body["messages"][0]["role"], "user");
    assert!(body.get("ignore_eos").is_none());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    for key in [
        "date",
        "model_id",
        "num_prompts",
        "request_rate",
        "duration",
        "completed",
        "failed",
        "total_output_tokens",
        "output_throughput",
        "request_goodput",
        "mean_ttft_ms",
        "p99_tpot_ms",
        "median_itl_ms",
        "std_e2el_ms",
        "ttfts",
        "itls",
        "output_lens",
        "errors",
        "energy_source",
        "total_energy_joules",
        "energy_per_output_token_joules",
        "output_tokens_per_joule",
        "avg_power_watts",
        "p99_power_watts",
    ] {
        assert!(json.get(key).is_some(), "result lacks {key}");
    }
    assert_eq!(json["model_id"], "fake-model");
    assert_eq!(json["endpoint_type"], "openai-chat");
    assert_eq!(json["total_output_tokens"], 18);
    for name in [
        "run.json",
        "run-power.png",
        "run-power.svg",
        "run-ttft-cdf.png",
        "run-e2el-cdf.svg",
    ] {
        let path = out.join(name);
        assert!(files.contains(&path), "{name} not reported");
        assert!(
            std::fs::metadata(&path).unwrap().len() > 1000,
            "{name} is empty"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_scenario_is_posted_scored_and_cleaned_up() {
    let server = FakeServer::start(Script {
        grid: true,
        ..Script::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(
        &scenario,
        "name = \"test-steps\"\n[[step]]\nat_seconds = 0\ncap_watts = 350\n\
         [[step]]\nat_seconds = 1.0\ncap_watts = 100\n[[step]]\nat_seconds = 2.0\n",
    )
    .unwrap();
    let scenario = scenario.to_str().unwrap().to_string();
    let common = [
        "--request-rate",
        "4",
        "--envelope-scenario",
        scenario.as_str(),
        "--priority-mix",
        "interactive=1,flexible=1",
        "--sample-interval-ms",
        "50",
    ];
    // Without the operator token the grid API refuses; the run still completes and says so.
    let (r, _d) = bench(&server, 12, 4, &common).await;
    let c = r.compliance.as_ref().unwrap();
    assert!(c.steps[0].posted.error.as_deref().unwrap().contains("401"));
    assert!(server.seen.lock().unwrap().posted.is_empty());
    // With it: three steps, each acknowledged, the 100 W step settled after the fake's 0.5 s.
    let mut with_token = common.to_vec();
    with_token.extend(["--operator-token", OPERATOR_TOKEN]);
    let (r, _d) = bench(&server, 12, 4, &with_token).await;
    let c = r.compliance.as_ref().unwrap();
    assert_eq!(c.scenario, "test-steps");
    assert!(c.steps.iter().all(|s| s.posted.error.is_none()), "{c:?}");
    let down = &c.steps[1];
    assert!(down.ack_s.unwrap() < 0.5, "{down:?}");
    let settle = down.settle_s.unwrap();
    assert!((0.4..1.5).contains(&settle), "{down:?}");
    assert!(
        down.seconds_over_cap > 0.3 && down.seconds_over_cap < 1.5,
        "{down:?}"
    );
    assert_eq!(c.steps[0].seconds_over_cap, 0.0);
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.posted.len(), 2);
    assert!(
        seen.envelopes.is_empty(),
        "the last envelope was not cancelled"
    );
    // Tiers: an exact 50/50 split of the 12 requests, sent as `priority`.
    let tiers: Vec<&str> = seen
        .bodies
        .iter()
        .rev()
        .take(12)
        .filter_map(|b| b["priority"].as_str())
        .collect();
    assert_eq!(tiers.iter().filter(|t| **t == "flexible").count(), 6);
    assert_eq!(r.tiers.len(), 2);
    assert!(r.tiers.iter().all(|(_, s)| s.completed == 6));
    assert!(
        gridserve::bench::serve::result::render(&r).contains("Envelope Compliance (test-steps)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_targets_and_options_fail_clearly() {
    let server = FakeServer::start(Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 2);
    let scenario = dir.path().join("s.toml");
    std::fs::write(
        &scenario,
        "name = \"s\"\n[[step]]\nat_seconds = 0\ncap_watts = 10\n",
    )
    .unwrap();
    let no_grid = run(
        &args(
            &server.base,
            &data,
            &["--envelope-scenario", scenario.to_str().unwrap()],
        ),
        &ctx(),
    )
    .await;
    assert!(no_grid.unwrap_err().to_string().contains("grid API"));
    let nobody = run(&args("http://127.0.0.1:9", &data, &[]), &ctx()).await;
    assert!(nobody.unwrap_err().to_string().contains("/v1/models"));
    let bad = run(
        &args(&server.base, &data, &["--goodput", "latency:5"]),
        &ctx(),
    )
    .await;
    assert!(bad.unwrap_err().to_string().contains("goodput"));
    let random = run(
        &args(&server.base, &data, &["--dataset-name", "random"]),
        &ctx(),
    )
    .await;
    assert!(random.unwrap_err().to_string().contains("--tokenizer"));
    let slow = FakeServer::start(Script {
        ttft: Duration::from_secs(5),
        ..Script::default()
    })
    .await;
    let timeout = run(
        &args(&slow.base, &data, &["--request-timeout-s", "1"]),
        &ctx(),
    )
    .await;
    assert!(timeout
        .unwrap_err()
        .to_string()
        .contains("initial test run failed"));
}
