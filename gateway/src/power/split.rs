//! Splitting the node's cap across its engines (data parallel: one engine per GPU), sans-IO.
//!
//! Each engine gets its floor (idle draw) first, then the rest goes where it is wanted: an
//! engine its controller is holding back wants all it can draw; one running free wants what
//! it draws plus a little headroom, so new work can start before the next split. When wants
//! exceed the cap, the rest is water-filled (max-min fair): no engine gets more than it
//! wants while another is cut below its want. When the cap exceeds every want, the spare
//! goes to each engine in proportion to the room it has left. The shares always add up to the
//! cap, so engines that each stay under their share keep the node under the cap.

use super::controller::{ControllerSettings, Decision};

/// What one engine's devices can draw and are drawing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EngineDemand {
    /// Its draw with nothing running: no split goes below it while the cap allows.
    pub floor_watts: f64,
    /// The most it can draw (its power limits' maximum, or the backend's figure).
    pub max_watts: f64,
    /// Its power over the controller's window (None: no reading yet).
    pub measured_watts: Option<f64>,
    /// Its controller is holding it back (effort below full): it would draw more if allowed.
    pub held_back: bool,
}

impl EngineDemand {
    /// An engine's demand as its controller's settings and last decision tell it: held back
    /// while its effort is below full (or before its first decision).
    pub fn of(settings: &ControllerSettings, last: Option<&Decision>) -> Self {
        Self {
            floor_watts: settings.idle_watts,
            max_watts: settings.hardware_max_watts,
            measured_watts: last.and_then(|d| d.measured_watts),
            held_back: last.is_none_or(|d| d.effort < FULL_EFFORT),
        }
    }

    /// What it wants, in watts (at least its floor, at most its maximum).
    fn want_watts(&self) -> f64 {
        match self.measured_watts {
            Some(w) if !self.held_back => {
                let headroom = HEADROOM_FRACTION * (self.max_watts - self.floor_watts);
                (w + headroom).clamp(self.floor_watts, self.max_watts)
            }
            _ => self.max_watts,
        }
    }
}

/// Effort at or above this is running free.
const FULL_EFFORT: f64 = 0.999;
/// Headroom a free-running engine's want keeps above its draw, as a share of its range.
const HEADROOM_FRACTION: f64 = 0.1;
/// A new split replaces the last only when a share moves by more than this share of the cap
/// (or the cap itself moved): every re-split makes the engines' controllers jump.
const RESPLIT_FRACTION: f64 = 0.05;

/// Shares of `cap_watts`, one per engine in order; they add up to `cap_watts`.
pub fn split_cap(cap_watts: f64, engines: &[EngineDemand]) -> Vec<f64> {
    if engines.is_empty() {
        return Vec::new();
    }
    let floors: f64 = engines.iter().map(|e| e.floor_watts).sum();
    if cap_watts <= floors {
        // Not even idle fits: cut every engine alike, relative to its floor.
        return engines
            .iter()
            .map(|e| match floors > 0.0 {
                true => cap_watts * e.floor_watts / floors,
                false => cap_watts / engines.len() as f64,
            })
            .collect();
    }
    let wants: Vec<f64> = engines.iter().map(EngineDemand::want_watts).collect();
    let extras: Vec<f64> = engines
        .iter()
        .zip(&wants)
        .map(|(e, w)| w - e.floor_watts)
        .collect();
    let rest = cap_watts - floors;
    let wanted: f64 = extras.iter().sum();
    if wanted <= rest {
        let spare = rest - wanted;
        let room: Vec<f64> = engines
            .iter()
            .zip(&wants)
            .map(|(e, w)| (e.max_watts - w).max(0.0))
            .collect();
        let total_room: f64 = room.iter().sum();
        return wants
            .iter()
            .zip(&room)
            .map(|(w, r)| match total_room > 0.0 {
                true => w + spare * r / total_room,
                false => w + spare / engines.len() as f64,
            })
            .collect();
    }
    let level = water_level(&extras, rest);
    engines
        .iter()
        .zip(&extras)
        .map(|(e, x)| e.floor_watts + x.min(level))
        .collect()
}

/// The level L with Σ min(extra, L) = `rest` (given Σ extra > `rest`).
fn water_level(extras: &[f64], rest: f64) -> f64 {
    let mut sorted = extras.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut left = rest;
    for (i, x) in sorted.iter().enumerate() {
        let above = (sorted.len() - i) as f64;
        if x * above >= left {
            return left / above;
        }
        left -= x;
    }
    sorted.last().copied().unwrap_or(0.0)
}

/// The split in force, replaced only when the cap or a share moved enough to matter.
#[derive(Debug, Default)]
pub struct CapSplit {
    last_cap_watts: Option<f64>,
    shares: Vec<f64>,
}

impl CapSplit {
    /// The shares for this tick (one per engine).
    pub fn update(&mut self, cap_watts: f64, engines: &[EngineDemand]) -> &[f64] {
        let fresh = split_cap(cap_watts, engines);
        let cap_moved = self
            .last_cap_watts
            .is_none_or(|last| (cap_watts - last).abs() > 1e-9 * last.abs().max(1.0));
        let shares_moved = self.shares.len() != fresh.len()
            || self
                .shares
                .iter()
                .zip(&fresh)
                .any(|(a, b)| (a - b).abs() > RESPLIT_FRACTION * cap_watts);
        if cap_moved || shares_moved {
            self.shares = fresh;
            self.last_cap_watts = Some(cap_watts);
        }
        &self.shares
    }
}

#[cfg(test)]
#[path = "split_loop_tests.rs"]
mod loop_tests;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn gpu(measured: Option<f64>, held_back: bool) -> EngineDemand {
        EngineDemand {
            floor_watts: 70.0,
            max_watts: 700.0,
            measured_watts: measured,
            held_back,
        }
    }

    #[test]
    fn an_idle_gpu_gives_its_unused_share_to_a_busy_one() {
        // Node cap 800 W over two H100s: one serving flat out (held back), one idle at 70 W.
        let shares = split_cap(800.0, &[gpu(Some(400.0), true), gpu(Some(70.0), false)]);
        // The idle one keeps its draw plus 10 % of its range as headroom (70 + 63 W).
        assert!((shares[1] - 133.0).abs() < 1e-9, "{shares:?}");
        assert!((shares[0] - 667.0).abs() < 1e-9, "{shares:?}");
    }

    #[test]
    fn equal_demand_splits_evenly() {
        let shares = split_cap(900.0, &[gpu(Some(450.0), true), gpu(Some(450.0), true)]);
        assert_eq!(shares, vec![450.0, 450.0]);
    }

    #[test]
    fn a_cap_below_idle_cuts_every_gpu_alike() {
        let shares = split_cap(100.0, &[gpu(None, false), gpu(None, false)]);
        assert_eq!(shares, vec![50.0, 50.0]);
    }

    #[test]
    fn spare_power_goes_where_there_is_room() {
        // Both run free well under a loose cap: each keeps its want, and the spare is
        // shared by the room left, so the busier GPU is not starved when it ramps.
        let shares = split_cap(1200.0, &[gpu(Some(300.0), false), gpu(Some(100.0), false)]);
        let sum: f64 = shares.iter().sum();
        assert!((sum - 1200.0).abs() < 1e-9);
        assert!(shares[0] >= 363.0 && shares[1] >= 163.0, "{shares:?}");
    }

    #[test]
    fn the_split_holds_until_something_moves_enough() {
        let mut split = CapSplit::default();
        let first = split
            .update(800.0, &[gpu(Some(400.0), true), gpu(Some(70.0), false)])
            .to_vec();
        // The idle GPU drifts by a few watts: not worth making the controllers jump.
        let held = split
            .update(800.0, &[gpu(Some(400.0), true), gpu(Some(80.0), false)])
            .to_vec();
        assert_eq!(first, held);
        // It gets busy and is held back: the split moves to even.
        let moved = split
            .update(800.0, &[gpu(Some(400.0), true), gpu(Some(133.0), true)])
            .to_vec();
        assert_eq!(moved, vec![400.0, 400.0]);
    }

    fn demand() -> impl Strategy<Value = EngineDemand> {
        (
            0.0..200.0f64,
            50.0..800.0f64,
            proptest::option::of(0.0..1000.0f64),
            any::<bool>(),
        )
            .prop_map(|(floor, range, measured, held_back)| EngineDemand {
                floor_watts: floor,
                max_watts: floor + range,
                measured_watts: measured,
                held_back,
            })
    }

    proptest! {
        #[test]
        fn shares_add_up_to_the_cap_and_respect_floors(
            cap in 0.0..5000.0f64,
            engines in proptest::collection::vec(demand(), 1..6),
        ) {
            let shares = split_cap(cap, &engines);
            prop_assert_eq!(shares.len(), engines.len());
            let sum: f64 = shares.iter().sum();
            prop_assert!((sum - cap).abs() < 1e-6 * cap.max(1.0), "sum {} cap {}", sum, cap);
            let floors: f64 = engines.iter().map(|e| e.floor_watts).sum();
            for (s, e) in shares.iter().zip(&engines) {
                prop_assert!(*s >= 0.0);
                if cap >= floors {
                    prop_assert!(*s >= e.floor_watts - 1e-9);
                }
            }
        }

        #[test]
        fn no_engine_is_cut_below_its_want_while_another_gets_more_than_its_want(
            cap in 0.0..5000.0f64,
            engines in proptest::collection::vec(demand(), 2..6),
        ) {
            let shares = split_cap(cap, &engines);
            let floors: f64 = engines.iter().map(|e| e.floor_watts).sum();
            prop_assume!(cap > floors);
            let wants: Vec<f64> = engines.iter().map(EngineDemand::want_watts).collect();
            let short = shares.iter().zip(&wants).any(|(s, w)| s + 1e-6 < *w);
            let over = shares.iter().zip(&wants).any(|(s, w)| *s > w + 1e-6);
            prop_assert!(!(short && over), "shares {:?} wants {:?}", shares, wants);
        }
    }
}
