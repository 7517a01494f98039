//! The simulated power-limit firmware: every period it compares a short trailing average of
//! power with the limit and moves the SM clock one step down (over) or up (headroom), within
//! the locked range. Like NVIDIA's, the power cap wins over a locked minimum clock.

use crate::power::ClockRange;

/// Where the firmware may move the clock and what it is aiming for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Governor {
    /// Lowest clock the hardware runs at (the cap may push the clock down to here).
    pub hardware_min_mhz: u32,
    /// Highest clock when nothing is locked.
    pub hardware_max_mhz: u32,
    pub step_mhz: u32,
    /// Raise the clock only while power is below `limit × (1 − headroom)`; the band stops the
    /// clock from chattering around the limit.
    pub headroom_fraction: f64,
}

impl Governor {
    /// The clock after one firmware period, given the short-window average power.
    pub fn tick(
        &self,
        clock_mhz: u32,
        lock: Option<ClockRange>,
        limit_watts: f64,
        recent_watts: f64,
    ) -> u32 {
        let ceiling_mhz = lock.map_or(self.hardware_max_mhz, |r| r.max_mhz);
        if recent_watts > limit_watts {
            return clock_mhz
                .saturating_sub(self.step_mhz)
                .max(self.hardware_min_mhz);
        }
        if recent_watts < limit_watts * (1.0 - self.headroom_fraction) && clock_mhz < ceiling_mhz {
            return (clock_mhz + self.step_mhz).min(ceiling_mhz);
        }
        clock_mhz.min(ceiling_mhz)
    }

    /// The clock right after a lock takes effect: clamped into the range at once (as
    /// `nvidia-smi -lgc` does), the firmware then only lowers it further if the cap demands.
    pub fn clamp(&self, clock_mhz: u32, lock: Option<ClockRange>) -> u32 {
        match lock {
            Some(r) => clock_mhz.clamp(r.min_mhz, r.max_mhz),
            None => clock_mhz.clamp(self.hardware_min_mhz, self.hardware_max_mhz),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn governor() -> Governor {
        Governor {
            hardware_min_mhz: 345,
            hardware_max_mhz: 1980,
            step_mhz: 15,
            headroom_fraction: 0.03,
        }
    }

    #[test]
    fn twin_firmware_steps_down_over_limit_and_up_with_headroom() {
        let g = governor();
        assert_eq!(g.tick(1980, None, 300.0, 400.0), 1965);
        assert_eq!(g.tick(1500, None, 300.0, 200.0), 1515);
        // Inside the headroom band: hold.
        assert_eq!(g.tick(1500, None, 300.0, 295.0), 1500);
        assert_eq!(g.tick(350, None, 300.0, 400.0), 345);
    }

    #[test]
    fn twin_firmware_respects_locked_ceiling_but_cap_beats_locked_floor() {
        let g = governor();
        let lock = Some(ClockRange {
            min_mhz: 1200,
            max_mhz: 1200,
        });
        assert_eq!(g.tick(1200, lock, 700.0, 100.0), 1200);
        assert_eq!(g.tick(1200, lock, 300.0, 400.0), 1185);
        assert_eq!(g.clamp(1980, lock), 1200);
    }
}
