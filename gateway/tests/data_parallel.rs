//! Data parallel serving through `server::run`: two engines (one per GPU on a real node; fake
//! models on GPU twins here), each with its own power sensor. Requests spread over both,
//! every answer comes back whole, and the controller splits the node's cap between them.

mod common;

use std::time::Duration;

use gridserve::config::PowerConfig;
use gridserve::power::{detect_engines, CpuScope, EngineDevice};
use gridserve::server::{run, EngineParts, ModelParts};
use serde_json::{json, Value};

/// The node's cap: two H100 twins draw ~2 × 70 W idle and up to 2 × 700 W.
const CAP_WATTS: f64 = 600.0;

fn two_engines(step_delay: Duration) -> ModelParts {
    let config = PowerConfig {
        sensor: "twin:h100".parse().unwrap(),
        cpu_estimate_scope: CpuScope::Process,
        cpu_idle_watts: 20.0,
        cpu_watts_per_busy_core: 12.0,
        powercap_root: "/nonexistent".into(),
        twin_config_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../config").into(),
    };
    let devices: Vec<EngineDevice> = (0..2)
        .map(|n| EngineDevice {
            label: format!("cuda:{n}"),
            cuda_ordinal: Some(n),
            pci_bus_id: None,
        })
        .collect();
    let power = detect_engines(&config, &devices).expect("a twin per engine");
    let mut parts = common::model_parts(step_delay);
    let backend_of = |p: ModelParts| p.engines.into_iter().next().unwrap().backend;
    let backends = [
        backend_of(common::model_parts(step_delay)),
        backend_of(common::model_parts(step_delay)),
    ];
    parts.engines = EngineParts::metered(devices, backends, power);
    parts
}

async fn get(client: &reqwest::Client, url: String) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// The `engine` label's running requests, from `/metrics`.
fn running_per_engine(metrics: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter(|l| l.starts_with("vllm:num_requests_running{"))
        .filter_map(|l| {
            let engine = l.split("engine=\"").nth(1)?.split('"').next()?.to_string();
            let value = l.rsplit(' ').next()?.parse().ok()?;
            Some((engine, value))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_engines_share_the_load_and_split_the_cap() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let data = tempfile::tempdir().unwrap();
    let mut grid = common::grid_config(data.path());
    grid.subscription_watts = Some(CAP_WATTS);
    let opts = common::serve_options(grid, Duration::from_secs(5));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run(
        listener,
        opts,
        || Ok(two_engines(Duration::from_millis(15))),
        async {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    for _ in 0..200 {
        let ready = client.get(format!("{base}/ready")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Eight concurrent completions of 60 tokens: ~1 s of work at 15 ms a step.
    let body = json!({"model": common::MODEL, "prompt": "a", "max_tokens": 60,
                      "temperature": 0, "ignore_eos": true});
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let (client, url, body) = (
                client.clone(),
                format!("{base}/v1/completions"),
                body.clone(),
            );
            tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap() })
        })
        .collect();
    // While they run, both engines must hold some of them.
    let mut busy_engines = Vec::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let running = running_per_engine(&get(&client, format!("{base}/metrics")).await);
        busy_engines = running
            .iter()
            .filter(|(_, n)| *n > 0.0)
            .map(|(e, _)| e.clone())
            .collect();
        if busy_engines.len() == 2 {
            break;
        }
    }
    assert_eq!(
        busy_engines.len(),
        2,
        "both engines should be running requests: {busy_engines:?}"
    );

    for r in requests {
        let response = r.await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["usage"]["completion_tokens"], 60, "{body}");
        assert!(
            body["usage"]["energy_joules"].as_f64().unwrap_or(0.0) > 0.0,
            "{body}"
        );
    }

    // The controller splits the node's cap between the two engines' GPUs.
    let status: Value =
        serde_json::from_str(&get(&client, format!("{base}/v1/grid/status")).await).unwrap();
    let point = &status["operating_point"];
    println!("operating point: {point:#}");
    let engines = point["engines"]
        .as_array()
        .unwrap_or_else(|| panic!("{status}"));
    let devices: Vec<&str> = engines
        .iter()
        .map(|e| e["device"].as_str().unwrap())
        .collect();
    assert_eq!(devices, ["cuda:0", "cuda:1"]);
    let shares: Vec<f64> = engines
        .iter()
        .map(|e| e["cap_share_watts"].as_f64().unwrap())
        .collect();
    assert!(
        (shares.iter().sum::<f64>() - CAP_WATTS).abs() < 1e-6,
        "shares {shares:?} must add up to the cap"
    );
    assert!(
        shares.iter().all(|s| *s >= 60.0),
        "each keeps at least its idle draw: {shares:?}"
    );
    let node_target = point["target_watts"].as_f64().unwrap();
    assert!(node_target <= CAP_WATTS, "{point}");
    let sensed: Vec<&str> = status["power"]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    assert_eq!(sensed, ["cuda:0/gpu0", "cuda:1/gpu0"]);

    let _ = stop.send(());
    server.await.unwrap().expect("clean shutdown");
}
