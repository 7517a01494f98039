//! Reports back to the VTN: for each event that asks for USAGE or DEMAND, one reading per
//! interval once it is over (open-ended intervals in fixed windows), from the energy history.
//! Readings wait here until the VTN has stored them, so a dropped link loses none.

use std::collections::{BTreeMap, HashMap};

use openleadr_wire::event::EventId;
use openleadr_wire::interval::{Interval as WireInterval, IntervalPeriod};
use openleadr_wire::report::{
    ReadingType, ReportPayloadDescriptor, ReportRequest, ReportResource, ReportType, ResourceName,
};

use openleadr_wire::values_map::{Value, ValueType, ValuesMap};
use openleadr_wire::Unit;

use super::energy::EnergyHistory;
use super::mapping::{MappedEvent, ReportKind, Window};
use crate::power::EnergySource;

/// A reading is taken this long after its interval ends, so the sensor's last samples are in.
const SETTLE_SECONDS: f64 = 1.0;
/// Intervals the history covers less than this share of are not reported (a restart, or an
/// event that started before gridserve did): a half-measured reading would mislead.
const MIN_COVERAGE: f64 = 0.5;
/// Readings further back than this are not taken (the history does not reach them anyway).
pub const HISTORY_SECONDS: f64 = 86_400.0;

/// One interval's measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub interval_id: i32,
    pub start: f64,
    pub end: f64,
    pub demand_kw: f64,
    pub usage_kwh: f64,
}

#[derive(Default)]
struct EventReports {
    /// The VTN's id for this event's report, once created (later readings update it).
    report_id: Option<String>,
    readings: BTreeMap<(i64, i32), Reading>,
    /// Windows looked at and skipped for lack of measurements.
    skipped: Vec<(i64, i32)>,
    /// Readings the VTN has not stored yet.
    dirty: bool,
}

/// A report to send: create (no id yet) or update.
pub struct Outgoing {
    pub event_id: String,
    pub report_id: Option<String>,
    pub request: ReportRequest,
}

#[derive(Default)]
pub struct ReportBook {
    events: HashMap<String, EventReports>,
    pub posted: u64,
    pub failed: u64,
}

/// Report windows of an event: its bounded intervals, and open-ended ones cut into
/// `open_window` pieces (numbered on from the interval's id).
fn report_windows(windows: &[Window], now: f64, open_window: f64) -> Vec<Reading> {
    let mut out = vec![];
    for w in windows {
        match w.end {
            Some(end) => out.push(blank(w.interval_id, w.start, end)),
            None => {
                let pieces = ((now - w.start) / open_window).floor().max(0.0) as i32;
                for k in 0..pieces.min(10_000) {
                    let start = w.start + open_window * f64::from(k);
                    out.push(blank(w.interval_id + k, start, start + open_window));
                }
            }
        }
    }
    out
}

fn blank(interval_id: i32, start: f64, end: f64) -> Reading {
    Reading {
        interval_id,
        start,
        end,
        demand_kw: 0.0,
        usage_kwh: 0.0,
    }
}

impl ReportBook {
    /// Takes the readings that have become due for `events`, and forgets events that are gone.
    pub fn measure(
        &mut self,
        events: &[MappedEvent],
        history: &EnergyHistory,
        now: f64,
        open_window: f64,
    ) {
        self.events
            .retain(|id, _| events.iter().any(|e| &e.event_id == id));
        for event in events.iter().filter(|e| !e.reports.is_empty()) {
            let book = self.events.entry(event.event_id.clone()).or_default();
            for mut r in report_windows(&event.windows, now, open_window) {
                let key = ((r.start * 1000.0) as i64, r.interval_id);
                let due = r.end + SETTLE_SECONDS <= now && r.end > now - HISTORY_SECONDS;
                if !due || book.readings.contains_key(&key) || book.skipped.contains(&key) {
                    continue;
                }
                let length = r.end - r.start;
                match history.between(r.start, r.end) {
                    Some(m) if m.covered_seconds >= MIN_COVERAGE * length => {
                        r.demand_kw = m.joules / m.covered_seconds / 1000.0;
                        r.usage_kwh = r.demand_kw * length / 3600.0;
                        book.readings.insert(key, r);
                        book.dirty = true;
                    }
                    _ => book.skipped.push(key),
                }
            }
        }
    }

    /// Reports with readings the VTN does not have yet.
    pub fn outgoing(
        &self,
        events: &[MappedEvent],
        ven_name: &str,
        source: Option<EnergySource>,
    ) -> Vec<Outgoing> {
        events
            .iter()
            .filter_map(|e| {
                let book = self.events.get(&e.event_id).filter(|b| b.dirty)?;
                let readings: Vec<&Reading> = book.readings.values().collect();
                // Mapped events come from parsed wire events, so their ids parse back.
                let wire_id = e.event_id.parse().ok()?;
                Some(Outgoing {
                    event_id: e.event_id.clone(),
                    report_id: book.report_id.clone(),
                    request: request(e, wire_id, &readings, ven_name, source),
                })
            })
            .collect()
    }

    /// The VTN stored the report (`report_id` is its id).
    pub fn stored(&mut self, event_id: &str, report_id: String) {
        if let Some(book) = self.events.get_mut(event_id) {
            book.report_id = Some(report_id);
            book.dirty = false;
        }
        self.posted += 1;
    }

    pub fn pending(&self) -> usize {
        self.events.values().filter(|b| b.dirty).count()
    }
}

/// The report document: one resource (this VEN), one interval per reading, values in kW and
/// kWh, named and typed after the energy source (measured = DIRECT_READ, else ESTIMATED).
fn request(
    event: &MappedEvent,
    event_id: EventId,
    readings: &[&Reading],
    ven_name: &str,
    source: Option<EnergySource>,
) -> ReportRequest {
    let source_name = source.map_or("unknown", |s| s.as_str());
    let reading_type = if source.is_some_and(|s| s.is_measured()) {
        ReadingType::DirectRead
    } else {
        ReadingType::Estimated
    };
    let descriptor = |payload_type, units| ReportPayloadDescriptor {
        reading_type: reading_type.clone(),
        units: Some(units),
        ..ReportPayloadDescriptor::new(payload_type)
    };
    let mut descriptors = vec![];
    for kind in &event.reports {
        descriptors.push(match kind {
            ReportKind::Usage => descriptor(ReportType::Usage, Unit::KWH),
            ReportKind::Demand => descriptor(ReportType::Demand, Unit::KW),
        });
    }
    let intervals = readings
        .iter()
        .map(|r| WireInterval {
            id: r.interval_id,
            interval_period: Some(period(r.start, r.end)),
            payloads: event
                .reports
                .iter()
                .map(|kind| match kind {
                    ReportKind::Usage => values("USAGE", r.usage_kwh),
                    ReportKind::Demand => values("DEMAND", r.demand_kw),
                })
                .collect(),
        })
        .collect();
    ReportRequest {
        event_id,
        client_name: ven_name.to_owned(),
        report_name: Some(format!("gridserve {ven_name} energy ({source_name})")),
        payload_descriptors: Some(descriptors),
        resources: vec![ReportResource {
            resource_name: ResourceName::Private(ven_name.to_owned()),
            interval_period: None,
            intervals,
        }],
    }
}

fn values(kind: &str, value: f64) -> ValuesMap {
    ValuesMap {
        value_type: ValueType(kind.to_owned()),
        values: vec![Value::Number(value)],
    }
}

fn period(start: f64, end: f64) -> IntervalPeriod {
    let at = chrono::DateTime::from_timestamp_millis((start * 1000.0).round() as i64)
        .unwrap_or_default();
    let millis = ((end - start) * 1000.0).round() as i64;
    let text = if millis % 1000 == 0 {
        format!("PT{}S", millis / 1000)
    } else {
        format!("PT{}.{:03}S", millis / 1000, millis % 1000)
    };
    IntervalPeriod {
        start: at,
        duration: text.parse().ok(),
        randomize_start: None,
    }
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
