//! The engines' front door for async code (data parallel: one engine per GPU): each request
//! goes to the engine with the least work on hand, and only when every engine's queue is full
//! is it refused. With one engine this is that engine's handle.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use gridserve_models::BackendInfo;

use super::handle::{EngineHandle, RequestStream, SubmitError};
use super::request::GenerationRequest;
use crate::power::EnergySource;

/// Cheap to clone; every clone routes over the same engines.
#[derive(Clone)]
pub struct EnginePool {
    engines: Arc<[EngineHandle]>,
    /// Where ties start, so equally idle engines take turns.
    turn: Arc<AtomicUsize>,
}

impl EnginePool {
    /// `None` without engines.
    pub fn new(engines: Vec<EngineHandle>) -> Option<Self> {
        (!engines.is_empty()).then(|| Self {
            engines: engines.into(),
            turn: Arc::default(),
        })
    }

    pub fn engines(&self) -> &[EngineHandle] {
        &self.engines
    }

    /// The model's facts (every engine runs the same model).
    pub fn info(&self) -> &BackendInfo {
        self.engines[0].info()
    }

    /// Where per-request energy figures come from (every engine has the same kind of meter).
    pub fn energy_source(&self) -> Option<EnergySource> {
        self.engines[0].energy_source()
    }

    /// Queues a request on the least busy engine; never blocks. `QueueFull` (HTTP 429) only
    /// when every engine's queue is full; `Stopped` only when every engine has stopped.
    pub fn submit(&self, request: GenerationRequest) -> Result<RequestStream, SubmitError> {
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        let loads: Vec<usize> = self.engines.iter().map(load).collect();
        let mut refusal = SubmitError::Stopped;
        for i in route_order(&loads, start) {
            match self.engines[i].submit(request.clone()) {
                Ok(stream) => return Ok(stream),
                Err(full @ SubmitError::QueueFull { .. }) => refusal = full,
                Err(SubmitError::Stopped) => {}
            }
        }
        Err(refusal)
    }
}

/// Engines to try, least loaded first; among equals, in turn from `start`.
fn route_order(loads: &[usize], start: usize) -> Vec<usize> {
    let n = loads.len().max(1);
    let mut order: Vec<usize> = (0..loads.len()).map(|i| (start + i) % n).collect();
    order.sort_by_key(|&i| loads[i]);
    order
}

/// Sequences an engine has on hand: running, waiting, and submitted but not yet taken in.
fn load(engine: &EngineHandle) -> usize {
    let s = engine.status();
    s.running.load(Ordering::Relaxed)
        + s.waiting.load(Ordering::Relaxed)
        + s.queued.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use gridserve_models::sampling::SamplingParams;
    use tokio::sync::mpsc;

    use super::*;
    use crate::engine::handle::EngineCommand;
    use crate::engine::{EngineStatus, Priority};

    fn info() -> BackendInfo {
        use gridserve_models::ModelBackend;
        gridserve_models::testing::FakeBackend::new(16, 8, 4, 64)
            .info()
            .clone()
    }

    /// A handle whose engine never takes anything in: what was submitted stays queued.
    fn stalled(max_waiting: usize) -> (EngineHandle, mpsc::Receiver<EngineCommand>) {
        let (tx, rx) = mpsc::channel(8);
        let status = std::sync::Arc::new(EngineStatus::default());
        (EngineHandle::new(tx, status, info(), max_waiting, None), rx)
    }

    fn request() -> GenerationRequest {
        GenerationRequest {
            prompt: vec![1, 2, 3],
            sampling: SamplingParams::default(),
            max_tokens: 4,
            stop_token_ids: vec![],
            ignore_eos: false,
            priority: Priority::Standard,
        }
    }

    #[test]
    fn the_least_loaded_engine_goes_first_and_ties_take_turns() {
        assert_eq!(route_order(&[3, 0, 1], 0), vec![1, 2, 0]);
        assert_eq!(route_order(&[0, 0, 0], 1), vec![1, 2, 0]);
        assert_eq!(route_order(&[0, 0], 7), vec![1, 0]);
    }

    #[test]
    fn requests_spread_over_engines_and_are_refused_only_when_all_are_full() {
        let ((a, mut rx_a), (b, mut rx_b)) = (stalled(2), stalled(2));
        let pool = EnginePool::new(vec![a.clone(), b.clone()]).unwrap();
        for _ in 0..4 {
            pool.submit(request()).expect("room on some engine");
        }
        let queued = |h: &EngineHandle| h.status().queued.load(Ordering::Relaxed);
        assert_eq!((queued(&a), queued(&b)), (2, 2), "two each");
        let err = pool.submit(request()).err().unwrap();
        assert!(matches!(err, SubmitError::QueueFull { .. }), "{err:?}");
        assert!(rx_a.try_recv().is_ok() && rx_b.try_recv().is_ok());
    }

    #[test]
    fn a_stopped_engine_is_passed_over() {
        let ((a, rx_a), (b, _rx_b)) = (stalled(4), stalled(4));
        drop(rx_a);
        let pool = EnginePool::new(vec![a, b.clone()]).unwrap();
        for _ in 0..3 {
            pool.submit(request()).expect("engine b takes it");
        }
        assert_eq!(b.status().queued.load(Ordering::Relaxed), 3);
        let (c, rx_c) = stalled(4);
        drop(rx_c);
        let err = EnginePool::new(vec![c]).unwrap().submit(request()).err();
        assert_eq!(err, Some(SubmitError::Stopped));
    }
}
