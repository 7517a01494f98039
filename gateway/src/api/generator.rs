//! A `Stream` written as an `async` block that emits items: the stream owns the block, so
//! everything the block holds (engine `RequestStream`s, a detokenizer borrowing the tokenizer)
//! is dropped the moment the stream is — no spawned task that could outlive a disconnected
//! client and keep its sequences running.

use std::future::Future;

use futures::channel::mpsc;
use futures::{FutureExt, SinkExt, Stream, StreamExt};

/// Hands items from the producer block to the stream.
pub struct Emitter<T>(mpsc::Sender<T>);

impl<T> Emitter<T> {
    /// Waits until the consumer has taken the previous item, then queues `item`; so the block
    /// runs no further ahead of the client than one item. False once the stream is gone.
    pub async fn emit(&mut self, item: T) -> bool {
        self.0.send(item).await.is_ok()
    }
}

/// Runs `producer` as part of polling the returned stream; the stream ends after the producer
/// returns and every emitted item has been taken.
pub fn generate<T, F, Fut>(producer: F) -> impl Stream<Item = T> + Send + 'static
where
    T: Send + 'static,
    F: FnOnce(Emitter<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Capacity 0: one slot per sender, so at most one item waits in the channel.
    let (tx, rx) = mpsc::channel(0);
    // The producer contributes no items itself; it is merged in only to be polled.
    let driver = producer(Emitter(tx))
        .into_stream()
        .filter_map(|()| async { None });
    futures::stream::select(rx, driver)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn yields_items_in_order_then_ends() {
        let s = generate(|mut out| async move {
            for i in 0..3 {
                out.emit(i).await;
            }
        });
        assert_eq!(s.collect::<Vec<_>>().await, vec![0, 1, 2]);
    }

    #[tokio::test]
    async fn dropping_the_stream_drops_the_producer_state() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Flag(dropped.clone());
        let mut s = Box::pin(generate(move |mut out| async move {
            let _held = flag;
            loop {
                out.emit(1).await;
            }
        }));
        assert_eq!(s.next().await, Some(1));
        assert!(!dropped.load(Ordering::SeqCst));
        drop(s);
        assert!(dropped.load(Ordering::SeqCst));
    }
}
