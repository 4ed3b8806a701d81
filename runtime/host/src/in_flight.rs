//! Work in flight, counted by guards: the count goes up when a guard is
//! taken and down when it is dropped, however the work ended, and one can
//! wait for it to reach zero (a session's outbound requests before
//! Terminated; a connection's requests before it may idle out).

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Clone)]
pub struct InFlight(Arc<watch::Sender<usize>>);

/// One piece of work in flight, for as long as it lives.
pub struct InFlightGuard(Arc<watch::Sender<usize>>);

impl Default for InFlight {
    fn default() -> Self {
        InFlight(Arc::new(watch::Sender::new(0)))
    }
}

impl InFlight {
    pub fn start(&self) -> InFlightGuard {
        self.0.send_modify(|n| *n += 1);
        InFlightGuard(Arc::clone(&self.0))
    }

    pub fn count(&self) -> usize {
        *self.0.borrow()
    }

    /// Resolves when nothing is in flight.
    pub async fn idle(&self) {
        let mut count = self.0.subscribe();
        // The sender lives in `self`, so the channel cannot close under us.
        let _ = count.wait_for(|&n| n == 0).await;
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}
