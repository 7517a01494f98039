//! The VEN task: polls the VTN's programs and events, keeps the envelope store in step with
//! them, puts the safe limit in place when the VTN stays unreachable, sends the reports the
//! events ask for, and publishes its status. One task; the store writes run on blocking
//! threads.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openleadr_client::{
    Client, ClientCredentials, EventClient, Filter, ReportClient, VirtualEndNode,
};
use openleadr_wire::ven::VenVenRequest;
use openleadr_wire::Event;
use tokio::sync::watch;

use super::config::OpenAdrConfig;
use super::energy::EnergyHistory;
use super::link::{Link, LinkState};
use super::mapping::{map_event, subscription_of, MappedEvent, MappingContext};
use super::notifier::{self, Push};
use super::reconcile::{comms_loss_envelope, envelopes_of, plan};
use super::report::{ReportBook, HISTORY_SECONDS};
use super::status::{EventStatus, ProgramStatus, VenStatus};
use crate::grid::envelope::{Interval, Origin};
use crate::grid::{now_unix, GridState};
use crate::metrics as m;
use crate::GatewayError;

type Vtn = Client<VirtualEndNode>;

/// Stops the VEN when dropped.
pub struct VenHandle {
    stop: watch::Sender<bool>,
}

impl Drop for VenHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Reads the secret, builds the client and starts the VEN on the current tokio runtime.
pub fn spawn(config: OpenAdrConfig, grid: GridState) -> Result<VenHandle, GatewayError> {
    let secret = config.client_secret.read()?;
    let http = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .connect_timeout(config.request_timeout)
        .build()
        .map_err(|e| GatewayError::OpenAdr(format!("building the HTTP client: {e}")))?;
    let credentials = ClientCredentials::new(config.client_id.clone(), secret.expose().to_owned());
    let client = Vtn::with_details(
        config.vtn_url.clone(),
        config.token_url.clone(),
        http,
        Some(credentials),
    );
    let history = Arc::new(Mutex::new(EnergyHistory::new(HISTORY_SECONDS)));
    follow_power(&grid, history.clone());
    let (stop, stopped) = watch::channel(false);
    let push = Push::default();
    // The socket read waits for the VTN for as long as it stays open: no request timeout.
    let socket_http = reqwest::Client::builder()
        .connect_timeout(config.request_timeout)
        .build()
        .map_err(|e| GatewayError::OpenAdr(format!("building the HTTP client: {e}")))?;
    tokio::spawn(notifier::run(
        config.clone(),
        secret,
        socket_http,
        push.clone(),
        stopped.clone(),
    ));
    tracing::info!(vtn = %config.vtn_url, ven = %config.ven_name, programs = ?config.programs, "OpenADR VEN starting");
    let ven = Ven::new(config, grid, client, history, push);
    tokio::spawn(ven.run(stopped));
    Ok(VenHandle { stop })
}

/// Keeps the energy history from the power monitor's samples.
fn follow_power(grid: &GridState, history: Arc<Mutex<EnergyHistory>>) {
    let mut rx = grid.power_feed();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let sample = rx.borrow_and_update().clone();
            if let Some(s) = sample {
                let unix = now_unix() - s.at.elapsed().as_secs_f64();
                let mut h = history.lock().unwrap_or_else(|p| p.into_inner());
                h.push(unix, s.total_energy_joules(), s.source);
            }
        }
    });
}

/// What one successful poll saw.
struct Polled {
    programs: Vec<ProgramStatus>,
    events: Vec<EventClient<VirtualEndNode>>,
}

struct Ven {
    config: OpenAdrConfig,
    grid: GridState,
    client: Vtn,
    history: Arc<Mutex<EnergyHistory>>,
    link: Link,
    book: ReportBook,
    reports: std::collections::HashMap<String, ReportClient<VirtualEndNode>>,
    /// Events as last seen (to report on them while the link is down too).
    followed: Vec<MappedEvent>,
    event_clients: Vec<EventClient<VirtualEndNode>>,
    status: VenStatus,
    /// IMPORT_CAPACITY_SUBSCRIPTION intervals as last seen.
    subscription: Vec<Interval>,
    registered: bool,
    /// Unix seconds of the next poll (wake-ups in between only check the grace period).
    next_poll_at: f64,
    push: Push,
}

impl Ven {
    fn new(
        config: OpenAdrConfig,
        grid: GridState,
        client: Vtn,
        history: Arc<Mutex<EnergyHistory>>,
        push: Push,
    ) -> Ven {
        let now = now_unix();
        let link = Link::new(
            now,
            config.poll_interval.as_secs_f64(),
            config.max_backoff.as_secs_f64(),
            config.comms_loss_grace.as_secs_f64(),
        );
        let status = VenStatus {
            vtn_url: config.vtn_url.to_string(),
            ven_name: config.ven_name.clone(),
            link: LinkState::Connecting,
            last_poll_at: None,
            last_success_at: None,
            last_error: None,
            consecutive_failures: 0,
            next_poll_at: Some(now),
            safe_limit_engaged: false,
            programs: config
                .programs
                .iter()
                .map(|name| ProgramStatus {
                    name: name.clone(),
                    id: None,
                })
                .collect(),
            events: vec![],
            reports_posted: 0,
            reports_failed: 0,
            reports_pending: 0,
            push_connected: false,
        };
        Ven {
            config,
            grid,
            client,
            history,
            link,
            book: ReportBook::default(),
            reports: Default::default(),
            followed: vec![],
            event_clients: vec![],
            status,
            subscription: vec![],
            registered: false,
            next_poll_at: now,
            push,
        }
    }

    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        self.grid.set_openadr_status(self.status.clone());
        loop {
            let polled = self.round().await;
            let now = now_unix();
            if polled {
                self.next_poll_at = now + self.link.next_delay(rand::random::<f64>());
            }
            let mut wake = self.next_poll_at;
            if matches!(
                self.link.state(now),
                LinkState::Connecting | LinkState::Degraded
            ) {
                // Failing: wake when the grace runs out, to put the safe limit in place on
                // time. (A healthy link only goes down through a failed poll.)
                wake = wake.min(self.link.down_at());
            }
            let wait = (wake - now).max(0.05);
            self.status.next_poll_at = Some(self.next_poll_at);
            self.publish(now);
            let wake = self.push.wake.clone();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(wait)) => {}
                // Pushed: something changed on the VTN (or its socket closed); poll now.
                _ = wake.notified() => self.next_poll_at = now_unix(),
                _ = stopped.changed() => break,
            }
        }
        tracing::info!("OpenADR VEN stopped");
    }

    /// One poll (or a wake-up to check the grace period), then reports; whether it polled.
    async fn round(&mut self) -> bool {
        let now = now_unix();
        let poll_due = self.next_poll_at <= now + 0.01;
        if poll_due {
            self.status.last_poll_at = Some(now);
            match self.poll().await {
                Ok(polled) => self.on_success(polled, now).await,
                Err(e) => self.on_failure(e),
            }
        }
        let now = now_unix();
        if self.link.state(now) == LinkState::Down {
            self.engage_safe_limit(now).await;
        }
        self.send_reports(now).await;
        poll_due
    }

    async fn poll(&mut self) -> Result<Polled, String> {
        let programs = self
            .client
            .get_program_list(Filter::none())
            .await
            .map_err(|e| format!("listing programs: {e}"))?;
        if !self.registered {
            self.register().await;
        }
        let mut polled = Polled {
            programs: vec![],
            events: vec![],
        };
        for name in &self.config.programs {
            let found = programs.iter().find(|p| &p.content().program_name == name);
            polled.programs.push(ProgramStatus {
                name: name.clone(),
                id: found.map(|p| p.id().to_string()),
            });
            if let Some(p) = found {
                let events = self
                    .client
                    .get_event_list(Some(p.id()), Filter::none())
                    .await
                    .map_err(|e| format!("listing events of {name}: {e}"))?;
                polled.events.extend(events);
            }
        }
        Ok(polled)
    }

    /// Makes this VEN known to the VTN by name (so the utility can target it); a VTN that
    /// refuses is logged, not fatal: events without targets still reach every VEN.
    async fn register(&mut self) {
        self.registered = true;
        match self.client.get_ven_by_name(&self.config.ven_name).await {
            Ok(_) => {}
            Err(openleadr_client::Error::ObjectNotFound) => {
                let request = VenVenRequest {
                    ven_name: self.config.ven_name.clone(),
                    attributes: None,
                };
                if let Err(e) = self.client.create_ven(request).await {
                    tracing::warn!("OpenADR: cannot register VEN {}: {e}", self.config.ven_name);
                }
            }
            Err(e) => tracing::warn!("OpenADR: cannot look up VEN {}: {e}", self.config.ven_name),
        }
    }

    fn on_failure(&mut self, error: String) {
        self.link.failure();
        metrics::counter!(m::OPENADR_POLLS, "result" => "error").increment(1);
        if self.link.consecutive_failures() == 1 {
            tracing::warn!("OpenADR: VTN unreachable: {error}");
        }
        self.status.last_error = Some(error);
    }

    async fn on_success(&mut self, polled: Polled, now: f64) {
        self.link.success(now);
        metrics::counter!(m::OPENADR_POLLS, "result" => "ok").increment(1);
        if self.status.consecutive_failures > 0 {
            tracing::info!("OpenADR: VTN reachable again; reconciling");
        }
        self.status.last_success_at = Some(now);
        self.status.last_error = None;
        self.status.programs = polled.programs;
        let events: Vec<Event> = polled.events.iter().map(wire_event).collect();
        let (followed, statuses, wanted) = self.map_all(&events, now);
        let refused: Vec<String> = statuses
            .iter()
            .filter(|s| s.state == "refused")
            .map(|s| s.event_id.clone())
            .collect();
        let grid = self.grid.clone();
        let applied = blocking(move || {
            let stored = grid.store().live_from("openadr", now)?;
            let mut p = plan(&wanted, &stored, &refused, now);
            // The link is up: the comms-loss safe limit goes.
            p.cancel.extend(
                stored
                    .iter()
                    .filter(|e| e.origin == Origin::OpenAdrCommsLoss)
                    .map(|e| e.id.clone()),
            );
            if !p.is_empty() {
                grid.store().replace(&p.cancel, &p.insert, "openadr", now)?;
                grid.refresh(now)?;
                tracing::info!(cancelled = ?p.cancel, inserted = ?p.insert.iter().map(|e| &e.id).collect::<Vec<_>>(), "OpenADR: envelopes updated");
            }
            Ok(())
        })
        .await;
        if let Err(e) = applied {
            tracing::error!("OpenADR: cannot apply the VTN's events: {e}");
            self.status.last_error = Some(format!("applying events: {e}"));
            return;
        }
        self.status.safe_limit_engaged = false;
        self.status.events = statuses;
        self.followed = followed;
        self.event_clients = polled.events;
    }

    /// Maps every event: followed ones with their envelopes, refused ones with a reason.
    fn map_all(
        &mut self,
        events: &[Event],
        now: f64,
    ) -> (
        Vec<MappedEvent>,
        Vec<EventStatus>,
        Vec<crate::grid::Envelope>,
    ) {
        let ven_name = &self.config.ven_name;
        self.subscription = events
            .iter()
            .flat_map(|e| subscription_of(e, now, ven_name))
            .collect();
        let known = self.subscription.clone();
        let fallback = self.grid.config().default_cap();
        let subscription_at = move |t: f64| subscription_in_force(&known, t).or(fallback);
        let ctx = MappingContext {
            now,
            ven_name,
            simple_level_fractions: self.config.simple_level_fractions,
            subscription_at: &subscription_at,
        };
        let ramp = self.grid.config().ramp_default_seconds;
        let (mut followed, mut statuses, mut wanted) = (vec![], vec![], vec![]);
        for event in events {
            let mapped =
                map_event(event, &ctx).and_then(|m| envelopes_of(&m, ramp, now).map(|e| (m, e)));
            let mut status = EventStatus {
                event_id: event.id.to_string(),
                program_id: event.content.program_id.to_string(),
                name: event.content.event_name.clone(),
                priority: Option::<i64>::from(event.content.priority)
                    .unwrap_or(super::mapping::UNSPECIFIED_PRIORITY),
                state: "followed",
                reason: None,
                ignored_payloads: vec![],
                reports: false,
            };
            match mapped {
                Ok((m, envelopes)) => {
                    status.ignored_payloads = m.ignored.clone();
                    status.reports = !m.reports.is_empty();
                    wanted.extend(envelopes);
                    followed.push(m);
                }
                Err(reason) => {
                    tracing::warn!(event = %event.id, "OpenADR: event refused: {reason}");
                    status.state = "refused";
                    status.reason = Some(reason);
                }
            }
            statuses.push(status);
        }
        let refused = statuses.iter().filter(|s| s.state == "refused").count();
        metrics::gauge!(m::OPENADR_EVENTS, "state" => "followed").set(followed.len() as f64);
        metrics::gauge!(m::OPENADR_EVENTS, "state" => "refused").set(refused as f64);
        (followed, statuses, wanted)
    }

    /// The safe limit: the lower of the configured one and the subscription in force.
    async fn engage_safe_limit(&mut self, now: f64) {
        let subscription = subscription_in_force(&self.subscription, now)
            .or(self.grid.config().subscription_watts);
        // With neither, nothing to fall back to: the store's default cap already applies.
        let Some(cap) = [self.config.safe_limit_watts, subscription]
            .into_iter()
            .flatten()
            .min_by(f64::total_cmp)
        else {
            return;
        };
        let grid = self.grid.clone();
        let engaged = blocking(move || {
            let origin = Origin::OpenAdrCommsLoss.as_string();
            let live = grid.store().live_from(&origin, now)?;
            if live.is_empty() {
                grid.store()
                    .insert(&comms_loss_envelope(cap, now), "openadr", now)?;
                grid.refresh(now)?;
                tracing::warn!(
                    cap_watts = cap,
                    "OpenADR: VTN unreachable past the grace period; safe limit in force"
                );
            }
            Ok(())
        })
        .await;
        match engaged {
            Ok(()) => self.status.safe_limit_engaged = true,
            Err(e) => tracing::error!("OpenADR: cannot store the safe limit: {e}"),
        }
    }

    async fn send_reports(&mut self, now: f64) {
        if !self.config.reports {
            return;
        }
        let source = {
            let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
            let open_window = self.config.open_interval_report.as_secs_f64();
            self.book.measure(&self.followed, &h, now, open_window);
            h.source
        };
        if self.link.state(now) != LinkState::Up {
            return; // kept until the VTN is back
        }
        for out in self
            .book
            .outgoing(&self.followed, &self.config.ven_name, source)
        {
            let sent = match self.reports.get_mut(&out.event_id) {
                Some(report) => {
                    *report.content_mut() = out.request;
                    let updated = report.update().await.map(|()| report.id().to_string());
                    if updated.as_ref().is_err_and(|e| e.is_not_found()) {
                        // Deleted on the VTN: the next round creates it again, whole.
                        self.reports.remove(&out.event_id);
                    }
                    updated
                }
                None => {
                    let Some(event) = self
                        .event_clients
                        .iter()
                        .find(|c| c.id().as_str() == out.event_id)
                    else {
                        continue;
                    };
                    match event.create_report(out.request).await {
                        Ok(report) => {
                            let id = report.id().to_string();
                            self.reports.insert(out.event_id.clone(), report);
                            Ok(id)
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            match sent {
                Ok(id) => {
                    self.book.stored(&out.event_id, id);
                    metrics::counter!(m::OPENADR_REPORTS, "result" => "ok").increment(1);
                }
                Err(e) => {
                    self.book.failed += 1;
                    metrics::counter!(m::OPENADR_REPORTS, "result" => "error").increment(1);
                    tracing::warn!(event = %out.event_id, "OpenADR: report not stored: {e}");
                }
            }
        }
    }

    fn publish(&mut self, now: f64) {
        let state = self.link.state(now);
        self.status.link = state;
        self.status.consecutive_failures = self.link.consecutive_failures();
        self.status.reports_posted = self.book.posted;
        self.status.reports_failed = self.book.failed;
        self.status.reports_pending = self.book.pending();
        self.status.push_connected = self
            .push
            .connected
            .load(std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!(m::OPENADR_LINK_UP).set(if state == LinkState::Up { 1.0 } else { 0.0 });
        metrics::gauge!(m::OPENADR_SAFE_LIMIT).set(if self.status.safe_limit_engaged {
            1.0
        } else {
            0.0
        });
        self.grid.set_openadr_status(self.status.clone());
    }
}

fn wire_event(client: &EventClient<VirtualEndNode>) -> Event {
    Event {
        id: client.id().clone(),
        created_date_time: client.created_date_time(),
        modification_date_time: client.modification_date_time(),
        content: client.content().clone(),
    }
}

/// The lowest subscription in force at `t` among the events' subscription intervals.
fn subscription_in_force(intervals: &[Interval], t: f64) -> Option<f64> {
    intervals
        .iter()
        .filter(|i| i.contains(t))
        .map(|i| i.cap_watts)
        .min_by(f64::total_cmp)
}

async fn blocking(
    f: impl FnOnce() -> Result<(), GatewayError> + Send + 'static,
) -> Result<(), GatewayError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| GatewayError::Store(format!("grid store task failed: {e}")))?
}
