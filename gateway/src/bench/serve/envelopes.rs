//! Envelope scenarios for `bench serve --envelope-scenario`: a TOML file of timed caps, posted
//! to gridserve's grid API as the run goes, and what the server did about each one (how soon
//! the cap showed, how soon power was under it, time over the cap, serving per tier).

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use super::probe::ProbeSample;
use super::stats::{summarize, Metric, RequestOutcome};
use crate::GatewayError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(rename = "step")]
    steps: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    at_seconds: f64,
    cap_watts: Option<f64>,
    ramp_seconds: Option<f64>,
}

/// One change of the cap: from `at_s` the cap is `cap_watts` (None lifts it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub at_s: f64,
    pub cap_watts: Option<f64>,
    pub ramp_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnvelopeScenario {
    pub name: String,
    pub steps: Vec<Step>,
}

impl EnvelopeScenario {
    pub fn load(path: &Path) -> Result<Self, GatewayError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| GatewayError::Bench(format!("reading {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| GatewayError::Bench(format!("{}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| e.to_string())?;
        if raw.steps.is_empty() {
            return Err("needs at least one [[step]]".into());
        }
        let mut steps: Vec<Step> = Vec::new();
        for (i, s) in raw.steps.into_iter().enumerate() {
            let after_previous = steps.last().is_none_or(|p| s.at_seconds > p.at_s);
            if !(s.at_seconds.is_finite() && s.at_seconds >= 0.0 && after_previous) {
                return Err(format!("step {i}: at_seconds must be >= 0 and increase"));
            }
            if s.cap_watts.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
                return Err(format!("step {i}: cap_watts must be > 0"));
            }
            if s.ramp_seconds
                .is_some_and(|r| !(r.is_finite() && (0.0..=86400.0).contains(&r)))
            {
                return Err(format!("step {i}: ramp_seconds must be in 0..=86400"));
            }
            steps.push(Step {
                at_s: s.at_seconds,
                cap_watts: s.cap_watts,
                ramp_seconds: s.ramp_seconds,
            });
        }
        Ok(Self {
            name: raw.name,
            steps,
        })
    }
}

/// What happened when a step was due.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Posted {
    /// When the step was sent to the grid API, seconds since the run started.
    pub sent_at_s: Option<f64>,
    /// When the grid API confirmed it, seconds since the run started (None: not reached or
    /// failed).
    pub posted_at_s: Option<f64>,
    pub envelope_id: Option<String>,
    pub error: Option<String>,
}

/// The grid API, for posting and cancelling the scenario's envelopes.
#[derive(Clone)]
pub struct GridClient {
    pub client: reqwest::Client,
    pub base: String,
    pub operator_token: Option<String>,
}

impl GridClient {
    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.operator_token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    pub async fn post(&self, id: &str, step: &Step) -> Result<(), String> {
        let mut body = json!({"id": id, "cap_watts": step.cap_watts});
        if let Some(ramp) = step.ramp_seconds {
            body["ramp_seconds"] = json!(ramp);
        }
        let url = format!("{}/v1/grid/envelopes", self.base);
        let resp = self.auth(self.client.post(&url).json(&body)).send().await;
        check(resp, "POST", &url).await
    }

    pub async fn cancel(&self, id: &str) -> Result<(), String> {
        let url = format!("{}/v1/grid/envelopes/{id}", self.base);
        check(
            self.auth(self.client.delete(&url)).send().await,
            "DELETE",
            &url,
        )
        .await
    }

    /// Fails unless the server has gridserve's grid API.
    pub async fn check_available(&self) -> Result<(), GatewayError> {
        let url = format!("{}/v1/grid/status", self.base);
        let resp = self.client.get(&url).send().await;
        check(resp, "GET", &url).await.map_err(|e| {
            GatewayError::Bench(format!(
                "--envelope-scenario needs gridserve's grid API at the server: {e}"
            ))
        })
    }
}

async fn check(
    resp: Result<reqwest::Response, reqwest::Error>,
    method: &str,
    url: &str,
) -> Result<(), String> {
    let resp = resp.map_err(|e| format!("{method} {url}: {e}"))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    Err(format!("{method} {url}: HTTP {status}: {}", text.trim()))
}

/// Posts each step when it is due (each envelope open-ended, the previous one cancelled once the
/// new one is in, so there is never a gap) until `done` turns true; then cancels the last.
pub async fn drive(
    grid: &GridClient,
    scenario: &EnvelopeScenario,
    t0: Instant,
    mut done: watch::Receiver<bool>,
) -> Vec<Posted> {
    let run_id = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let mut posted = vec![Posted::default(); scenario.steps.len()];
    let mut live: Option<String> = None;
    for (i, step) in scenario.steps.iter().enumerate() {
        let due = t0 + Duration::from_secs_f64(step.at_s);
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = done.wait_for(|d| *d) => break,
        }
        let previous = live.take();
        posted[i].sent_at_s = Some(t0.elapsed().as_secs_f64());
        if step.cap_watts.is_some() {
            let id = format!("{run_id}-{i}");
            match grid.post(&id, step).await {
                Ok(()) => {
                    posted[i].envelope_id = Some(id.clone());
                    live = Some(id);
                }
                Err(e) => posted[i].error = Some(e),
            }
        }
        if let Some(old) = previous {
            if let Err(e) = grid.cancel(&old).await {
                posted[i].error.get_or_insert(e);
            }
        }
        if posted[i].error.is_none() {
            posted[i].posted_at_s = Some(t0.elapsed().as_secs_f64());
        }
    }
    let _ = done.wait_for(|d| *d).await;
    if let Some(id) = live {
        if let Err(e) = grid.cancel(&id).await {
            tracing::warn!("bench: could not cancel the scenario's last envelope: {e}");
        }
    }
    posted
}

/// One tier's serving figures within a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierWindow {
    pub tier: String,
    pub completed: usize,
    pub failed: usize,
    pub output_throughput: f64,
    pub p99_ttft_ms: f64,
    pub p99_e2el_ms: f64,
}

/// A step and what followed it until the next step (or the end of the run).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepCompliance {
    pub step: Step,
    pub posted: Posted,
    pub end_s: f64,
    /// Sent → the status shows the new cap as its target (resolution: the sample interval).
    pub ack_s: Option<f64>,
    /// Sent → the 1 s average power is at or under the step's cap and stays there until the
    /// step ends (None: it never settled).
    pub settle_s: Option<f64>,
    /// Time (between samples) the 1 s average was over the cap in force.
    pub seconds_over_cap: f64,
    pub mean_power_watts: Option<f64>,
    pub max_power_watts: Option<f64>,
    /// Requests sent during the step, by tier ("all" when the run has no tiers).
    pub tiers: Vec<TierWindow>,
}

/// The whole run's compliance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Compliance {
    pub scenario: String,
    pub seconds_capped: f64,
    pub seconds_over_cap: f64,
    pub steps: Vec<StepCompliance>,
}

/// Time over the cap between samples in `[from, to)`: each sample's state holds until the next.
fn over_cap(samples: &[ProbeSample], from: f64, to: f64) -> (f64, f64) {
    let (mut capped, mut over) = (0.0, 0.0);
    for w in samples.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let dt = (b.t_s.min(to) - a.t_s.max(from)).max(0.0);
        if let Some(cap) = a.cap_watts {
            capped += dt;
            if a.power_watts.is_some_and(|p| p > cap) {
                over += dt;
            }
        }
    }
    (capped, over)
}

/// The first sample from which power stays at or under `cap` to the end of `within` (a
/// settling time: dipping under and rising again does not count).
fn settled(within: &[&ProbeSample], cap: f64) -> Option<f64> {
    let over = |s: &&ProbeSample| s.power_watts.is_some_and(|p| p > cap);
    match within.iter().rposition(over) {
        None => within.first().map(|s| s.t_s),
        Some(i) => within.get(i + 1).map(|s| s.t_s),
    }
}

/// Compliance per step, from the power feed's samples and the requests' outcomes.
pub fn compliance(
    scenario: &EnvelopeScenario,
    posted: &[Posted],
    samples: &[ProbeSample],
    outcomes: &[RequestOutcome],
    duration_s: f64,
) -> Compliance {
    let steps = scenario
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let end_s = scenario
                .steps
                .get(i + 1)
                .map_or(duration_s, |n| n.at_s)
                .min(duration_s);
            let posted = posted.get(i).cloned().unwrap_or_default();
            let before = i.checked_sub(1).and_then(|p| scenario.steps[p].cap_watts);
            step_compliance(step, before, posted, end_s, samples, outcomes)
        })
        .collect();
    let (capped, over) = over_cap(samples, 0.0, duration_s);
    Compliance {
        scenario: scenario.name.clone(),
        seconds_capped: capped,
        seconds_over_cap: over,
        steps,
    }
}

/// `before` is the cap of the step before (what a lifted cap moves away from: the server's
/// default cap may be any value, or none).
fn step_compliance(
    step: &Step,
    before: Option<f64>,
    posted: Posted,
    end_s: f64,
    samples: &[ProbeSample],
    outcomes: &[RequestOutcome],
) -> StepCompliance {
    let from = posted.sent_at_s.unwrap_or(step.at_s);
    let within: Vec<&ProbeSample> = samples
        .iter()
        .filter(|s| s.t_s >= from && s.t_s < end_s)
        .collect();
    let first = |pred: &dyn Fn(&ProbeSample) -> bool| {
        posted.posted_at_s?;
        within.iter().find(|s| pred(s)).map(|s| s.t_s - from)
    };
    let same = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() < 0.5,
        (a, b) => a.is_none() && b.is_none(),
    };
    let ack_s = match step.cap_watts {
        Some(_) => first(&|s| same(s.cap_target_watts, step.cap_watts)),
        None => first(&|s| !same(s.cap_target_watts, before)),
    };
    let settle_s = step
        .cap_watts
        .and_then(|cap| settled(&within, cap))
        .filter(|_| posted.posted_at_s.is_some())
        .map(|t| t - from);
    let powers: Vec<f64> = within.iter().filter_map(|s| s.power_watts).collect();
    StepCompliance {
        step: step.clone(),
        end_s,
        ack_s,
        settle_s,
        seconds_over_cap: over_cap(samples, from, end_s).1,
        mean_power_watts: (!powers.is_empty())
            .then(|| powers.iter().sum::<f64>() / powers.len() as f64),
        max_power_watts: powers.iter().copied().max_by(f64::total_cmp),
        tiers: tier_windows(outcomes, step.at_s, end_s),
        posted,
    }
}

fn tier_windows(outcomes: &[RequestOutcome], from: f64, to: f64) -> Vec<TierWindow> {
    let sent: Vec<RequestOutcome> = outcomes
        .iter()
        .filter(|o| o.start_s >= from && o.start_s < to)
        .cloned()
        .collect();
    let mut tiers: Vec<Option<&'static str>> = sent.iter().map(|o| o.tier).collect();
    tiers.sort();
    tiers.dedup();
    tiers
        .into_iter()
        .map(|tier| {
            let mine: Vec<RequestOutcome> =
                sent.iter().filter(|o| o.tier == tier).cloned().collect();
            let s = summarize(&mine, (to - from).max(1e-9), &[99.0], &[]);
            TierWindow {
                tier: tier.unwrap_or("all").to_string(),
                completed: s.completed,
                failed: s.failed,
                output_throughput: s.output_throughput,
                p99_ttft_ms: s.percentile_ms(Metric::Ttft, 99.0).unwrap_or(0.0),
                p99_e2el_ms: s.percentile_ms(Metric::E2el, 99.0).unwrap_or(0.0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCENARIO: &str = r#"
name = "step-down"
[[step]]
at_seconds = 0
cap_watts = 400
[[step]]
at_seconds = 2
cap_watts = 200
ramp_seconds = 0
[[step]]
at_seconds = 4
"#;

    #[test]
    fn scenarios_parse_and_refuse_bad_steps() {
        let s = EnvelopeScenario::parse(SCENARIO).unwrap();
        assert_eq!(s.name, "step-down");
        assert_eq!(s.steps.len(), 3);
        assert_eq!(s.steps[2].cap_watts, None);
        for bad in [
            "name = \"x\"\nstep = []",
            "name = \"x\"\n[[step]]\nat_seconds = 1\ncap_watts = -5",
            "name = \"x\"\n[[step]]\nat_seconds = 2\n[[step]]\nat_seconds = 1",
            "name = \"x\"\n[[step]]\nat_seconds = 0\ncap = 5",
        ] {
            assert!(EnvelopeScenario::parse(bad).is_err(), "{bad}");
        }
    }

    fn sample(t_s: f64, power: f64, cap: Option<f64>, target: Option<f64>) -> ProbeSample {
        ProbeSample {
            t_s,
            power_watts: Some(power),
            cap_watts: cap,
            cap_target_watts: target,
            energy_joules: None,
        }
    }

    #[test]
    fn response_times_and_time_over_cap_per_step() {
        let s = EnvelopeScenario::parse(SCENARIO).unwrap();
        let posted: Vec<Posted> = [0.05, 2.05, 4.05]
            .iter()
            .map(|&t| Posted {
                sent_at_s: Some(t),
                posted_at_s: Some(t + 0.01),
                envelope_id: Some("e".into()),
                error: None,
            })
            .collect();
        // Power 300 W under the 400 W cap; at 2.05 s the cap becomes 200 W (seen at 2.25 s),
        // power comes down to 190 W by 3.05 s; the cap is lifted at 4.05 s.
        let mut samples = vec![sample(0.0, 300.0, None, None)];
        samples.extend((1..20).map(|i| sample(i as f64 * 0.1, 300.0, Some(400.0), Some(400.0))));
        samples.push(sample(2.05, 300.0, Some(400.0), Some(400.0)));
        samples
            .extend((0..8).map(|i| sample(2.25 + i as f64 * 0.1, 300.0, Some(200.0), Some(200.0))));
        samples.push(sample(3.05, 190.0, Some(200.0), Some(200.0)));
        samples.push(sample(4.25, 190.0, None, None));
        let ok = RequestOutcome {
            tier: Some("flexible"),
            start_s: 2.5,
            success: true,
            ttft_s: 0.1,
            latency_s: 0.5,
            output_tokens: 4,
            ..Default::default()
        };
        let c = compliance(&s, &posted, &samples, &[ok], 5.0);
        assert!((c.steps[0].ack_s.unwrap() - 0.05).abs() < 1e-9);
        assert!((c.steps[0].settle_s.unwrap() - 0.05).abs() < 1e-9);
        let down = &c.steps[1];
        assert!((down.ack_s.unwrap() - 0.2).abs() < 1e-9);
        assert!((down.settle_s.unwrap() - 1.0).abs() < 1e-9);
        // Over the 200 W cap from 2.25 s to 3.05 s.
        assert!((down.seconds_over_cap - 0.8).abs() < 1e-9);
        assert!((c.seconds_over_cap - 0.8).abs() < 1e-9);
        assert_eq!(down.max_power_watts, Some(300.0));
        assert_eq!(down.tiers.len(), 1);
        assert_eq!(
            (down.tiers[0].tier.as_str(), down.tiers[0].completed),
            ("flexible", 1)
        );
        // The lift: acknowledged when the status shows no cap; no settle time.
        assert!((c.steps[2].ack_s.unwrap() - 0.2).abs() < 1e-9);
        assert_eq!(c.steps[2].settle_s, None);
        // Dipping under the cap and rising over it again is not settling.
        let mut bouncing = samples.clone();
        bouncing.push(sample(3.5, 250.0, Some(200.0), Some(200.0)));
        bouncing.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
        let b = compliance(&s, &posted, &bouncing, &[], 5.0);
        assert_eq!(b.steps[1].settle_s, None);
        // A step that was never posted has no response times.
        let unposted = compliance(&s, &[], &samples, &[], 5.0);
        assert_eq!(unposted.steps[1].ack_s, None);
    }
}
