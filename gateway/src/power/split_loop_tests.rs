//! The split in closed loop: two twin H100s (Llama-3.1-8B decode) under one node cap, each
//! steered by its own controller against its share, in virtual time, judged on the node's
//! exact 1 s average power.

use super::*;
use crate::power::controller::tests::Loop;

/// Two GPUs, their controllers' last decisions, and the split between them.
struct Node {
    gpus: [Loop; 2],
    last: [Option<Decision>; 2],
    split: CapSplit,
}

impl Node {
    fn new(demands: [u32; 2]) -> Self {
        Self {
            gpus: demands.map(Loop::new),
            last: [None, None],
            split: CapSplit::default(),
        }
    }

    /// One controller period of both GPUs; returns the shares it ran under.
    fn period(&mut self, cap_watts: f64) -> Vec<f64> {
        let demands: Vec<EngineDemand> = self
            .gpus
            .iter()
            .zip(&self.last)
            .map(|(g, d)| EngineDemand::of(g.controller.settings(), d.as_ref()))
            .collect();
        let shares = self.split.update(cap_watts, &demands).to_vec();
        for ((gpu, last), share) in self.gpus.iter_mut().zip(&mut self.last).zip(&shares) {
            *last = Some(gpu.period(Some(*share), true));
        }
        shares
    }

    fn node_watts(&self) -> f64 {
        self.gpus.iter().map(Loop::one_second_watts).sum()
    }

    /// Runs `periods` periods under `cap`; returns the last shares and how many 1 s checks
    /// after the first `settle` periods were over the cap.
    fn run(&mut self, cap: f64, periods: usize, settle: usize) -> (Vec<f64>, usize) {
        let (mut shares, mut over) = (Vec::new(), 0);
        for i in 1..=periods {
            shares = self.period(cap);
            if i > settle && self.node_watts() > cap {
                over += 1;
            }
        }
        (shares, over)
    }
}

#[test]
fn a_busy_gpu_gets_what_an_idle_one_leaves_and_the_node_stays_under_the_cap() {
    let cap = 600.0;
    // One GPU serves 128 sequences, the other nothing.
    let mut node = Node::new([128, 0]);
    let (shares, over) = node.run(cap, 300, 20);
    assert!(over <= 3, "{over} of 280 checks over the {cap} W cap");
    let idle = node.gpus[1].one_second_watts();
    let busy = node.gpus[0].one_second_watts();
    println!("{cap} W cap: shares {shares:?}, busy GPU {busy:.0} W, idle GPU {idle:.0} W");
    assert!(
        shares[0] > shares[1] + 0.05 * cap,
        "the busy GPU should get more: {shares:?}"
    );
    assert!(
        shares[1] >= idle,
        "the idle GPU keeps its draw: {shares:?}, it draws {idle}"
    );
    assert!(
        busy > cap / 2.0,
        "the busy GPU uses more than an even split: {busy:.0} W"
    );

    // The idle one gets as busy: the split evens out, still under the cap.
    node.gpus[1].demand = 128;
    let (shares, over) = node.run(cap, 300, 30);
    assert!(
        over <= 3,
        "{over} of 270 checks over the cap after the change"
    );
    assert!(
        (shares[0] - shares[1]).abs() <= 0.05 * cap,
        "even demand, even split: {shares:?}"
    );
    println!(
        "both busy: shares {shares:?}, node {:.0} W",
        node.node_watts()
    );
}
