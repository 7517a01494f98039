//! `server::run` as `gridserve serve` runs it: readiness while the model loads, a load
//! failure, and graceful shutdown that lets in-flight requests finish or cuts them at the
//! drain deadline.

mod common;

use std::time::Duration;

use gridserve::server::run;
use gridserve::GatewayError;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Running {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    done: JoinHandle<Result<(), GatewayError>>,
    _data: tempfile::TempDir,
}

async fn serve(drain: Duration, load_delay: Duration, step_delay: Duration) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let data = tempfile::tempdir().unwrap();
    let opts = common::serve_options(common::grid_config(data.path()), drain);
    let load = move || {
        std::thread::sleep(load_delay);
        Ok(common::model_parts(step_delay))
    };
    let (tx, rx) = oneshot::channel();
    let done = tokio::spawn(run(listener, opts, load, async {
        let _ = rx.await;
    }));
    Running {
        base,
        stop: Some(tx),
        done,
        _data: data,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn wait_ready(base: &str) {
    for _ in 0..200 {
        if let Ok(r) = client().get(format!("{base}/ready")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server never became ready");
}

fn completion(max_tokens: u32) -> Value {
    json!({"model": common::MODEL, "prompt": "a", "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true})
}

#[tokio::test]
async fn ready_is_503_while_the_model_loads_then_200() {
    let mut s = serve(
        Duration::from_secs(1),
        Duration::from_millis(600),
        Duration::ZERO,
    )
    .await;
    let early = client()
        .get(format!("{}/ready", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(early.status(), 503);
    let gen = client()
        .post(format!("{}/v1/completions", s.base))
        .json(&completion(3))
        .send()
        .await
        .unwrap();
    assert_eq!(gen.status(), 503);
    assert_eq!(
        client()
            .get(format!("{}/health", s.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    wait_ready(&s.base).await;
    let ok = client()
        .post(format!("{}/v1/completions", s.base))
        .json(&completion(3))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    s.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), s.done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_within_the_drain_time() {
    // 20 tokens at 20 ms a step ≈ 0.4 s, well inside a 5 s drain.
    let mut s = serve(
        Duration::from_secs(5),
        Duration::ZERO,
        Duration::from_millis(20),
    )
    .await;
    wait_ready(&s.base).await;
    let url = format!("{}/v1/completions", s.base);
    let in_flight = tokio::spawn(async move {
        client()
            .post(url)
            .json(&completion(20))
            .send()
            .await?
            .json::<Value>()
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.stop.take().unwrap().send(()).unwrap();
    let body = in_flight.await.unwrap().unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 20);
    tokio::time::timeout(Duration::from_secs(10), s.done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_cuts_requests_still_running_at_the_drain_deadline() {
    // 50 tokens at 40 ms a step ≈ 2 s, but only 0.3 s of drain.
    let mut s = serve(
        Duration::from_millis(300),
        Duration::ZERO,
        Duration::from_millis(40),
    )
    .await;
    wait_ready(&s.base).await;
    let url = format!("{}/v1/completions", s.base);
    let in_flight = tokio::spawn(async move {
        client()
            .post(url)
            .json(&completion(50))
            .send()
            .await?
            .json::<Value>()
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    s.stop.take().unwrap().send(()).unwrap();
    let body = in_flight.await.unwrap().unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "abort", "{body}");
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() < 50);
    tokio::time::timeout(Duration::from_secs(10), s.done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_model_that_fails_to_load_ends_the_server_with_its_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let opts = common::serve_options(common::grid_config(data.path()), Duration::from_millis(100));
    let load = || Err(GatewayError::Config("no such model file".into()));
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        run(listener, opts, load, std::future::pending()),
    )
    .await
    .expect("server stops by itself");
    assert!(out.unwrap_err().to_string().contains("no such model file"));
}
