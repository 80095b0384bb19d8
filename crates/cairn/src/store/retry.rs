//! Riding out database outages: transient failures are retried with capped, jittered
//! exponential backoff for as long as the outage lasts, bounded only by shutdown.
//!
//! One outage is logged once: a warning when the first operation fails, and a line when the
//! database answers again, however many operations and attempts waited in between.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Operation;
use crate::error::{Error, Result};

/// The first wait after a transient failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The retry policy of one store, shared by every operation on it.
pub(crate) struct Retry {
    /// Flipped to `true` when retrying must stop (shutdown).
    stopped: watch::Sender<bool>,
    /// Operations currently waiting out a failure.
    waiting: AtomicUsize,
    /// Whether an outage is in progress (logged once when it begins and once when it ends).
    outage: AtomicBool,
    /// When the current outage began.
    since: Mutex<Option<Instant>>,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            stopped: watch::channel(false).0,
            waiting: AtomicUsize::new(0),
            outage: AtomicBool::new(false),
            since: Mutex::new(None),
        }
    }
}

impl Retry {
    /// Stop retrying: waiting operations end with [`Error::Shutdown`] at once, and later
    /// transient failures are returned as [`Error::Shutdown`] without a retry.
    pub(crate) fn stop(&self) {
        self.stopped.send_replace(true);
    }

    fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Run `attempt` until it succeeds, fails permanently, or retrying stops.
    pub(crate) async fn run<O, T, F, Fut>(&self, op: &O, mut attempt: F) -> Result<T>
    where
        O: Operation + ?Sized,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut failed = false;
        loop {
            match attempt().await {
                Ok(value) => {
                    if failed {
                        self.recovered();
                    }
                    return Ok(value);
                }
                Err(error) if error.is_transient() => {
                    if self.is_stopped() {
                        if failed {
                            self.waiting.fetch_sub(1, Ordering::SeqCst);
                        }
                        tracing::debug!(%error, "{}: not retried, the store is shutting down", op.describe());
                        return Err(Error::Shutdown);
                    }
                    if !failed {
                        failed = true;
                        self.waiting.fetch_add(1, Ordering::SeqCst);
                        self.failing(&op.describe(), &error);
                    }
                    if !self.pause(backoff).await {
                        self.waiting.fetch_sub(1, Ordering::SeqCst);
                        return Err(Error::Shutdown);
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(error) => {
                    if failed {
                        self.waiting.fetch_sub(1, Ordering::SeqCst);
                    }
                    return Err(error);
                }
            }
        }
    }

    /// Run `attempt` until it succeeds, fails permanently, or `limit` has passed since the
    /// first failure (then the last transient error is returned). For opening the database,
    /// which has no operation to wait on yet.
    pub(crate) async fn run_for<T, F, Fut>(
        &self,
        limit: Duration,
        what: &str,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut logged = false;
        loop {
            match attempt().await {
                Err(error) if error.is_transient() => {
                    let waited = started.elapsed();
                    if waited >= limit {
                        tracing::error!(%error, "{what}: the system database stayed unreachable for {limit:?}; giving up");
                        return Err(error);
                    }
                    if !logged {
                        logged = true;
                        tracing::warn!(%error, "{what}: the system database is not reachable yet; retrying for up to {limit:?}");
                    }
                    tokio::time::sleep(jitter(backoff).min(limit - waited)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                other => {
                    if logged && other.is_ok() {
                        tracing::info!(
                            "{what}: the system database answered after {:?}",
                            started.elapsed()
                        );
                    }
                    return other;
                }
            }
        }
    }

    /// Sleep about `backoff` (jittered); `false` if retrying stopped meanwhile.
    async fn pause(&self, backoff: Duration) -> bool {
        let mut stopped = self.stopped.subscribe();
        tokio::select! {
            () = tokio::time::sleep(jitter(backoff)) => !self.is_stopped(),
            _ = stopped.wait_for(|s| *s) => false,
        }
    }

    /// An operation began waiting out a failure: log it if it opens an outage.
    fn failing(&self, what: &str, error: &Error) {
        if !self.outage.swap(true, Ordering::SeqCst) {
            *self.since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            tracing::warn!(%error, "the system database is unavailable ({what}); durable operations wait and retry until it is back");
        }
    }

    /// An operation that had failed succeeded: the outage ends when none is still waiting.
    fn recovered(&self) {
        if self.waiting.fetch_sub(1, Ordering::SeqCst) == 1
            && self.outage.swap(false, Ordering::SeqCst)
        {
            let since = self.since.lock().unwrap_or_else(|p| p.into_inner()).take();
            let lasted = since.map(|s| s.elapsed()).unwrap_or_default();
            tracing::info!(?lasted, "the system database is available again");
        }
    }
}

/// `backoff` scaled by a random factor in [0.5, 1.5), so waiters spread out.
fn jitter(backoff: Duration) -> Duration {
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    let factor = 0.5 + (random % 1000) as f64 / 1000.0;
    backoff.mul_f64(factor)
}
