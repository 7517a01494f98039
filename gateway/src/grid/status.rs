//! What `GET /v1/grid/status` reports and where each figure comes from: power from the power
//! monitor's samples, the operating point (the controller's last `Decision`) and compliance from the controller (both published
//! over `watch` channels). Whatever has not been published yet is `null`, never a guess.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::envelope::Origin;
use super::openadr::VenStatus;
use super::schedule::{CapNow, NextChange};
use crate::power::controller::{OperatingPoint, PowerWindow};
use crate::power::PowerSample;

/// How well the cap has been kept, as the controller counts it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Compliance {
    /// Whole 1 s windows observed while a cap was in force, and those whose mean power was
    /// over the cap.
    pub windows_capped: u64,
    pub windows_above_cap: u64,
    pub seconds_above_cap: f64,
    /// The window length (1 s).
    pub window_seconds: f64,
}

/// The window "average power" is taken over.
pub const AVERAGE_WINDOW: Duration = Duration::from_secs(1);

/// The power channel's recent totals (for the 1 s average), kept by a task that follows it.
#[derive(Default)]
pub struct FollowedPower {
    window: Mutex<PowerWindow>,
}

impl FollowedPower {
    pub fn push(&self, at: Instant, watts: f64) {
        self.window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(at, watts);
    }

    /// Mean of the samples within `AVERAGE_WINDOW` of the newest one.
    pub fn average(&self) -> Option<f64> {
        self.window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .mean_watts(AVERAGE_WINDOW)
    }

    /// Follows `rx` until its sender is gone, recording every sample's total.
    pub fn follow(
        self: Arc<Self>,
        mut rx: watch::Receiver<Option<PowerSample>>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let latest = rx
                    .borrow_and_update()
                    .as_ref()
                    .map(|s| (s.at, s.total_watts()));
                if let Some((at, watts)) = latest {
                    self.push(at, watts);
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
    }
}

/// Everything the status document is made of, gathered at one instant.
pub struct StatusInputs<'a> {
    pub at_unix: f64,
    pub cap: &'a CapNow,
    pub next_change: Option<&'a NextChange>,
    pub default_cap: Option<f64>,
    pub sample: Option<&'a PowerSample>,
    pub average_watts: Option<f64>,
    pub operating_point: Option<&'a OperatingPoint>,
    pub compliance: Option<&'a Compliance>,
    /// Where the winning envelope came from.
    pub origin: Option<&'a Origin>,
    /// The OpenADR VEN, when it runs.
    pub openadr: Option<&'a VenStatus>,
}

impl StatusInputs<'_> {
    pub fn document(&self) -> Value {
        let instant = self.sample.map(PowerSample::total_watts);
        let headroom = match (self.cap.cap_watts, self.average_watts) {
            (Some(cap), Some(avg)) => Some(cap - avg),
            _ => None,
        };
        let devices: Option<Vec<Value>> = self.sample.map(|s| {
            s.devices
                .iter()
                .map(|d| json!({"device": d.device, "power_watts": d.power_watts, "energy_joules": d.energy_joules,
                                "sm_clock_mhz": d.sm_clock_mhz, "power_limit_watts": d.power_limit_watts}))
                .collect()
        });
        let openadr = self.openadr.map(|v| {
            let mut doc = serde_json::to_value(v).unwrap_or(Value::Null);
            // Which event drives the cap now (null: none of the VTN's does).
            doc["driving_event_id"] = match self.origin {
                Some(Origin::OpenAdr(event)) => json!(event),
                _ => Value::Null,
            };
            doc
        });
        json!({
            "object": "grid.status",
            "at": self.at_unix,
            "cap": {
                "watts": self.cap.cap_watts,
                "target_watts": self.cap.target_watts,
                "envelope_id": self.cap.envelope_id,
                "origin": self.origin,
                "ramping": self.cap.ramping,
                "ramp_ends_at": self.cap.ramp_ends_at,
                "default_watts": self.default_cap,
            },
            "next_change": self.next_change,
            "power": {
                "source": self.sample.map(|s| s.source.as_str()),
                "measured": self.sample.map(|s| s.source.is_measured()),
                "instant_watts": instant,
                "average_1s_watts": self.average_watts,
                "sample_age_seconds": self.sample.map(|s| s.at.elapsed().as_secs_f64()),
                "devices": devices,
            },
            "headroom_watts": headroom,
            "operating_point": self.operating_point,
            "compliance": self.compliance,
            "openadr": openadr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_covers_the_last_second_only() {
        let w = FollowedPower::default();
        assert_eq!(w.average(), None);
        let t0 = Instant::now();
        w.push(t0, 1000.0);
        w.push(t0 + Duration::from_millis(1500), 100.0);
        w.push(t0 + Duration::from_millis(2000), 300.0);
        assert_eq!(w.average(), Some(200.0));
    }

    #[test]
    fn unknown_figures_are_null() {
        let cap = CapNow {
            cap_watts: None,
            target_watts: None,
            envelope_id: None,
            ramping: false,
            ramp_ends_at: None,
        };
        let doc = StatusInputs {
            at_unix: 1.0,
            cap: &cap,
            next_change: None,
            default_cap: None,
            sample: None,
            average_watts: None,
            operating_point: None,
            compliance: None,
            origin: None,
            openadr: None,
        }
        .document();
        for pointer in [
            "/cap/watts",
            "/power/instant_watts",
            "/power/source",
            "/headroom_watts",
            "/operating_point",
            "/compliance",
            "/next_change",
            "/cap/origin",
            "/openadr",
        ] {
            assert_eq!(doc.pointer(pointer), Some(&Value::Null), "{pointer}");
        }
    }
}
