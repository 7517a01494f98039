//! OpenADR 3.1 events → envelope schedules, as pure functions of the event and `now`: which
//! caps apply when (IMPORT_CAPACITY_LIMIT, SIMPLE levels), the subscription
//! (IMPORT_CAPACITY_SUBSCRIPTION), and which intervals the VTN wants reports for. Timing rules
//! of the 3.1 spec: "do it now" starts, intervals that follow the previous one, per-interval
//! periods, multi-value payloads as equal sub-intervals, and `randomizeStart`.

use chrono::{DateTime, Datelike, Utc};
use openleadr_wire::event::{Event, EventInterval, EventType};
use openleadr_wire::interval::IntervalPeriod;
use openleadr_wire::report::ReportType;
use openleadr_wire::values_map::Value;
use openleadr_wire::Unit;
use sha2::{Digest, Sha256};

use super::duration::seconds_from;
use crate::grid::envelope::Interval;

/// Envelope priority of an event that gives none: OpenADR's "unspecified" is the lowest.
pub const UNSPECIFIED_PRIORITY: i64 = u32::MAX as i64;

/// What the mapping needs besides the event.
pub struct MappingContext<'a> {
    pub now: f64,
    /// Seeds `randomizeStart`, so each VEN gets its own offset and keeps it across polls.
    pub ven_name: &'a str,
    pub simple_level_fractions: [f64; 4],
    /// The subscription in force at a time (watts): SIMPLE levels are fractions of it.
    pub subscription_at: &'a dyn Fn(f64) -> Option<f64>,
}

/// One event interval as resolved: `[start, end)` in unix seconds, `None` = until replaced.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub interval_id: i32,
    pub start: f64,
    pub end: Option<f64>,
}

/// A report reading the VTN asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReportKind {
    /// Energy over the interval (kWh).
    Usage,
    /// Mean power over the interval (kW).
    Demand,
}

/// An event as gridserve follows it.
#[derive(Clone, Debug, PartialEq)]
pub struct MappedEvent {
    pub event_id: String,
    pub program_id: String,
    pub name: Option<String>,
    /// Lower number wins, as in OpenADR and in gridserve's envelopes.
    pub priority: i64,
    /// Caps (watts) in time order; intervals without a cap payload leave gaps.
    pub caps: Vec<Interval>,
    /// IMPORT_CAPACITY_SUBSCRIPTION (watts): the default limit while it is in force.
    pub subscription: Vec<Interval>,
    /// Every event interval (for reports), in order.
    pub windows: Vec<Window>,
    pub reports: Vec<ReportKind>,
    /// Payload types present but not acted on (PRICE, GHG, …), for the status document.
    pub ignored: Vec<String>,
}

/// The subscription intervals of an event alone (SIMPLE levels need the subscription of every
/// event, so it is gathered first). SIMPLE payloads are given a placeholder subscription here,
/// so an event that carries both still yields its subscription.
pub fn subscription_of(event: &Event, now: f64, ven_name: &str) -> Vec<Interval> {
    let placeholder = |_t: f64| Some(0.0);
    let ctx = MappingContext {
        now,
        ven_name,
        simple_level_fractions: [0.0; 4],
        subscription_at: &placeholder,
    };
    map_event(event, &ctx)
        .map(|m| m.subscription)
        .unwrap_or_default()
}

/// Maps one event; `Err` says why the event cannot be followed (it is then ignored whole, so
/// half an event never applies).
pub fn map_event(event: &Event, ctx: &MappingContext<'_>) -> Result<MappedEvent, String> {
    let content = &event.content;
    let event_id = event.id.as_str().to_owned();
    let intervals = content.intervals.as_deref().unwrap_or_default();
    if intervals.is_empty() {
        return Err("the event has no intervals".into());
    }
    let anchor = do_it_now_anchor(event, ctx.now);
    let jitter = randomize_fraction(ctx.ven_name, &event_id);
    let event_period = content.interval_period.as_ref();
    let mut mapped = MappedEvent {
        event_id,
        program_id: content.program_id.as_str().to_owned(),
        name: content.event_name.clone(),
        priority: Option::<i64>::from(content.priority).unwrap_or(UNSPECIFIED_PRIORITY),
        caps: vec![],
        subscription: vec![],
        windows: vec![],
        reports: report_kinds(event),
        ignored: vec![],
    };
    let limit_factor = limit_watts_per_unit(event)?;
    let mut previous_end: Option<Option<f64>> = None;
    for (k, interval) in intervals.iter().enumerate() {
        let own = interval.interval_period.as_ref();
        let period = own.or(if k == 0 { event_period } else { None });
        let start = match (period, previous_end) {
            (Some(p), _) => start_of(p, anchor, jitter)?,
            (None, Some(Some(end))) => end,
            (None, Some(None)) => {
                return Err(format!("interval {k} follows an open-ended interval"));
            }
            (None, None) => return Err("the first interval has no start".into()),
        };
        let duration = own
            .and_then(|p| p.duration.as_ref())
            .or(event_period.and_then(|p| p.duration.as_ref()))
            .or(content.duration.as_ref());
        let end = match duration {
            None => None,
            Some(d) => seconds_from(d, to_datetime(start))
                .map_err(|e| format!("interval {k}: {e}"))?
                .map(|secs| start + secs),
        };
        if end.is_some_and(|e| e <= start) {
            return Err(format!("interval {k} has no length"));
        }
        let window = Window {
            interval_id: interval.id,
            start,
            end,
        };
        add_payloads(&mut mapped, &window, interval, limit_factor, ctx)
            .map_err(|e| format!("interval {k}: {e}"))?;
        mapped.windows.push(window);
        previous_end = Some(end);
    }
    mapped.ignored.sort();
    mapped.ignored.dedup();
    Ok(mapped)
}

/// "Do it now" (`start` 0001-01-01) means from when the VTN issued the event: its
/// modification time, or our `now` if our clock is behind the VTN's.
fn do_it_now_anchor(event: &Event, now: f64) -> f64 {
    let modified = event.modification_date_time.timestamp_millis() as f64 / 1000.0;
    modified.min(now)
}

fn start_of(period: &IntervalPeriod, anchor: f64, jitter: f64) -> Result<f64, String> {
    let start = if period.start.year() <= 1 {
        anchor
    } else {
        period.start.timestamp_millis() as f64 / 1000.0
    };
    let randomize = match &period.randomize_start {
        Some(d) => seconds_from(d, period.start)
            .map_err(|e| format!("randomizeStart: {e}"))?
            .ok_or("randomizeStart is unbounded")?,
        None => 0.0,
    };
    Ok(start + jitter * randomize)
}

/// A fraction in [0, 1) fixed by the VEN's name and the event: the same offset on every poll,
/// a different one per VEN (which is the point of randomizing).
fn randomize_fraction(ven_name: &str, event_id: &str) -> f64 {
    let digest = Sha256::digest(format!("{ven_name}/{event_id}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

fn to_datetime(unix: f64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis((unix * 1000.0).round() as i64).unwrap_or_default()
}

/// Watts per unit of the IMPORT_CAPACITY_LIMIT values: the descriptor's units (KW when it
/// names none, as the 3.1 definitions do).
fn limit_watts_per_unit(event: &Event) -> Result<f64, String> {
    let descriptor = event
        .content
        .payload_descriptors
        .iter()
        .flatten()
        .find(|d| d.payload_type == EventType::ImportCapacityLimit);
    match descriptor.and_then(|d| d.units.as_ref()) {
        None | Some(Unit::KW) => Ok(1_000.0),
        Some(Unit::Private(u)) if u.eq_ignore_ascii_case("W") => Ok(1.0),
        Some(Unit::Private(u)) if u.eq_ignore_ascii_case("MW") => Ok(1_000_000.0),
        Some(other) => Err(format!(
            "IMPORT_CAPACITY_LIMIT in {other:?} is not a power unit (KW, W or MW)"
        )),
    }
}

fn report_kinds(event: &Event) -> Vec<ReportKind> {
    let mut kinds: Vec<ReportKind> = event
        .content
        .report_descriptors
        .iter()
        .flatten()
        .filter_map(|d| match d.payload_type {
            ReportType::Usage => Some(ReportKind::Usage),
            ReportType::Demand => Some(ReportKind::Demand),
            _ => None,
        })
        .collect();
    kinds.dedup();
    kinds
}

fn numbers(values: &[Value], what: &str) -> Result<Vec<f64>, String> {
    values
        .iter()
        .map(|v| match v {
            Value::Number(x) if x.is_finite() && *x >= 0.0 => Ok(*x),
            Value::Integer(i) if *i >= 0 => Ok(*i as f64),
            other => Err(format!("{what} value {other:?} is not a number at least 0")),
        })
        .collect()
}

/// The interval's cap and subscription payloads, a multi-value payload split into equal
/// sub-intervals. Where several cap payloads overlap, the lowest cap applies.
fn add_payloads(
    mapped: &mut MappedEvent,
    window: &Window,
    interval: &EventInterval,
    limit_factor: f64,
    ctx: &MappingContext<'_>,
) -> Result<(), String> {
    let mut caps: Vec<Interval> = vec![];
    for payload in &interval.payloads {
        match &payload.value_type {
            EventType::ImportCapacityLimit => {
                let kw = numbers(&payload.values, "IMPORT_CAPACITY_LIMIT")?;
                let watts: Vec<f64> = kw.iter().map(|v| v * limit_factor).collect();
                caps.extend(split(window, &watts)?);
            }
            EventType::Simple => {
                caps.extend(split(window, &simple_caps(&payload.values, window, ctx)?)?)
            }
            EventType::ImportCapacitySubscription => {
                let kw = numbers(&payload.values, "IMPORT_CAPACITY_SUBSCRIPTION")?;
                let watts: Vec<f64> = kw.iter().map(|v| v * 1_000.0).collect();
                mapped.subscription.extend(split(window, &watts)?);
            }
            other => {
                let name = serde_json::to_value(other).ok();
                let name = name.as_ref().and_then(|v| v.as_str()).unwrap_or("?");
                mapped.ignored.push(name.to_owned());
            }
        }
    }
    mapped.caps.extend(lowest_of(&caps, window.end));
    Ok(())
}

/// Overlapping caps within one window → one cap per segment between their boundaries, the
/// lowest that covers it.
fn lowest_of(parts: &[Interval], window_end: Option<f64>) -> Vec<Interval> {
    let mut bounds: Vec<f64> = parts
        .iter()
        .flat_map(|p| [Some(p.start), p.end])
        .flatten()
        .collect();
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    let segment_end = |i: usize| bounds.get(i + 1).copied().or(window_end);
    (0..bounds.len())
        .filter(|&i| segment_end(i).is_none_or(|end| end > bounds[i]))
        .filter_map(|i| {
            let at = bounds[i];
            let cap = parts
                .iter()
                .filter(|p| p.contains(at))
                .map(|p| p.cap_watts)
                .min_by(f64::total_cmp)?;
            Some(Interval {
                start: at,
                end: segment_end(i),
                cap_watts: cap,
            })
        })
        .collect()
}

/// SIMPLE levels 0–3 as fractions of the subscription in force at the interval's start.
fn simple_caps(
    values: &[Value],
    window: &Window,
    ctx: &MappingContext<'_>,
) -> Result<Vec<f64>, String> {
    let subscription = (ctx.subscription_at)(window.start)
        .ok_or("SIMPLE levels need a subscription: none is configured or in force")?;
    values
        .iter()
        .map(|v| match v {
            Value::Integer(level @ 0..=3) => {
                Ok(subscription * ctx.simple_level_fractions[*level as usize])
            }
            other => Err(format!("SIMPLE value {other:?} is not a level 0 to 3")),
        })
        .collect()
}

/// One value per equal sub-interval of `window` (one value: the whole window).
fn split(window: &Window, watts: &[f64]) -> Result<Vec<Interval>, String> {
    match (watts.len(), window.end) {
        (0, _) => Err("a payload has no values".into()),
        (1, end) => Ok(vec![Interval {
            start: window.start,
            end,
            cap_watts: watts[0],
        }]),
        (_, None) => Err("several values cannot split an open-ended interval".into()),
        (n, Some(end)) => {
            let step = (end - window.start) / n as f64;
            Ok(watts
                .iter()
                .enumerate()
                .map(|(i, &w)| Interval {
                    start: window.start + step * i as f64,
                    end: Some(if i + 1 == n {
                        end
                    } else {
                        window.start + step * (i + 1) as f64
                    }),
                    cap_watts: w,
                })
                .collect())
        }
    }
}

#[cfg(test)]
#[path = "mapping_tests.rs"]
mod tests;
