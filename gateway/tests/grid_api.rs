//! The grid API over the real router: operator-token auth, validation, the envelope life
//! cycle, the status document, and persistence across a restart of `server::run`.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{grid_config, json, start, Options};
use gridserve::grid::auth::{sha256, Credentials};
use gridserve::grid::GridConfig;
use gridserve::power::controller::{Decision, Mode, TierAdmission};
use gridserve::power::ClockRange;
use gridserve::power::{DeviceSample, EnergySource, PowerSample};
use serde_json::{json, Value};

const OPERATOR: &str = "op-secret";
const API_KEY: &str = "sk-key";
const ENVELOPES: &str = "/v1/grid/envelopes";

fn credentials() -> Credentials {
    Credentials::new(vec![sha256(OPERATOR)], vec![sha256(API_KEY)])
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

async fn grid_server(
    tweak: impl FnOnce(&mut GridConfig),
) -> (common::TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut grid = grid_config(dir.path());
    tweak(&mut grid);
    let server = start(Options {
        grid: Some(grid),
        credentials: credentials(),
        ..Options::default()
    })
    .await;
    (server, dir)
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    json(req.send().await.expect("request completes")).await
}

async fn post(s: &common::TestServer, token: Option<&str>, body: &Value) -> (u16, Value) {
    send(
        &s.client,
        reqwest::Method::POST,
        s.url(ENVELOPES),
        token,
        Some(body),
    )
    .await
}

async fn get(s: &common::TestServer, path: &str) -> (u16, Value) {
    send(&s.client, reqwest::Method::GET, s.url(path), None, None).await
}

async fn delete(s: &common::TestServer, id: &str, token: Option<&str>) -> (u16, Value) {
    send(
        &s.client,
        reqwest::Method::DELETE,
        s.url(&format!("{ENVELOPES}/{id}")),
        token,
        None,
    )
    .await
}

fn error_type(body: &Value) -> &str {
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body["error"]["type"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn writes_need_an_operator_token_and_reads_are_open() {
    let (s, _dir) = grid_server(|_| {}).await;
    let body = json!({"cap_watts": 500});
    let (status, err) = post(&s, None, &body).await;
    assert_eq!((status, error_type(&err)), (401, "authentication_error"));
    let (status, err) = post(&s, Some("guess"), &body).await;
    assert_eq!((status, error_type(&err)), (401, "authentication_error"));
    let (status, err) = post(&s, Some(API_KEY), &body).await;
    assert_eq!((status, error_type(&err)), (403, "permission_error"));
    let (status, _) = post(&s, Some(OPERATOR), &json!({"id": "e1", "cap_watts": 500})).await;
    assert_eq!(status, 201);
    assert_eq!(delete(&s, "e1", None).await.0, 401);
    assert_eq!(delete(&s, "e1", Some(API_KEY)).await.0, 403);
    for path in ["/v1/grid/status", ENVELOPES, "/v1/grid/envelopes/e1"] {
        assert_eq!(get(&s, path).await.0, 200, "{path}");
    }
}

#[tokio::test]
async fn a_401_names_the_bearer_scheme() {
    let (s, _dir) = grid_server(|_| {}).await;
    let response = s
        .client
        .post(s.url(ENVELOPES))
        .json(&json!({"cap_watts": 500}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"gridserve\""
    );
}

#[tokio::test]
async fn the_audit_log_records_every_change_for_operators_only() {
    let (s, _dir) = grid_server(|_| {}).await;
    let audit = |token: Option<&'static str>| {
        send(
            &s.client,
            reqwest::Method::GET,
            s.url("/v1/grid/audit"),
            token,
            None,
        )
    };
    assert_eq!(audit(None).await.0, 401);
    assert_eq!(audit(Some(API_KEY)).await.0, 403);
    let body = json!({"id": "dr-7", "cap_watts": 450, "duration_seconds": 600});
    assert_eq!(post(&s, Some(OPERATOR), &body).await.0, 201);
    assert_eq!(delete(&s, "dr-7", Some(OPERATOR)).await.0, 200);
    let (status, log) = audit(Some(OPERATOR)).await;
    assert_eq!(status, 200);
    let entries = log["data"].as_array().unwrap();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["envelope_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(actions, [("create", "dr-7"), ("cancel", "dr-7")]);
    assert_eq!(entries[0]["intervals"][0]["cap_watts"], 450.0);
    assert!(!entries[0]["actor"].as_str().unwrap().is_empty());
    assert!(entries[1]["at"].as_f64().unwrap() >= entries[0]["at"].as_f64().unwrap());
}

#[tokio::test]
async fn completions_need_an_api_key_once_one_is_configured() {
    let (s, _dir) = grid_server(|_| {}).await;
    let body = json!({"model": common::MODEL, "prompt": "a", "max_tokens": 2, "temperature": 0});
    let url = s.url("/v1/completions");
    let (status, err) = send(
        &s.client,
        reqwest::Method::POST,
        url.clone(),
        None,
        Some(&body),
    )
    .await;
    assert_eq!((status, error_type(&err)), (401, "authentication_error"));
    let (status, err) = send(
        &s.client,
        reqwest::Method::POST,
        url.clone(),
        Some(OPERATOR),
        Some(&body),
    )
    .await;
    assert_eq!((status, error_type(&err)), (403, "permission_error"));
    let (status, _) = send(
        &s.client,
        reqwest::Method::POST,
        url,
        Some(API_KEY),
        Some(&body),
    )
    .await;
    assert_eq!(status, 200);
    // Without configured keys the same route is open (the other suites rely on it too).
    let open = start(Options::default()).await;
    let url = open.url("/v1/completions");
    assert_eq!(
        send(&open.client, reqwest::Method::POST, url, None, Some(&body))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn create_list_get_cancel_round_trip() {
    let (s, _dir) = grid_server(|_| {}).await;
    let t = now();
    let body = json!({"id": "dr-1", "priority": 3, "ramp_seconds": 10, "cap_watts": 450.5, "duration_seconds": 3600});
    let (status, e) = post(&s, Some(OPERATOR), &body).await;
    assert_eq!(status, 201, "{e}");
    assert_eq!(
        (e["id"].as_str(), e["origin"].as_str(), e["state"].as_str()),
        (Some("dr-1"), Some("rest"), Some("active"))
    );
    assert_eq!(
        (e["priority"].as_i64(), e["ramp_seconds"].as_f64()),
        (Some(3), Some(10.0))
    );
    assert_eq!(e["intervals"][0]["cap_watts"].as_f64(), Some(450.5));
    let start = e["start"].as_f64().unwrap();
    assert!(
        (start - t).abs() < 5.0,
        "start omitted = now: {start} vs {t}"
    );
    assert_eq!(e["end"].as_f64(), Some(start + 3600.0));
    assert_eq!(e["warnings"], json!([]));
    let (status, again) = post(&s, Some(OPERATOR), &body).await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("conflict"))
    );

    let (_, list) = get(&s, ENVELOPES).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["data"][0]["id"], "dr-1");
    let (status, one) = get(&s, "/v1/grid/envelopes/dr-1").await;
    assert_eq!(
        (status, one["cap_watts"].clone(), one["intervals"].clone()),
        (200, Value::Null, e["intervals"].clone())
    );

    let (status, cancelled) = delete(&s, "dr-1", Some(OPERATOR)).await;
    assert_eq!(
        (status, cancelled["state"].as_str()),
        (200, Some("cancelled"))
    );
    assert!(cancelled["cancelled_at"].as_f64().is_some());
    assert_eq!(get(&s, ENVELOPES).await.1["data"], json!([]));
    assert_eq!(
        get(&s, "/v1/grid/envelopes?all=true").await.1["data"][0]["id"],
        "dr-1"
    );
    assert_eq!(
        get(&s, "/v1/grid/envelopes/dr-1").await.1["state"],
        "cancelled"
    );
    assert_eq!(
        get(&s, "/v1/grid/status").await.1["cap"]["envelope_id"],
        Value::Null
    );
    assert_eq!(get(&s, "/v1/grid/envelopes/nope").await.0, 404);
    assert_eq!(delete(&s, "nope", Some(OPERATOR)).await.0, 404);
    assert_eq!(get(&s, "/v1/grid/envelopes?all=maybe").await.0, 400);
}

#[tokio::test]
async fn invalid_envelopes_are_400_naming_the_field() {
    let (s, _dir) = grid_server(|_| {}).await;
    let t = now();
    let cases = [
        (json!({"cap_watts": -1}), "cap_watts"),
        (
            json!({"cap_watts": 100, "start": t + 100.0, "end": t + 50.0}),
            "end",
        ),
        (
            json!({"cap_watts": 100, "start": t + 100.0, "end": t + 100.0}),
            "end",
        ),
        (
            json!({"cap_watts": 100, "end": t + 100.0, "duration_seconds": 5}),
            "duration_seconds",
        ),
        (
            json!({"cap_watts": 100, "duration_seconds": -5}),
            "duration_seconds",
        ),
        (
            json!({"cap_watts": 100, "ramp_seconds": -1}),
            "ramp_seconds",
        ),
        (json!({"cap_watts": 100, "id": "has space"}), "id"),
        (
            json!({"intervals": [{"cap_watts": 10, "duration_seconds": 5}, {"cap_watts": -2}]}),
            "intervals[1].cap_watts",
        ),
        (
            json!({"intervals": [{"cap_watts": 10}, {"cap_watts": 5}]}),
            "intervals[1].start",
        ),
        (json!({"cap_watts": "lots"}), "cap_watts"),
        (json!({}), "cap_watts"),
    ];
    for (body, param) in cases {
        let (status, err) = post(&s, Some(OPERATOR), &body).await;
        assert_eq!(status, 400, "{body} -> {err}");
        assert_eq!(
            (error_type(&err), err["error"]["param"].as_str()),
            ("invalid_request_error", Some(param)),
            "{body}"
        );
    }
    // JSON has no NaN or infinity; bodies that try are 400 too, and so is an unknown field.
    for raw in [
        r#"{"cap_watts": NaN}"#,
        r#"{"cap_watts": 1e999}"#,
        r#"{"cap_watts": 5, "origin": "openadr:x"}"#,
    ] {
        let r = s
            .client
            .post(s.url(ENVELOPES))
            .bearer_auth(OPERATOR)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        let (status, err) = json(r).await;
        assert_eq!(
            (status, error_type(&err)),
            (400, "invalid_request_error"),
            "{raw}"
        );
    }
    assert_eq!(
        get(&s, "/v1/grid/envelopes?all=true").await.1["data"],
        json!([]),
        "nothing was stored"
    );
}

#[tokio::test]
async fn caps_below_the_hardware_minimum_are_accepted_with_a_warning() {
    let (s, _dir) = grid_server(|g| g.hardware_min_watts = Some(200.0)).await;
    let (status, e) = post(&s, Some(OPERATOR), &json!({"cap_watts": 150})).await;
    assert_eq!(status, 201, "{e}");
    let warnings = e["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{e}");
    assert!(
        warnings[0].as_str().unwrap().contains("below the 200 W"),
        "{e}"
    );
    let (_, e) = post(&s, Some(OPERATOR), &json!({"cap_watts": 250})).await;
    assert_eq!(e["warnings"], json!([]));
    // Not configured: the power backend's minimum (e.g. 4 GPUs × 200 W) is used once known.
    let (s, _dir) = grid_server(|_| {}).await;
    let (_, e) = post(&s, Some(OPERATOR), &json!({"cap_watts": 500})).await;
    assert_eq!(e["warnings"], json!([]), "nothing known yet");
    s.state.grid().learn_hardware_min_watts(800.0);
    let (status, e) = post(&s, Some(OPERATOR), &json!({"cap_watts": 500})).await;
    assert_eq!(status, 201, "{e}");
    assert!(
        e["warnings"][0]
            .as_str()
            .unwrap()
            .contains("below the 800 W"),
        "{e}"
    );
}

fn sample(watts: f64, at: Instant) -> PowerSample {
    let device = DeviceSample {
        device: "cpu".into(),
        power_watts: watts,
        energy_joules: 0.0,
        sm_clock_mhz: None,
        power_limit_watts: None,
    };
    PowerSample {
        at,
        source: EnergySource::Estimate,
        devices: vec![device],
    }
}

#[tokio::test]
async fn status_shows_cap_next_change_power_and_only_what_is_known() {
    let (s, _dir) = grid_server(|g| g.subscription_watts = Some(1000.0)).await;
    let (_, st) = get(&s, "/v1/grid/status").await;
    assert_eq!(
        (
            st["cap"]["watts"].as_f64(),
            st["cap"]["envelope_id"].clone()
        ),
        (Some(1000.0), Value::Null)
    );
    for p in [
        "/power/instant_watts",
        "/power/average_1s_watts",
        "/headroom_watts",
        "/operating_point",
        "/compliance",
        "/next_change",
    ] {
        assert_eq!(st.pointer(p), Some(&Value::Null), "{p}: {st}");
    }

    let t = now();
    post(
        &s,
        Some(OPERATOR),
        &json!({"id": "base", "priority": 5, "cap_watts": 600, "duration_seconds": 3600}),
    )
    .await;
    let soon = json!({"id": "peak", "priority": 0, "cap_watts": 300, "start": t + 100.0, "duration_seconds": 60});
    assert_eq!(post(&s, Some(OPERATOR), &soon).await.0, 201);
    let (_, st) = get(&s, "/v1/grid/status").await;
    assert_eq!(
        (
            st["cap"]["watts"].as_f64(),
            st["cap"]["envelope_id"].as_str()
        ),
        (Some(600.0), Some("base"))
    );
    // JSON floats may come back one ULP off (serde_json's fast parser): compare to a µs.
    let at = st["next_change"]["at"].as_f64().unwrap();
    assert!((at - (t + 100.0)).abs() < 1e-6, "{at} vs {}", t + 100.0);
    assert_eq!(
        (
            st["next_change"]["cap_watts"].as_f64(),
            st["next_change"]["envelope_id"].as_str()
        ),
        (Some(300.0), Some("peak"))
    );

    let t0 = Instant::now();
    for (ms, w) in [(0, 100.0), (500, 200.0), (1000, 300.0)] {
        s.feeds
            .power
            .send_replace(Some(sample(w, t0 + Duration::from_millis(ms))));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let point = Decision {
        mode: Mode::Tracking,
        target_watts: Some(650.0),
        measured_watts: Some(300.0),
        effort: 0.8,
        budget: gridserve::engine::StepBudget {
            max_seqs: 8,
            max_tokens: 128,
        },
        sm_clock: Some(ClockRange {
            min_mhz: 900,
            max_mhz: 1200,
        }),
        power_limit_watts: None,
        duty_cycle: 1.0,
        admission: TierAdmission::OPEN,
        preempt_flexible: false,
    };
    s.feeds.operating_point.send_replace(Some(point.into()));
    let (_, st) = get(&s, "/v1/grid/status").await;
    assert_eq!(st["power"]["instant_watts"].as_f64(), Some(300.0), "{st}");
    assert_eq!(
        st["power"]["average_1s_watts"].as_f64(),
        Some(200.0),
        "{st}"
    );
    assert_eq!(st["power"]["source"], "estimate");
    assert_eq!(st["headroom_watts"].as_f64(), Some(400.0));
    assert_eq!(st["operating_point"]["sm_clock_mhz"], json!([900, 1200]));
    assert_eq!(st["operating_point"]["mode"], "tracking");
    assert_eq!(st["operating_point"]["budget"]["max_seqs"], 8);
    assert_eq!(st["operating_point"]["admission"]["flexible"], "admit");
    assert_eq!(st["compliance"], Value::Null, "not published yet");
}

/// `server::run` on a data dir, stopped through its shutdown future.
async fn run_on(
    dir: &std::path::Path,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let opts = gridserve::server::ServeOptions {
        api: Default::default(),
        step_budget: gridserve::engine::StepBudget {
            max_tokens: 64,
            max_seqs: 4,
        },
        max_waiting_requests: 4,
        drain_timeout: Duration::from_millis(100),
        grid: GridConfig {
            subscription_watts: Some(900.0),
            ..grid_config(dir)
        },
        credentials: credentials(),
        controller: common::controller_config(),
        openadr: None,
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let load = || Ok(common::model_parts(Duration::ZERO));
    let done = tokio::spawn(async move {
        gridserve::server::run(listener, opts, load, async {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    (base, tx, done)
}

#[tokio::test]
async fn envelopes_survive_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let (base, stop, done) = run_on(dir.path()).await;
    let body = json!({"id": "keep", "cap_watts": 321, "duration_seconds": 3600});
    let (status, _) = send(
        &client,
        reqwest::Method::POST,
        format!("{base}{ENVELOPES}"),
        Some(OPERATOR),
        Some(&body),
    )
    .await;
    assert_eq!(status, 201);
    stop.send(()).unwrap();
    done.await.unwrap();

    let (base, stop, done) = run_on(dir.path()).await;
    let (status, e) = send(
        &client,
        reqwest::Method::GET,
        format!("{base}{ENVELOPES}/keep"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, e["intervals"][0]["cap_watts"].as_f64()),
        (200, Some(321.0))
    );
    let (_, st) = send(
        &client,
        reqwest::Method::GET,
        format!("{base}/v1/grid/status"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (
            st["cap"]["watts"].as_f64(),
            st["cap"]["envelope_id"].as_str()
        ),
        (Some(321.0), Some("keep"))
    );
    stop.send(()).unwrap();
    done.await.unwrap();
}

#[tokio::test]
async fn an_unwritable_data_dir_stops_the_server_before_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let opts = gridserve::server::ServeOptions {
        api: Default::default(),
        step_budget: gridserve::engine::StepBudget {
            max_tokens: 64,
            max_seqs: 4,
        },
        max_waiting_requests: 4,
        drain_timeout: Duration::from_millis(100),
        grid: grid_config(&file.join("data")),
        credentials: credentials(),
        controller: common::controller_config(),
        openadr: None,
    };
    let load = || Ok(common::model_parts(Duration::ZERO));
    let run = gridserve::server::run(listener, opts, load, std::future::pending());
    let err = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("fails at once")
        .unwrap_err();
    assert!(err.to_string().contains("cannot create data dir"), "{err}");
}

#[tokio::test]
async fn an_api_keys_default_tier_applies_unless_the_request_names_one() {
    const BATCH_KEY: &str = "batch-key";
    let dir = tempfile::tempdir().unwrap();
    let creds = Credentials::new(
        vec![sha256(OPERATOR)],
        vec![sha256(API_KEY), sha256(BATCH_KEY)],
    )
    .with_api_key_tiers(vec![(
        sha256(BATCH_KEY),
        gridserve::engine::Priority::Flexible,
    )]);
    let s = start(Options {
        grid: Some(grid_config(dir.path())),
        credentials: creds,
        ..Options::default()
    })
    .await;
    // The controller has closed the flexible tier, with a short deadline.
    let mut policy = gridserve::engine::EnginePolicy::open(gridserve::engine::StepBudget {
        max_tokens: 256,
        max_seqs: 16,
    });
    policy.gate.flexible = false;
    policy.deferral_deadline = Duration::from_millis(200);
    s.policy.send_replace(policy);
    let url = s.url("/v1/completions");
    let body = json!({"model": common::MODEL, "prompt": "a", "max_tokens": 2, "temperature": 0});
    let post = |key: &'static str, body: Value| {
        let (client, url) = (s.client.clone(), url.clone());
        async move { send(&client, reqwest::Method::POST, url, Some(key), Some(&body)).await }
    };
    let (status, err) = post(BATCH_KEY, body.clone()).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (503, Some("power_deferred")),
        "{err}"
    );
    let mut interactive = body.clone();
    interactive["priority"] = json!("interactive");
    assert_eq!(
        post(BATCH_KEY, interactive).await.0,
        200,
        "the request's own tier wins"
    );
    assert_eq!(
        post(API_KEY, body).await.0,
        200,
        "other keys default to standard"
    );
}
