//! What the controller learns online: power as a function of effort, `P ≈ a + b·effort`,
//! fitted by recursive least squares with forgetting, so it follows the workload (a prefill
//! burst draws more at the same effort than steady decode). It is used for the feed-forward
//! jump when the target changes; feedback corrects what a straight line gets wrong.

/// Recursive least squares over (effort, watts) with exponential forgetting.
#[derive(Clone, Debug)]
pub struct PowerModel {
    /// [a, b].
    theta: [f64; 2],
    /// Inverse information matrix.
    p: [[f64; 2]; 2],
    forgetting: f64,
    samples: u32,
    effort_min: f64,
    effort_max: f64,
}

impl PowerModel {
    /// Starts from a prior: `idle_watts` at effort 0 and `full_watts` at effort 1 (e.g. from
    /// the GPU profile), held weakly so the first real samples dominate.
    pub fn new(idle_watts: f64, full_watts: f64, forgetting: f64) -> Self {
        Self {
            theta: [idle_watts, full_watts - idle_watts],
            p: [[1e4, 0.0], [0.0, 1e4]],
            forgetting,
            samples: 0,
            effort_min: f64::INFINITY,
            effort_max: f64::NEG_INFINITY,
        }
    }

    pub fn observe(&mut self, effort: f64, watts: f64) {
        if !(effort.is_finite() && watts.is_finite()) {
            return;
        }
        let x = [1.0, effort];
        let px = [
            self.p[0][0] * x[0] + self.p[0][1] * x[1],
            self.p[1][0] * x[0] + self.p[1][1] * x[1],
        ];
        let denom = self.forgetting + x[0] * px[0] + x[1] * px[1];
        let gain = [px[0] / denom, px[1] / denom];
        let error = watts - (self.theta[0] + self.theta[1] * effort);
        self.theta[0] += gain[0] * error;
        self.theta[1] += gain[1] * error;
        for (i, row) in self.p.iter_mut().enumerate() {
            for (j, cell) in row.iter_mut().enumerate() {
                *cell = (*cell - gain[i] * px[j]) / self.forgetting;
            }
        }
        self.samples += 1;
        self.effort_min = self.effort_min.min(effort);
        self.effort_max = self.effort_max.max(effort);
    }

    pub fn predict(&self, effort: f64) -> f64 {
        self.theta[0] + self.theta[1] * effort
    }

    /// The effort predicted to draw `watts`, once the fit has seen enough spread to have a
    /// slope worth trusting; None otherwise.
    pub fn effort_for(&self, watts: f64) -> Option<f64> {
        let trusted = self.samples >= 5 && self.effort_max - self.effort_min >= 0.05;
        let slope = self.theta[1];
        (trusted && slope > 1e-6).then(|| ((watts - self.theta[0]) / slope).clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_line_and_inverts_it() {
        let mut m = PowerModel::new(70.0, 700.0, 0.98);
        assert_eq!(m.effort_for(400.0), None);
        for i in 0..40 {
            let e = 0.3 + 0.7 * f64::from(i % 8) / 7.0;
            m.observe(e, 200.0 + 300.0 * e);
        }
        assert!((m.predict(0.5) - 350.0).abs() < 1.0, "{}", m.predict(0.5));
        let e = m.effort_for(380.0).unwrap();
        assert!((e - 0.6).abs() < 0.01, "{e}");
    }

    #[test]
    fn without_spread_it_does_not_guess_a_slope() {
        let mut m = PowerModel::new(70.0, 700.0, 0.98);
        for _ in 0..50 {
            m.observe(1.0, 650.0);
        }
        assert_eq!(m.effort_for(400.0), None);
    }
}
