//! Push, where the VTN offers it: a WEBSOCKET subscription to events and the VTN's notifier
//! socket (`notifiers/ws`). A notification only wakes the VEN to poll at once — the poll stays
//! the one source of truth and reconciliation — so a lost or duplicated message costs nothing
//! but a poll interval. Reconnects back off like polls do.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::config::{OpenAdrConfig, Secret};

/// What the notifier shares with the VEN: the wake-up, and whether the socket is open.
#[derive(Clone, Default)]
pub struct Push {
    pub wake: Arc<Notify>,
    pub connected: Arc<AtomicBool>,
}

/// Keeps a notifier socket open until `stopped`; gives up (polling only) if the VTN has no
/// websocket notifier.
pub async fn run(
    config: OpenAdrConfig,
    secret: Secret,
    http: reqwest::Client,
    push: Push,
    mut stopped: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    loop {
        let session = Session {
            config: &config,
            secret: &secret,
            http: &http,
        };
        let result = tokio::select! {
            r = session.run(&push) => r,
            _ = stopped.changed() => return,
        };
        let was_connected = push.connected.swap(false, Ordering::Relaxed);
        match result {
            Err(Stop::NotOffered) => {
                tracing::info!("OpenADR: the VTN offers no websocket notifier; polling only");
                return;
            }
            Err(Stop::Failed(e)) if !was_connected => {
                failures = failures.saturating_add(1);
                tracing::debug!("OpenADR notifier: {e}");
            }
            _ => {
                failures = 1;
                // The socket closed: the VTN may be going away, or changed something as it
                // closed. Poll now (once) to learn which.
                push.wake.notify_one();
            }
        }
        let base = config
            .poll_interval
            .as_secs_f64()
            .min(config.max_backoff.as_secs_f64());
        let delay = (base * f64::from(1u32 << failures.min(10)) / 2.0)
            .min(config.max_backoff.as_secs_f64());
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(delay)) => {}
            _ = stopped.changed() => return,
        }
    }
}

enum Stop {
    NotOffered,
    Failed(String),
}

struct Session<'a> {
    config: &'a OpenAdrConfig,
    secret: &'a Secret,
    http: &'a reqwest::Client,
}

impl Session<'_> {
    async fn run(&self, push: &Push) -> Result<(), Stop> {
        let token = self.token().await?;
        let notifiers = self.get_json(&token, "notifiers").await?;
        // The 3.1 schema spells the keys in capitals (`WEBSOCKET`, `MQTT`).
        if notifiers["WEBSOCKET"] != json!(true) && notifiers["websocket"] != json!(true) {
            return Err(Stop::NotOffered);
        }
        self.subscribe(&token).await?;
        let mut socket = self.connect(&token).await?;
        push.connected.store(true, Ordering::Relaxed);
        tracing::info!("OpenADR: notifier socket open; events are pushed");
        while let Some(message) = socket.next().await {
            match message.map_err(|e| Stop::Failed(format!("notifier socket: {e}")))? {
                Message::Text(_) | Message::Binary(_) => push.wake.notify_one(),
                Message::Close(_) => break,
                _ => {}
            }
        }
        Ok(())
    }

    /// OAuth2 client credentials (the client library keeps its own token private).
    async fn token(&self) -> Result<String, Stop> {
        let response = self
            .http
            .post(self.config.token_url.clone())
            .basic_auth(&self.config.client_id, Some(self.secret.expose()))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| Stop::Failed(format!("token: {e}")))?;
        let body: Value = ok_json(response, "token").await?;
        body["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Stop::Failed("token: no access_token".into()))
    }

    async fn get_json(&self, token: &str, path: &str) -> Result<Value, Stop> {
        let url = self.url(path)?;
        let response = self.http.get(url).bearer_auth(token).send().await;
        ok_json(
            response.map_err(|e| Stop::Failed(format!("{path}: {e}")))?,
            path,
        )
        .await
    }

    /// One WEBSOCKET subscription per VEN name for event changes (created once; the VTN keeps
    /// it across its restarts).
    async fn subscribe(&self, token: &str) -> Result<(), Stop> {
        let name = format!("gridserve:{}", self.config.ven_name);
        let path = format!("subscriptions?clientName={name}");
        let existing = self.get_json(token, &path).await?;
        let ours = |s: &Value| {
            s["clientName"] == name.as_str() && s["objectOperations"][0]["mechanism"] == "WEBSOCKET"
        };
        if existing.as_array().is_some_and(|a| a.iter().any(ours)) {
            return Ok(());
        }
        let body = json!({
            "objectType": "SUBSCRIPTION",
            "clientName": name,
            "objectOperations": [{
                "objects": ["EVENT"],
                "operations": ["CREATE", "UPDATE", "DELETE"],
                "mechanism": "WEBSOCKET",
            }],
        });
        let response = self
            .http
            .post(self.url("subscriptions")?)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .map_err(|e| Stop::Failed(format!("subscriptions: {e}")))?;
        ok_json(response, "subscriptions").await.map(drop)
    }

    /// The notifier socket over an HTTP/1.1 upgrade reqwest makes (its TLS serves `wss`).
    async fn connect(&self, token: &str) -> Result<WebSocketStream<reqwest::Upgraded>, Stop> {
        let response = self
            .http
            .get(self.url("notifiers/ws")?)
            .version(reqwest::Version::HTTP_11)
            .bearer_auth(token)
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", generate_key())
            .send()
            .await
            .map_err(|e| Stop::Failed(format!("notifiers/ws: {e}")))?;
        if response.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            return Err(Stop::Failed(format!(
                "notifiers/ws: HTTP {}",
                response.status()
            )));
        }
        let upgraded = response
            .upgrade()
            .await
            .map_err(|e| Stop::Failed(format!("notifiers/ws upgrade: {e}")))?;
        Ok(WebSocketStream::from_raw_socket(upgraded, Role::Client, None).await)
    }

    fn url(&self, path: &str) -> Result<url::Url, Stop> {
        self.config
            .vtn_url
            .join(path)
            .map_err(|e| Stop::Failed(format!("{path}: {e}")))
    }
}

async fn ok_json(response: reqwest::Response, what: &str) -> Result<Value, Stop> {
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(Stop::Failed(format!("{what}: HTTP {status}: {body}")));
    }
    response
        .json()
        .await
        .map_err(|e| Stop::Failed(format!("{what}: {e}")))
}
