//! The engine obeys the power controller's policy: closed tiers wait without blocking the
//! open ones, a request deferred past its deadline gets a 503 with `Retry-After`, and
//! preempted flexible work still completes once power allows.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{json, start, Options};
use gridserve::engine::{AdmissionGate, EnginePolicy, StepBudget};
use serde_json::json as body;

const COMPLETIONS: &str = "/v1/completions";

fn policy(flexible_open: bool, deadline: Duration, preempt_flexible: bool) -> EnginePolicy {
    EnginePolicy {
        budget: StepBudget {
            max_tokens: 256,
            max_seqs: 16,
        },
        gate: AdmissionGate {
            standard: true,
            flexible: flexible_open,
        },
        preempt_flexible,
        duty_cycle: 1.0,
        deferral_deadline: deadline,
        retry_after: Duration::from_secs(60),
    }
}

fn request(priority: &str, max_tokens: u32) -> serde_json::Value {
    body!({"model": common::MODEL, "prompt": "a", "max_tokens": max_tokens,
           "temperature": 0, "ignore_eos": true, "priority": priority})
}

#[tokio::test]
async fn deferred_flexible_work_waits_then_gets_503_with_retry_after() {
    let server = start(Options::default()).await;
    server
        .policy
        .send_replace(policy(false, Duration::from_millis(300), false));
    let flexible_body = request("flexible", 4);
    let flexible = server.post(COMPLETIONS, &flexible_body);
    let standard = async {
        // Standard work is served while flexible work waits.
        let (status, reply) = json(server.post(COMPLETIONS, &request("standard", 4)).await).await;
        assert_eq!(status, 200, "{reply}");
        std::time::Instant::now()
    };
    let (flexible, standard_done) = tokio::join!(flexible, standard);
    let retry_after = flexible.headers().get("retry-after").cloned();
    let (status, reply) = json(flexible).await;
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["error"]["code"], "power_deferred", "{reply}");
    assert_eq!(retry_after.unwrap().to_str().unwrap(), "60");
    assert!(standard_done.elapsed() < Duration::from_secs(10));
    let metrics = server.get("/metrics").await.text().await.unwrap();
    let series = |name: &str, tier: &str| {
        metrics
            .lines()
            .any(|l| l.starts_with(name) && l.contains(&format!("tier=\"{tier}\"")))
    };
    assert!(
        series("gridserve_tier_rejections_total", "flexible"),
        "{metrics}"
    );
    assert!(series("gridserve_tier_goodput_tokens_total", "standard"));
}

#[tokio::test]
async fn deferred_work_runs_when_the_gate_opens_and_preempted_work_completes() {
    let server = start(Options {
        step_delay: Duration::from_millis(5),
        ..Options::default()
    })
    .await;
    server
        .policy
        .send_replace(policy(false, Duration::from_secs(60), false));
    let waiting_body = request("flexible", 6);
    let waiting = server.post(COMPLETIONS, &waiting_body);
    let opener = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let waiting = server.engine().status().waiting.load(Ordering::Relaxed);
        assert_eq!(waiting, 1, "deferred, still queued");
        server
            .policy
            .send_replace(policy(true, Duration::from_secs(60), false));
    };
    let (reply, ()) = tokio::join!(waiting, opener);
    let (status, reply) = json(reply).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["usage"]["completion_tokens"], 6);

    // Preempt a running flexible request a few times: it is recomputed and still finishes
    // with exactly the tokens it would have produced.
    let (_, alone) = json(server.post(COMPLETIONS, &request("flexible", 40)).await).await;
    let running_body = request("flexible", 40);
    let running = server.post(COMPLETIONS, &running_body);
    let preempter = async {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(40)).await;
            server
                .policy
                .send_replace(policy(false, Duration::from_secs(60), true));
            tokio::time::sleep(Duration::from_millis(40)).await;
            server
                .policy
                .send_replace(policy(true, Duration::from_secs(60), false));
        }
    };
    let (reply, ()) = tokio::join!(running, preempter);
    let (status, preempted) = json(reply).await;
    assert_eq!(status, 200, "{preempted}");
    assert_eq!(preempted["choices"][0]["text"], alone["choices"][0]["text"]);
}
