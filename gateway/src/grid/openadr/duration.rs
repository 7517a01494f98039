//! ISO 8601 durations as OpenADR uses them (`PT30M`, `P1D`, `P9999Y`), turned into seconds
//! from a given start without panicking: the wire crate's own conversion panics on dates out
//! of range, and a VTN's data must never take the VEN down.

use chrono::{DateTime, Months, Utc};
use openleadr_wire::Duration as WireDuration;

/// Durations of at least this many years mean "until replaced" (OpenADR writes `P9999Y`).
const OPEN_ENDED_YEARS: f64 = 9_000.0;

/// The length of `d` from `start`, in seconds; `None` for "until replaced" (`P9999Y`, or a
/// date beyond what the calendar can hold). Years and months follow the calendar; weeks, days
/// and smaller units are fixed lengths (UTC has no daylight saving).
pub fn seconds_from(d: &WireDuration, start: DateTime<Utc>) -> Result<Option<f64>, String> {
    let text = d.to_string();
    let fields = parse(&text).ok_or_else(|| format!("cannot read the duration {text}"))?;
    let [years, months, days, hours, minutes, secs] = fields;
    if years >= OPEN_ENDED_YEARS {
        return Ok(None);
    }
    if years.fract() != 0.0 || months.fract() != 0.0 {
        return Err(format!(
            "{text}: fractional years or months are not supported"
        ));
    }
    let total_months = years * 12.0 + months;
    let Some(shifted) = u32::try_from(total_months as i64)
        .ok()
        .and_then(|m| start.checked_add_months(Months::new(m)))
    else {
        return Ok(None);
    };
    let calendar = (shifted - start).num_milliseconds() as f64 / 1000.0;
    Ok(Some(
        calendar + days * 86_400.0 + hours * 3_600.0 + minutes * 60.0 + secs,
    ))
}

/// `P{y}Y{m}M{d}DT{h}H{m}M{s}S` as the wire crate prints it (missing parts are 0, `W` weeks
/// count as 7 days), into [years, months, days, hours, minutes, seconds].
fn parse(text: &str) -> Option<[f64; 6]> {
    let body = text.strip_prefix('P')?;
    let (date, time) = body.split_once('T').unwrap_or((body, ""));
    let mut out = [0.0; 6];
    for (part, units) in [(date, "YMWD"), (time, "HMS")] {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' || c == ',' {
                number.push(if c == ',' { '.' } else { c });
                continue;
            }
            let value: f64 = number.parse().ok()?;
            number.clear();
            let slot = match (units, c) {
                ("YMWD", 'Y') => 0,
                ("YMWD", 'M') => 1,
                ("YMWD", 'W') => {
                    out[2] += value * 7.0;
                    continue;
                }
                ("YMWD", 'D') => 2,
                ("HMS", 'H') => 3,
                ("HMS", 'M') => 4,
                ("HMS", 'S') => 5,
                _ => return None,
            };
            out[slot] += value;
        }
        if !number.is_empty() {
            return None;
        }
    }
    out.iter()
        .all(|v| v.is_finite() && *v >= 0.0)
        .then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str, start: &str) -> Result<Option<f64>, String> {
        let d: WireDuration = text.parse().map_err(|e| format!("{e:?}"))?;
        seconds_from(&d, start.parse().unwrap())
    }

    #[test]
    fn fixed_units_and_calendar_units() {
        let t = "2026-01-31T00:00:00Z";
        assert_eq!(secs("PT30S", t), Ok(Some(30.0)));
        assert_eq!(secs("PT1H30M", t), Ok(Some(5_400.0)));
        assert_eq!(secs("P1D", t), Ok(Some(86_400.0)));
        assert_eq!(secs("P1W", t), Ok(Some(7.0 * 86_400.0)));
        // Jan 31 + 1 month = Feb 28 (2026 is not a leap year).
        assert_eq!(secs("P1M", t), Ok(Some(28.0 * 86_400.0)));
        assert_eq!(secs("PT0.5S", t), Ok(Some(0.5)));
    }

    #[test]
    fn p9999y_means_until_replaced_even_from_year_one() {
        assert_eq!(secs("P9999Y", "0001-01-01T00:00:00Z"), Ok(None));
        assert_eq!(secs("P9999Y", "2026-12-06T00:00:00Z"), Ok(None));
        // Far beyond the calendar: open-ended, not a panic.
        assert_eq!(
            secs("P8999Y", "2026-12-06T00:00:00Z").map(|s| s.is_some()),
            Ok(true)
        );
    }
}
