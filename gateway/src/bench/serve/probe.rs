//! Samples power (and, from gridserve, the cap in force) while a `bench serve` run is going:
//! from gridserve's `/v1/grid/status`, a Prometheus endpoint, or a sensor on this machine.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;

use super::prom;
use crate::power::PowerSensor;

/// One reading, `t_s` seconds after the run started.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProbeSample {
    pub t_s: f64,
    /// gridserve: the 1 s average; Prometheus: the power gauge; local: the sensor's power.
    pub power_watts: Option<f64>,
    /// The cap in force (gridserve only; None = unbounded or unknown).
    pub cap_watts: Option<f64>,
    /// Where the cap is heading (differs from `cap_watts` during a ramp).
    pub cap_target_watts: Option<f64>,
    /// The energy counter as read (joules, summed over devices), for a before/after delta.
    pub energy_joules: Option<f64>,
}

/// Where readings come from.
pub enum PowerFeed {
    /// gridserve's `GET /v1/grid/status`.
    GridStatus {
        client: reqwest::Client,
        url: String,
    },
    /// A Prometheus text endpoint (gridserve's or DCGM's gauges and counters).
    Prometheus {
        client: reqwest::Client,
        url: String,
    },
    /// A sensor here (NVML, RAPL or the CPU estimate).
    Local(Box<dyn PowerSensor>),
    None,
}

impl PowerFeed {
    /// One reading now (None for `None` or a failed read: a missed sample is not an error).
    pub async fn read(&mut self, t_s: f64) -> Option<ProbeSample> {
        match self {
            PowerFeed::GridStatus { client, url } => {
                let v: Value = get(client, url).await?.json().await.ok()?;
                Some(status_sample(t_s, &v))
            }
            PowerFeed::Prometheus { client, url } => {
                let text = get(client, url).await?.text().await.ok()?;
                let r = prom::energy_reading(&text)?;
                Some(ProbeSample {
                    t_s,
                    power_watts: r.power_watts,
                    energy_joules: Some(r.joules),
                    ..Default::default()
                })
            }
            PowerFeed::Local(sensor) => {
                let s = sensor.sample().ok()?;
                Some(ProbeSample {
                    t_s,
                    power_watts: Some(s.total_watts()),
                    energy_joules: Some(s.total_energy_joules()),
                    ..Default::default()
                })
            }
            PowerFeed::None => None,
        }
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Option<reqwest::Response> {
    let resp = client
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    resp.status().is_success().then_some(resp)
}

/// The figures of a `grid.status` document.
pub fn status_sample(t_s: f64, v: &Value) -> ProbeSample {
    let energy: Option<f64> = v["power"]["devices"]
        .as_array()
        .filter(|d| !d.is_empty())
        .map(|d| d.iter().filter_map(|d| d["energy_joules"].as_f64()).sum());
    ProbeSample {
        t_s,
        power_watts: v["power"]["average_1s_watts"]
            .as_f64()
            .or_else(|| v["power"]["instant_watts"].as_f64()),
        cap_watts: v["cap"]["watts"].as_f64(),
        cap_target_watts: v["cap"]["target_watts"].as_f64(),
        energy_joules: energy,
    }
}

/// A running sampler; `stop` ends it and returns every sample and the feed.
pub struct Probe {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(Vec<ProbeSample>, PowerFeed)>,
}

impl Probe {
    /// Samples `feed` every `interval` from now on; `t0` is the run's start.
    pub fn spawn(mut feed: PowerFeed, interval: Duration, t0: Instant) -> Probe {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {
                        samples.extend(feed.read(t0.elapsed().as_secs_f64()).await);
                    }
                }
            }
            // A last reading at the very end, so energy deltas cover the whole run.
            samples.extend(feed.read(t0.elapsed().as_secs_f64()).await);
            (samples, feed)
        });
        Probe { stop, task }
    }

    pub async fn stop(self) -> Vec<ProbeSample> {
        let _ = self.stop.send(());
        self.task.await.map(|(s, _)| s).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_status_documents_give_power_cap_and_energy() {
        let v: Value = serde_json::from_str(
            r#"{"object":"grid.status","cap":{"watts":450.0,"target_watts":400.0},
                "power":{"instant_watts":431.2,"average_1s_watts":428.9,
                "devices":[{"energy_joules":100.0},{"energy_joules":23.5}]}}"#,
        )
        .unwrap();
        let s = status_sample(1.5, &v);
        assert_eq!(s.power_watts, Some(428.9));
        assert_eq!(
            (s.cap_watts, s.cap_target_watts),
            (Some(450.0), Some(400.0))
        );
        assert_eq!(s.energy_joules, Some(123.5));
        let unknown: Value =
            serde_json::from_str(r#"{"cap":{"watts":null},"power":null}"#).unwrap();
        assert_eq!(status_sample(0.0, &unknown), ProbeSample::default());
    }
}
