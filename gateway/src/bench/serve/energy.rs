//! The run's energy figures: total joules from the chosen source (per-request usage, a
//! Prometheus counter's before/after delta, or a local sensor), joules per output token, output
//! tokens per joule, mean and p99 watts — with every source that answered listed side by side.

use serde::Serialize;

use super::args::EnergySourceArg;
use super::probe::ProbeSample;
use super::prom::EnergyReading;
use super::stats::{percentile_linear, RequestOutcome};

/// What each source measured over the run (None where it did not answer).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnergyInputs {
    /// The power feed's samples (also the energy of a local sensor).
    pub samples: Vec<ProbeSample>,
    /// Which local sensor, when the feed was one (`nvml`, `rapl`, `estimate`), and whether it
    /// measures (as opposed to modelling) energy.
    pub local_source: Option<(&'static str, bool)>,
    /// A Prometheus energy counter read just before the first request and after the last.
    pub counter_before: Option<EnergyReading>,
    pub counter_after: Option<EnergyReading>,
    /// Where the power samples came from, for the report.
    pub power_source: Option<String>,
}

/// The energy block of the summary and the JSON result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnergyReport {
    /// `usage`, `prometheus:gridserve`, `prometheus:dcgm`, `local:nvml`, `local:rapl`,
    /// `local:estimate`, or `none`.
    pub source: String,
    /// In words, with the server's own label (`twin`, `nvml`, …) when it gave one.
    pub detail: String,
    pub total_joules: Option<f64>,
    pub joules_per_output_token: Option<f64>,
    pub output_tokens_per_joule: Option<f64>,
    /// Mean of the power samples (else total joules / duration).
    pub avg_power_watts: Option<f64>,
    pub p99_power_watts: Option<f64>,
    pub power_source: Option<String>,
    /// Every figure that was available, whichever was chosen.
    pub usage_joules: Option<f64>,
    pub counter_joules: Option<f64>,
    pub local_joules: Option<f64>,
    /// The power feed's own energy counter over the run. For a real sensor, everything the
    /// device drew, idle included (gridserve's per-request and Prometheus figures count the
    /// engine's steps only); for the twin, its GPU step time plus the engine's idle gaps (the
    /// CPU's step time is not GPU time, so the twin's mean watts × wall time exceed it).
    pub device_joules: Option<f64>,
    pub device_output_tokens_per_joule: Option<f64>,
}

/// Sum of `usage.energy_joules` when every successful request carried one.
fn usage_joules(outcomes: &[RequestOutcome]) -> Option<(f64, Option<String>)> {
    let ok: Vec<&RequestOutcome> = outcomes.iter().filter(|o| o.success).collect();
    if ok.is_empty() || ok.iter().any(|o| o.energy_joules.is_none()) {
        return None;
    }
    let label = ok.iter().find_map(|o| o.energy_source.clone());
    Some((ok.iter().filter_map(|o| o.energy_joules).sum(), label))
}

fn counter_joules(inputs: &EnergyInputs) -> Option<(f64, &'static str)> {
    let (a, b) = (inputs.counter_before?, inputs.counter_after?);
    let kind = match a.kind {
        super::prom::CounterKind::Gridserve => "gridserve",
        super::prom::CounterKind::Dcgm => "dcgm",
    };
    // A counter that went down was reset (server restart): no delta can be trusted.
    (a.kind == b.kind && b.joules >= a.joules).then_some((b.joules - a.joules, kind))
}

/// The first-to-last delta of the power feed's energy counter.
fn feed_joules(inputs: &EnergyInputs) -> Option<f64> {
    let energies: Vec<f64> = inputs
        .samples
        .iter()
        .filter_map(|s| s.energy_joules)
        .collect();
    match (energies.first(), energies.last()) {
        (Some(a), Some(b)) if energies.len() >= 2 && b >= a => Some(b - a),
        _ => None,
    }
}

/// Picks the source `choice` asks for and derives the figures.
pub fn report(
    choice: EnergySourceArg,
    outcomes: &[RequestOutcome],
    output_tokens: usize,
    duration_s: f64,
    inputs: &EnergyInputs,
) -> EnergyReport {
    let f = Figures::of(outcomes, inputs);
    let chosen = f.choose(choice, inputs);
    let powers: Vec<f64> = inputs
        .samples
        .iter()
        .filter_map(|s| s.power_watts)
        .collect();
    let mut sorted = powers.clone();
    sorted.sort_by(f64::total_cmp);
    let total = chosen.as_ref().map(|c| c.joules);
    let avg_power = (!powers.is_empty())
        .then(|| powers.iter().sum::<f64>() / powers.len() as f64)
        .or_else(|| total.filter(|_| duration_s > 0.0).map(|j| j / duration_s));
    let (source, detail) = match chosen {
        Some(c) => (c.source, c.detail),
        None => ("none".to_string(), why_none(choice, inputs)),
    };
    let per_joule = |j: Option<f64>| j.filter(|j| *j > 0.0).map(|j| output_tokens as f64 / j);
    EnergyReport {
        source,
        detail,
        total_joules: total,
        joules_per_output_token: total
            .filter(|_| output_tokens > 0)
            .map(|j| j / output_tokens as f64),
        output_tokens_per_joule: per_joule(total),
        avg_power_watts: avg_power,
        p99_power_watts: (!sorted.is_empty()).then(|| percentile_linear(&sorted, 99.0)),
        power_source: inputs.power_source.clone(),
        usage_joules: f.usage.map(|u| u.0),
        counter_joules: f.counter.map(|c| c.0),
        local_joules: f.local,
        device_joules: f.device,
        device_output_tokens_per_joule: per_joule(f.device),
    }
}

/// One source's total and how to name it.
struct Chosen {
    joules: f64,
    source: String,
    detail: String,
}

/// What each source measured.
struct Figures {
    /// Joules and the server's own label for them.
    usage: Option<(f64, Option<String>)>,
    counter: Option<(f64, &'static str)>,
    device: Option<f64>,
    local: Option<f64>,
}

impl Figures {
    fn of(outcomes: &[RequestOutcome], inputs: &EnergyInputs) -> Figures {
        let device = feed_joules(inputs);
        Figures {
            usage: usage_joules(outcomes),
            counter: counter_joules(inputs),
            device,
            local: device.filter(|_| inputs.local_source.is_some()),
        }
    }

    fn choose(&self, choice: EnergySourceArg, inputs: &EnergyInputs) -> Option<Chosen> {
        let chosen = |joules, source: String, detail: String| Chosen {
            joules,
            source,
            detail,
        };
        let from_usage = || {
            self.usage.clone().map(|(j, label)| {
                let by = label.map_or(String::new(), |l| format!(", the server's source: {l}"));
                chosen(
                    j,
                    "usage".into(),
                    format!("per-request usage.energy_joules{by}"),
                )
            })
        };
        let from_counter = || {
            self.counter.map(|(j, kind)| {
                let what = if kind == "dcgm" {
                    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
                } else {
                    "gridserve_energy_joules_total"
                };
                chosen(
                    j,
                    format!("prometheus:{kind}"),
                    format!("{what}, before/after delta"),
                )
            })
        };
        let from_local = |measured_only: bool| {
            let (name, measured) = inputs.local_source?;
            (!measured_only || measured).then_some(())?;
            let detail = format!("this machine's {name} sensor, whole system");
            Some(chosen(self.local?, format!("local:{name}"), detail))
        };
        match choice {
            EnergySourceArg::Auto => from_usage()
                .or_else(from_counter)
                .or_else(|| from_local(true)),
            EnergySourceArg::Usage => from_usage(),
            EnergySourceArg::Metrics => from_counter(),
            EnergySourceArg::Local => from_local(false),
            EnergySourceArg::Device => self.device.map(|j| {
                let feed = inputs.power_source.clone().unwrap_or_default();
                chosen(
                    j,
                    "device".into(),
                    format!("the power feed's energy counter ({feed})"),
                )
            }),
            EnergySourceArg::None => None,
        }
    }
}

fn why_none(choice: EnergySourceArg, inputs: &EnergyInputs) -> String {
    match choice {
        EnergySourceArg::None => "not asked for (--energy-source none)".into(),
        EnergySourceArg::Usage => "the server sent no usage.energy_joules".into(),
        EnergySourceArg::Metrics => "no energy counter at the metrics URL (or it was reset)".into(),
        EnergySourceArg::Local => "no local sensor could be read".into(),
        EnergySourceArg::Device => "the power feed has no energy counter".into(),
        EnergySourceArg::Auto => match inputs.local_source {
            Some((name, false)) => format!(
                "the server reports no energy; this machine's only sensor is the {name} model \
                 (use --energy-source local to accept it)"
            ),
            _ => "the server reports no energy and this machine has no power sensor".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::prom::CounterKind;
    use super::*;

    fn outcome(energy: Option<f64>) -> RequestOutcome {
        RequestOutcome {
            success: true,
            output_tokens: 10,
            energy_joules: energy,
            energy_source: energy.map(|_| "twin".to_string()),
            ..Default::default()
        }
    }

    fn reading(kind: CounterKind, joules: f64) -> Option<EnergyReading> {
        Some(EnergyReading {
            kind,
            joules,
            power_watts: None,
        })
    }

    fn samples(power_energy: &[(f64, f64)]) -> Vec<ProbeSample> {
        power_energy
            .iter()
            .enumerate()
            .map(|(i, &(w, j))| ProbeSample {
                t_s: i as f64,
                power_watts: Some(w),
                energy_joules: Some(j),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn usage_wins_in_auto_and_every_figure_is_listed() {
        let outcomes = [
            outcome(Some(3.0)),
            outcome(Some(1.0)),
            RequestOutcome::default(),
        ];
        let inputs = EnergyInputs {
            counter_before: reading(CounterKind::Gridserve, 100.0),
            counter_after: reading(CounterKind::Gridserve, 106.0),
            samples: samples(&[(100.0, 0.0), (300.0, 0.0)]),
            ..Default::default()
        };
        let r = report(EnergySourceArg::Auto, &outcomes, 20, 2.0, &inputs);
        assert_eq!(r.source, "usage");
        assert!(r.detail.contains("twin"));
        assert_eq!(r.total_joules, Some(4.0));
        assert_eq!(r.joules_per_output_token, Some(0.2));
        assert_eq!(r.output_tokens_per_joule, Some(5.0));
        assert_eq!((r.usage_joules, r.counter_joules), (Some(4.0), Some(6.0)));
        assert_eq!(r.avg_power_watts, Some(200.0));
        assert!((r.p99_power_watts.unwrap() - 298.0).abs() < 1e-9);
        // The feed's counter did not move (both samples read 0 J): a device figure of 0 J.
        assert_eq!(
            (r.device_joules, r.device_output_tokens_per_joule),
            (Some(0.0), None)
        );
        let m = report(EnergySourceArg::Metrics, &outcomes, 20, 2.0, &inputs);
        assert_eq!(
            (m.source.as_str(), m.total_joules),
            ("prometheus:gridserve", Some(6.0))
        );
    }

    #[test]
    fn dcgm_counter_when_requests_carry_no_energy() {
        let outcomes = [outcome(Some(1.0)), outcome(None)];
        let inputs = EnergyInputs {
            counter_before: reading(CounterKind::Dcgm, 1000.0),
            counter_after: reading(CounterKind::Dcgm, 1500.0),
            ..Default::default()
        };
        let r = report(EnergySourceArg::Auto, &outcomes, 50, 10.0, &inputs);
        assert_eq!(r.source, "prometheus:dcgm");
        assert_eq!(r.total_joules, Some(500.0));
        assert_eq!(r.usage_joules, None);
        // No power samples: the mean power is the energy over the duration.
        assert_eq!(r.avg_power_watts, Some(50.0));
        // A counter that went backwards (a restart) is not used.
        let reset = EnergyInputs {
            counter_after: reading(CounterKind::Dcgm, 10.0),
            ..inputs
        };
        assert_eq!(
            report(EnergySourceArg::Auto, &outcomes, 50, 10.0, &reset).source,
            "none"
        );
    }

    #[test]
    fn a_local_estimate_needs_to_be_asked_for() {
        let outcomes = [outcome(None)];
        let inputs = EnergyInputs {
            samples: samples(&[(40.0, 10.0), (44.0, 52.0), (44.0, 94.0)]),
            local_source: Some(("estimate", false)),
            ..Default::default()
        };
        let auto = report(EnergySourceArg::Auto, &outcomes, 10, 2.0, &inputs);
        assert_eq!(auto.source, "none");
        assert!(auto.detail.contains("--energy-source local"));
        let local = report(EnergySourceArg::Local, &outcomes, 10, 2.0, &inputs);
        assert_eq!(
            (local.source.as_str(), local.total_joules),
            ("local:estimate", Some(84.0))
        );
        let measured = EnergyInputs {
            local_source: Some(("rapl", true)),
            ..inputs
        };
        assert_eq!(
            report(EnergySourceArg::Auto, &outcomes, 10, 2.0, &measured).source,
            "local:rapl"
        );
        let device = report(EnergySourceArg::Device, &outcomes, 42, 2.0, &measured);
        assert_eq!(
            (device.source.as_str(), device.total_joules),
            ("device", Some(84.0))
        );
        assert_eq!(device.device_output_tokens_per_joule, Some(0.5));
        let none = report(EnergySourceArg::None, &outcomes, 10, 2.0, &measured);
        assert_eq!(
            (none.total_joules, none.output_tokens_per_joule),
            (None, None)
        );
    }
}
