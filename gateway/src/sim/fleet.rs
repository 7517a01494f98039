//! The fleet: replicas advanced in global virtual-time order, arrivals routed at their
//! arrival time to the replica with the fewest outstanding requests (join-shortest-queue).

use std::time::Instant;

use super::arrivals::Arrival;
use super::policy::FixedPolicy;
use super::replica::Replica;
use super::scenario::Scenario;
use super::stats::Recorder;
use crate::GatewayError;

/// A finished run: the replicas as they ended and what was recorded.
pub struct FleetRun {
    pub replicas: Vec<Replica>,
    pub recorder: Recorder,
    pub wall_seconds: f64,
    /// Requests still queued or running when the scenario ended.
    pub unfinished: u64,
}

/// Builds one replica per scenario replica, each with its own fixed policy.
pub fn build_replicas(s: &Scenario) -> Vec<Replica> {
    (0..s.replicas)
        .map(|_| {
            Replica::new(
                &s.hardware,
                Box::new(FixedPolicy::new(s.policy.clone())),
                s.policy.budget,
                s.policy.tick_seconds,
                s.replicas,
            )
        })
        .collect()
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

/// Runs the scenario with its fixed policy.
pub fn run(s: &Scenario) -> Result<FleetRun, GatewayError> {
    run_with(s, build_replicas(s))
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
