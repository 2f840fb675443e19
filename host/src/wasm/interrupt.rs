//! Why and when a guest must stop: a signal, a timeout. Checked by the
//! epoch callback (for guests that compute) and awaited by the runner (for
//! guests blocked in a host call).
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// Why a guest was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A signal (SIGTERM, SIGINT, SIGKILL...); exit status 128+signal.
    Signal(i32),
    /// The wall-clock limit ran out.
    Timeout,
}

impl Reason {
    fn encode(self) -> i32 {
        match self {
            Reason::Signal(s) => s.max(1),
            Reason::Timeout => -1,
        }
    }
    fn decode(v: i32) -> Option<Reason> {
        match v {
            0 => None,
            -1 => Some(Reason::Timeout),
            s => Some(Reason::Signal(s)),
        }
    }
}

/// A shareable stop switch for one guest. The first reason wins.
#[derive(Clone)]
pub struct Interrupt {
    inner: Arc<Inner>,
}

struct Inner {
    reason: AtomicI32,
    tx: watch::Sender<Option<Reason>>,
}

impl Default for Interrupt {
    fn default() -> Self {
        Self::new()
    }
}

impl Interrupt {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(None);
        Interrupt { inner: Arc::new(Inner { reason: AtomicI32::new(0), tx }) }
    }

    /// Asks the guest to stop. Later calls do not change the first reason.
    pub fn trigger(&self, reason: Reason) {
        if self.inner.reason.compare_exchange(0, reason.encode(), Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            self.inner.tx.send_replace(Some(reason));
        }
    }

    /// The stop reason, if any. Cheap: called on every epoch tick.
    pub fn reason(&self) -> Option<Reason> {
        Reason::decode(self.inner.reason.load(Ordering::Relaxed))
    }

    /// Resolves once the guest has been asked to stop.
    pub async fn triggered(&self) -> Reason {
        let mut rx = self.inner.tx.subscribe();
        let r = rx.wait_for(|r| r.is_some()).await.map(|r| *r);
        match r {
            Ok(Some(reason)) => reason,
            // The sender lives in `self`, so the channel cannot close here.
            _ => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_reason_wins() {
        let i = Interrupt::new();
        assert_eq!(i.reason(), None);
        let waiter = tokio::spawn({
            let i = i.clone();
            async move { i.triggered().await }
        });
        i.trigger(Reason::Signal(15));
        i.trigger(Reason::Timeout);
        assert_eq!(i.reason(), Some(Reason::Signal(15)));
        assert_eq!(waiter.await.unwrap(), Reason::Signal(15));
        // a waiter that arrives late still sees it
        assert_eq!(i.triggered().await, Reason::Signal(15));
    }
}
