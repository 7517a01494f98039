//! Per-request energy: every step's metered energy is shared out over the requests in it, so
//! the `usage.energy_joules` of all requests add up to the energy measured.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use gridserve::api::ApiConfig;
use gridserve::engine::{StepBudget, StepMeter};
use gridserve::power::EnergySource;
use gridserve::server::{run, ServeOptions};
use gridserve_models::StepBatch;
use serde_json::{json, Value};

/// A meter whose steps cost 0.5 J plus 0.01 J per token, and that keeps the grand total.
struct FakeMeter {
    total_joules: Arc<Mutex<f64>>,
}

impl StepMeter for FakeMeter {
    fn source(&self) -> EnergySource {
        EnergySource::Estimate
    }
    fn begin(&mut self, _batch: &StepBatch) {}
    fn end(&mut self, batch: &StepBatch) -> f64 {
        let joules = 0.5 + 0.01 * batch.num_tokens() as f64;
        *self.total_joules.lock().unwrap() += joules;
        joules
    }
}

#[tokio::test]
async fn request_energies_add_up_to_the_measured_total() {
    let total = Arc::new(Mutex::new(0.0));
    let meter = FakeMeter {
        total_joules: total.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let data = tempfile::tempdir().unwrap();
    let opts = ServeOptions {
        api: ApiConfig::default(),
        // A small token budget forces chunked prefill and mixed steps.
        step_budget: StepBudget {
            max_tokens: 7,
            max_seqs: 8,
        },
        max_waiting_requests: 32,
        drain_timeout: Duration::from_secs(1),
        grid: common::grid_config(data.path()),
        credentials: Default::default(),
        controller: common::controller_config(),
        openadr: None,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let load = move || {
        Ok(common::metered_model_parts(
            Duration::from_millis(2),
            Some(Box::new(meter)),
        ))
    };
    let server = tokio::spawn(run(listener, opts, load, async {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..200 {
        if client
            .get(format!("{base}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ready);
    let prompts = ["a", "abcdefghij", "ab", "abcdefghijklmnop", "abc", "abcdef"];
    let requests = prompts.iter().enumerate().map(|(i, p)| {
        let (client, base) = (client.clone(), base.clone());
        let body = json!({"model": common::MODEL, "prompt": p, "max_tokens": 5 + i, "temperature": 0, "ignore_eos": true, "stream": i % 2 == 1, "stream_options": if i % 2 == 1 { json!({"include_usage": true}) } else { Value::Null }});
        async move {
            let r = client.post(format!("{base}/v1/completions")).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let header = r.headers().get("x-gridserve-energy-joules").map(|v| v.to_str().unwrap().parse::<f64>().unwrap());
            let text = r.text().await.unwrap();
            let usage = if i % 2 == 1 {
                common::sse_chunks(&text).last().unwrap()["usage"].clone()
            } else {
                serde_json::from_str::<Value>(&text).unwrap()["usage"].clone()
            };
            assert_eq!(usage["energy_source"], "estimate", "{usage}");
            let joules = usage["energy_joules"].as_f64().expect("energy_joules");
            if let Some(h) = header {
                assert!((h - joules).abs() < 1e-5, "header {h} vs usage {joules}");
            }
            joules
        }
    });
    let per_request: Vec<f64> = join_all(requests).await;
    let sum: f64 = per_request.iter().sum();
    let measured = *total.lock().unwrap();
    assert!(per_request.iter().all(|&j| j > 0.0), "{per_request:?}");
    assert!(
        (sum - measured).abs() <= 0.01 * measured,
        "requests {sum} J vs measured {measured} J"
    );
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
