//! The grid side: power envelopes (a prioritised schedule of caps), their persistent store,
//! operator authentication, and the status document. The power controller reads the live
//! envelopes from [`GridState::envelopes`] and publishes what it does through [`GridFeeds`].

pub mod auth;
pub mod config;
pub mod envelope;
pub mod openadr;
pub mod request;
pub mod schedule;
pub mod status;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::watch;

pub use envelope::{Envelope, Interval, Origin};
pub use schedule::{CapNow, NextChange, Schedule};
pub use status::Compliance;
pub use store::Store;

use crate::power::controller::OperatingPoint;
use crate::power::PowerSample;
use crate::GatewayError;
use status::{FollowedPower, StatusInputs};

/// The `[grid]` config section, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct GridConfig {
    /// Holds `grid.sqlite3` (envelopes and the audit log).
    pub data_dir: PathBuf,
    /// The contracted import limit; the default cap when no envelope is active.
    pub subscription_watts: Option<f64>,
    /// The most the hardware can draw (until the power backend reports it).
    pub hardware_max_watts: Option<f64>,
    /// The lowest cap the power limit can enforce; lower caps are accepted with a warning.
    pub hardware_min_watts: Option<f64>,
    /// `ramp_seconds` of an envelope that gives none.
    pub ramp_default_seconds: f64,
}

impl GridConfig {
    /// With nothing active: the lower of the subscription and the hardware maximum; `None`
    /// (unbounded) when neither is known.
    pub fn default_cap(&self) -> Option<f64> {
        match (self.subscription_watts, self.hardware_max_watts) {
            (Some(s), Some(h)) => Some(s.min(h)),
            (s, h) => s.or(h),
        }
    }
}

/// The senders the power monitor and the controller publish through. Dropping one freezes
/// its figure at the last value sent (`null` if none was).
pub struct GridFeeds {
    pub power: watch::Sender<Option<PowerSample>>,
    pub operating_point: watch::Sender<Option<OperatingPoint>>,
    pub compliance: watch::Sender<Option<Compliance>>,
}

#[derive(Clone)]
pub struct GridState {
    inner: Arc<Inner>,
}

struct Inner {
    config: GridConfig,
    /// The lowest cap the power limits can enforce, as the power backend reported it (used
    /// when `hardware_min_watts` is not configured).
    learned_min_watts: std::sync::RwLock<Option<f64>>,
    store: Store,
    live: watch::Sender<Arc<[Envelope]>>,
    power: watch::Receiver<Option<PowerSample>>,
    window: Arc<FollowedPower>,
    operating_point: watch::Receiver<Option<OperatingPoint>>,
    compliance: watch::Receiver<Option<Compliance>>,
    /// The OpenADR VEN's last published status (`None`: the VEN is off).
    openadr: std::sync::RwLock<Option<openadr::VenStatus>>,
}

pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl GridState {
    /// Opens the store and loads the live envelopes, so the cap in force is known before the
    /// first request. Blocks on disk I/O; must run inside a tokio runtime (it starts the task
    /// that keeps the 1 s power window).
    pub fn open(config: GridConfig) -> Result<(GridState, GridFeeds), GatewayError> {
        let store = Store::open(&config.data_dir)?;
        let (live, _) = watch::channel(Arc::from(Vec::new()));
        let (power_tx, power) = watch::channel(None);
        let (op_tx, operating_point) = watch::channel(None);
        let (compliance_tx, compliance) = watch::channel(None);
        let window = Arc::new(FollowedPower::default());
        window.clone().follow(power.clone());
        let state = GridState {
            inner: Arc::new(Inner {
                config,
                learned_min_watts: std::sync::RwLock::new(None),
                store,
                live,
                power,
                window,
                operating_point,
                compliance,
                openadr: std::sync::RwLock::new(None),
            }),
        };
        let now = now_unix();
        state.refresh(now)?;
        let cap = state.cap_at(now).0;
        tracing::info!(
            store = %state.inner.store.path().display(),
            live_envelopes = state.inner.live.borrow().len(),
            cap_watts = ?cap.cap_watts,
            envelope = ?cap.envelope_id,
            "grid store loaded"
        );
        let feeds = GridFeeds {
            power: power_tx,
            operating_point: op_tx,
            compliance: compliance_tx,
        };
        Ok((state, feeds))
    }

    pub fn config(&self) -> &GridConfig {
        &self.inner.config
    }

    /// The power backend's lowest enforceable cap (all devices' minimum power limits).
    pub fn learn_hardware_min_watts(&self, watts: f64) {
        if let Ok(mut min) = self.inner.learned_min_watts.write() {
            *min = Some(watts);
        }
    }

    /// The config, with what the hardware reported filled in where the file is silent; what
    /// a new envelope is checked against.
    pub fn effective_config(&self) -> GridConfig {
        let mut config = self.inner.config.clone();
        if config.hardware_min_watts.is_none() {
            config.hardware_min_watts = self.inner.learned_min_watts.read().ok().and_then(|m| *m);
        }
        config
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The envelopes that can still matter (not cancelled, not long over); updated after
    /// every write. The power controller follows this.
    pub fn envelopes(&self) -> watch::Receiver<Arc<[Envelope]>> {
        self.inner.live.subscribe()
    }

    /// Reloads the live envelopes from the store into the watch channel.
    pub fn refresh(&self, now: f64) -> Result<(), GatewayError> {
        let live = self
            .inner
            .store
            .live_since(now - schedule::LOOKBACK_SECONDS)?;
        self.inner.live.send_replace(Arc::from(live));
        Ok(())
    }

    pub fn cap_at(&self, now: f64) -> (CapNow, Option<NextChange>) {
        let live = self.inner.live.borrow().clone();
        let schedule = Schedule {
            envelopes: &live,
            default_cap: self.inner.config.default_cap(),
        };
        (schedule.cap_at(now), schedule.next_change_after(now))
    }

    /// The power monitor's samples (the VEN measures report intervals from them).
    pub fn power_feed(&self) -> watch::Receiver<Option<PowerSample>> {
        self.inner.power.clone()
    }

    pub fn set_openadr_status(&self, status: openadr::VenStatus) {
        if let Ok(mut slot) = self.inner.openadr.write() {
            *slot = Some(status);
        }
    }

    /// Where the winning envelope came from (`rest`, `openadr:<event>`, …).
    fn origin_of(&self, envelope_id: &str) -> Option<Origin> {
        let live = self.inner.live.borrow();
        live.iter()
            .find(|e| e.id == envelope_id)
            .map(|e| e.origin.clone())
    }

    /// The `GET /v1/grid/status` document.
    pub fn status(&self, now: f64) -> Value {
        let (cap, next) = self.cap_at(now);
        let sample = self.inner.power.borrow().clone();
        let operating_point = self.inner.operating_point.borrow().clone();
        let compliance = self.inner.compliance.borrow().clone();
        let origin = cap.envelope_id.as_deref().and_then(|id| self.origin_of(id));
        let openadr = self.inner.openadr.read().ok().and_then(|s| s.clone());
        StatusInputs {
            at_unix: now,
            cap: &cap,
            next_change: next.as_ref(),
            default_cap: self.inner.config.default_cap(),
            sample: sample.as_ref(),
            average_watts: self.inner.window.average(),
            operating_point: operating_point.as_ref(),
            compliance: compliance.as_ref(),
            origin: origin.as_ref(),
            openadr: openadr.as_ref(),
        }
        .document()
    }
}
