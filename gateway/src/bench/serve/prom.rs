//! Reading the energy and power a Prometheus endpoint exposes: gridserve's own
//! `gridserve_energy_joules_total` / `gridserve_power_watts`, or a DCGM exporter's
//! `DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION` (millijoules) / `DCGM_FI_DEV_POWER_USAGE` (watts),
//! summed over devices.

use serde::Serialize;

/// Which counter family an endpoint exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CounterKind {
    Gridserve,
    Dcgm,
}

impl CounterKind {
    pub fn counter_name(self) -> &'static str {
        match self {
            CounterKind::Gridserve => "gridserve_energy_joules_total",
            CounterKind::Dcgm => "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        }
    }

    fn power_name(self) -> &'static str {
        match self {
            CounterKind::Gridserve => "gridserve_power_watts",
            CounterKind::Dcgm => "DCGM_FI_DEV_POWER_USAGE",
        }
    }

    /// Joules per unit of the counter.
    fn joules_per_unit(self) -> f64 {
        match self {
            CounterKind::Gridserve => 1.0,
            CounterKind::Dcgm => 1e-3,
        }
    }
}

/// The energy counter (joules, summed over devices) and the power gauge (watts, summed) of one
/// scrape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnergyReading {
    pub kind: CounterKind,
    pub joules: f64,
    pub power_watts: Option<f64>,
}

/// The sum of every sample of `name` (any labels), `None` when there is none. Comments, other
/// metrics and metrics whose name only starts with `name` are skipped.
pub fn sum_of(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value_part = match rest.chars().next() {
            Some('{') => rest.rsplit_once('}').map(|(_, v)| v),
            Some(' ') | Some('\t') => Some(rest),
            _ => None,
        };
        let value = value_part
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite());
        if let Some(v) = value {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

/// The endpoint's energy reading: DCGM's when it exposes one, else gridserve's.
pub fn energy_reading(text: &str) -> Option<EnergyReading> {
    [CounterKind::Dcgm, CounterKind::Gridserve]
        .into_iter()
        .find_map(|kind| {
            let units = sum_of(text, kind.counter_name())?;
            Some(EnergyReading {
                kind,
                joules: units * kind.joules_per_unit(),
                power_watts: sum_of(text, kind.power_name()),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gridserve_counters_sum_over_labels() {
        let text = "# HELP gridserve_energy_joules_total Energy.\n\
            # TYPE gridserve_energy_joules_total counter\n\
            gridserve_energy_joules_total{source=\"twin\"} 120.5\n\
            gridserve_energy_joules_total_other 99\n\
            gridserve_power_watts{device=\"gpu0\",source=\"twin\"} 200\n\
            gridserve_power_watts{device=\"gpu1\",source=\"twin\"} 50.5\n";
        let r = energy_reading(text).unwrap();
        assert_eq!(r.kind, CounterKind::Gridserve);
        assert_eq!(r.joules, 120.5);
        assert_eq!(r.power_watts, Some(250.5));
    }

    #[test]
    fn dcgm_counters_are_millijoules() {
        let text = "DCGM_FI_DEV_POWER_USAGE{gpu=\"0\",UUID=\"GPU-a\",modelName=\"NVIDIA H100 80GB HBM3\"} 312.4\n\
            DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu=\"0\",UUID=\"GPU-a\"} 1500000\n\
            DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu=\"1\",UUID=\"GPU-b\"} 500000 1712345678000\n";
        let r = energy_reading(text).unwrap();
        assert_eq!(r.kind, CounterKind::Dcgm);
        assert!((r.joules - 2000.0).abs() < 1e-9);
        assert_eq!(r.power_watts, Some(312.4));
    }

    #[test]
    fn absent_or_broken_counters_give_none() {
        assert_eq!(energy_reading("vllm:num_requests_running 3\n"), None);
        assert_eq!(
            sum_of(
                "gridserve_energy_joules_total{a=\"b\"} NaN",
                "gridserve_energy_joules_total"
            ),
            None
        );
        assert_eq!(
            sum_of(
                "gridserve_energy_joules_total garbage",
                "gridserve_energy_joules_total"
            ),
            None
        );
    }
}
