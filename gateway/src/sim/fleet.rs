//! The fleet: replicas advanced in global virtual-time order, arrivals routed at their
//! arrival time to the replica with the fewest outstanding requests (join-shortest-queue).

use std::time::Instant;

use super::arrivals::Arrival;
use super::policy::{AdaptivePolicy, CapLimitPolicy, FixedPolicy, Policy};
use super::replica::Replica;
use super::scenario::{PolicyKind, Scenario};
use super::stats::Recorder;
use crate::engine::EnginePolicy;
use crate::power::controller::{Controller, ControllerConfig, Hardware};
use crate::power::ActuatorLimits;
use crate::GatewayError;

/// A finished run: the replicas as they ended and what was recorded.
pub struct FleetRun {
    pub replicas: Vec<Replica>,
    pub recorder: Recorder,
    pub wall_seconds: f64,
    /// Requests still queued or running when the scenario ended.
    pub unfinished: u64,
}

/// Builds one replica per scenario replica, each with its own policy of the scenario's kind.
pub fn build_replicas(s: &Scenario, controller: &ControllerConfig) -> Vec<Replica> {
    (0..s.replicas)
        .map(|_| {
            let (policy, tick_seconds) = policy(s, controller);
            let engine = EnginePolicy {
                deferral_deadline: controller.deferral_deadline,
                ..EnginePolicy::open(s.policy.budget)
            };
            Replica::new(&s.hardware, policy, engine, tick_seconds, s.replicas)
        })
        .collect()
}

/// One replica's policy and how often it ticks (the controller at its own period).
fn policy(s: &Scenario, controller: &ControllerConfig) -> (Box<dyn Policy>, f64) {
    let hw = &s.hardware;
    let p = &hw.profile;
    let gpus = hw.tensor_parallel as usize;
    match s.policy.kind {
        PolicyKind::Fixed => (
            Box::new(FixedPolicy::new(s.policy.clone())),
            s.policy.tick_seconds,
        ),
        PolicyKind::CapLimit => {
            let policy = CapLimitPolicy {
                budget: s.policy.budget,
                gpus,
                power_limit_range_watts: (p.power_limit_min_watts, p.power_limit_max_watts),
            };
            (Box::new(policy), s.policy.tick_seconds)
        }
        PolicyKind::Adaptive => {
            let hardware = Hardware {
                limits: Some(ActuatorLimits {
                    power_limit_min_watts: p.power_limit_min_watts,
                    power_limit_max_watts: p.power_limit_max_watts,
                    sm_clock_min_mhz: p.sm_clock_min_mhz,
                    sm_clock_max_mhz: p.sm_clock_max_mhz,
                }),
                devices: gpus,
                floor_watts: p.idle_watts * gpus as f64,
                max_watts: p.power_limit_max_watts * gpus as f64,
            };
            let settings = controller.settings(&hardware, s.policy.budget);
            let policy = AdaptivePolicy {
                controller: Controller::new(settings),
            };
            (Box::new(policy), controller.period.as_secs_f64())
        }
    }
}

/// The index of the replica with the fewest outstanding requests (lowest index on ties).
pub fn route(replicas: &[Replica]) -> usize {
    replicas
        .iter()
        .enumerate()
        .min_by_key(|(i, r)| (r.outstanding(), *i))
        .map_or(0, |(i, _)| i)
}

/// The busy replica furthest behind in virtual time, if any is still before `end`.
fn earliest_busy(replicas: &[Replica], end: f64) -> Option<usize> {
    replicas
        .iter()
        .enumerate()
        .filter(|(_, r)| r.has_work() && r.clock_seconds() < end)
        .min_by(|(_, a), (_, b)| a.clock_seconds().total_cmp(&b.clock_seconds()))
        .map(|(i, _)| i)
}

/// Runs the scenario with its policy.
pub fn run(s: &Scenario, controller: &ControllerConfig) -> Result<FleetRun, GatewayError> {
    run_with(s, build_replicas(s, controller))
}

/// Runs the scenario on the given replicas (tests and other policies build their own).
pub fn run_with(s: &Scenario, mut replicas: Vec<Replica>) -> Result<FleetRun, GatewayError> {
    let wall = Instant::now();
    let end = s.duration_seconds;
    let chunk = s.timeseries_period_seconds.min(1.0);
    let mut rec = Recorder::new(s.timeseries_period_seconds);
    let mut arrivals = s
        .workload
        .arrivals(s.seed)
        .take_while(|a| a.at_seconds < end);
    let mut next: Option<Arrival> = arrivals.next();
    let mut next_id: u64 = 0;
    loop {
        let busy = earliest_busy(&replicas, end);
        let busy_clock = busy.map(|i| replicas[i].clock_seconds());
        match (next, busy, busy_clock) {
            (Some(a), _, c) if c.is_none_or(|c| a.at_seconds <= c) => {
                let target = route(&replicas);
                let r = &mut replicas[target];
                if !r.has_work() {
                    r.idle_until(a.at_seconds, chunk, &s.envelope, &mut rec)?;
                }
                r.admit(next_id, &a)?;
                next_id += 1;
                rec.arrived += 1;
                rec.prompt_tokens += a.prompt_tokens as u64;
                next = arrivals.next();
            }
            (_, Some(i), _) => replicas[i].step(&s.envelope, &mut rec)?,
            _ => break,
        }
    }
    let mut unfinished = 0;
    for r in &mut replicas {
        unfinished += r.outstanding() as u64;
        r.idle_until(end, chunk, &s.envelope, &mut rec)?;
    }
    Ok(FleetRun {
        replicas,
        recorder: rec,
        wall_seconds: wall.elapsed().as_secs_f64(),
        unfinished,
    })
}
