//! The engine's front door for async code: submit a request, get its own event stream back.
//! Dropping the stream (the client went away, or a stop string matched) aborts the sequence
//! within one step.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use gridserve_models::sampling::TokenLogprob;
use gridserve_models::{BackendInfo, SeqId};
use tokio::sync::mpsc;

use super::request::{FinishReason, GenerationRequest};
use crate::power::EnergySource;

/// One generated token, with its log-probability and the requested alternatives.
#[derive(Clone, Debug)]
pub struct TokenEvent {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<TokenLogprob>,
    /// Energy this request has used so far, including the step that made this token (None
    /// when the engine has no energy meter). The last token's figure is the request's total.
    pub energy_joules: Option<f64>,
}

#[derive(Clone, Debug)]
pub enum EngineEvent {
    Token(TokenEvent),
    /// The last event of a stream that ended normally.
    Finished {
        reason: FinishReason,
    },
    /// The last event of a stream the engine could not complete.
    Failed {
        message: String,
        /// Set when the engine refused the request for now (deferred by the power envelope
        /// past its deadline): the client may retry after this long.
        retry_after: Option<Duration>,
    },
}

pub(crate) enum EngineCommand {
    Submit {
        id: SeqId,
        request: GenerationRequest,
        arrival: Instant,
        events: mpsc::UnboundedSender<EngineEvent>,
    },
}

/// Live counters the engine thread publishes after every step.
#[derive(Debug, Default)]
pub struct EngineStatus {
    pub running: AtomicUsize,
    pub waiting: AtomicUsize,
    /// Requests submitted but not yet taken in by the engine thread.
    pub queued: AtomicUsize,
    /// KV-cache use in parts per million.
    pub kv_usage_ppm: AtomicU64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the server is at capacity ({waiting} requests waiting); retry later")]
    QueueFull {
        waiting: usize,
        retry_after: Duration,
    },
    #[error("the engine has stopped")]
    Stopped,
}

/// Cheap to clone; every clone talks to the same engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<EngineCommand>,
    status: Arc<EngineStatus>,
    info: Arc<BackendInfo>,
    next_id: Arc<AtomicU64>,
    max_waiting: usize,
    energy_source: Option<EnergySource>,
}

impl EngineHandle {
    pub(crate) fn new(
        tx: mpsc::Sender<EngineCommand>,
        status: Arc<EngineStatus>,
        info: BackendInfo,
        max_waiting: usize,
        energy_source: Option<EnergySource>,
    ) -> Self {
        Self {
            tx,
            status,
            info: Arc::new(info),
            next_id: Arc::new(AtomicU64::new(1)),
            max_waiting,
            energy_source,
        }
    }

    /// Where per-request energy figures come from, if the engine measures them.
    pub fn energy_source(&self) -> Option<EnergySource> {
        self.energy_source
    }

    pub fn info(&self) -> &BackendInfo {
        &self.info
    }

    pub fn status(&self) -> &EngineStatus {
        &self.status
    }

    /// Queues a request; never blocks. A full queue is `QueueFull` (HTTP 429), not a wait.
    pub fn submit(&self, request: GenerationRequest) -> Result<RequestStream, SubmitError> {
        let waiting = self.status.waiting.load(Ordering::Relaxed)
            + self.status.queued.load(Ordering::Relaxed);
        let full = SubmitError::QueueFull {
            waiting,
            retry_after: Duration::from_secs(1),
        };
        if waiting >= self.max_waiting {
            return Err(full);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (events, rx) = mpsc::unbounded_channel();
        let cmd = EngineCommand::Submit {
            id,
            request,
            arrival: Instant::now(),
            events,
        };
        // Counted before sending: the engine thread may take the command (and uncount it)
        // before `try_send` even returns.
        self.status.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(cmd) {
            Ok(()) => Ok(RequestStream { id, rx }),
            Err(e) => {
                self.status.queued.fetch_sub(1, Ordering::Relaxed);
                match e {
                    mpsc::error::TrySendError::Full(_) => Err(full),
                    mpsc::error::TrySendError::Closed(_) => Err(SubmitError::Stopped),
                }
            }
        }
    }
}

/// A request's events, in order, ending with `Finished` or `Failed`. Drop it to cancel.
pub struct RequestStream {
    id: SeqId,
    rx: mpsc::UnboundedReceiver<EngineEvent>,
}

impl RequestStream {
    pub fn id(&self) -> SeqId {
        self.id
    }

    pub async fn recv(&mut self) -> Option<EngineEvent> {
        self.rx.recv().await
    }
}

impl Stream for RequestStream {
    type Item = EngineEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<EngineEvent>> {
        self.rx.poll_recv(cx)
    }
}
