//! State shared by everything a launched application runs: the store, its identity, the
//! workflows executing in this process, and the shutdown switch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;

use super::notify::Notifier;
use crate::error::PortableError;
use crate::store::Store;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How a workflow executing in this process ended, as its local waiters learn it.
#[derive(Debug, Clone)]
pub(crate) enum LocalOutcome {
    /// The outcome was written: `Ok(output JSON)` or `Err(error)`.
    Finished(Result<String, PortableError>),
    /// The execution stopped without writing an outcome (cancelled, taken over, shutting
    /// down); the database says what happened.
    Interrupted,
}

type OutcomeSlot = watch::Receiver<Option<LocalOutcome>>;

/// A workflow executing in this process: where its outcome arrives, and how to stop it.
struct Running {
    outcome: OutcomeSlot,
    abort: Option<AbortHandle>,
    /// Flipped to `true` to interrupt the execution's waits and cancellable steps.
    cancel: watch::Sender<bool>,
}

/// The shared state of one launched application.
pub(crate) struct Runtime {
    pub store: Store,
    pub app_name: String,
    pub executor_id: String,
    pub app_version: String,
    /// Wake-ups for durable waits.
    pub notifier: Arc<Notifier>,
    shutting_down: AtomicBool,
    /// Workflows executing in this process, by id, with the channel their outcome arrives on.
    running: Mutex<HashMap<String, Running>>,
    in_flight: AtomicUsize,
    idle: Notify,
    /// Woken when shutdown begins, for background loops.
    shutdown: Notify,
}

impl Runtime {
    pub(crate) fn new(
        store: Store,
        app_name: String,
        executor_id: String,
        app_version: String,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            app_name,
            executor_id,
            app_version,
            notifier: Arc::new(Notifier::default()),
            shutting_down: AtomicBool::new(false),
            running: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            shutdown: Notify::new(),
        })
    }

    /// Completes when shutdown begins (at once if it has).
    pub(crate) async fn shutdown_requested(&self) {
        let notified = self.shutdown.notified();
        if !self.is_shutting_down() {
            notified.await;
        }
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        // Operations waiting out a database outage give up: their workflows stay PENDING.
        self.store.stop_retrying();
        self.shutdown.notify_waiters();
        // Waiting workflows stop at their wait; they stay PENDING for the next launch.
        for running in self.running().values() {
            running.cancel.send_replace(true);
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a workflow about to execute here; its outcome is published on the sender.
    pub(crate) fn track(self: &Arc<Self>, workflow_id: &str) -> (Execution, watch::Receiver<bool>) {
        let (sender, receiver) = watch::channel(None);
        let (cancel, cancelled) = watch::channel(false);
        let running = Running {
            outcome: receiver,
            abort: None,
            cancel,
        };
        self.running().insert(workflow_id.to_owned(), running);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let execution = Execution {
            rt: Arc::clone(self),
            workflow_id: workflow_id.to_owned(),
            sender,
        };
        (execution, cancelled)
    }

    /// Interrupt a workflow executing here at its current wait or cancellable step.
    pub(crate) fn interrupt(&self, workflow_id: &str) {
        if let Some(running) = self.running().get(workflow_id) {
            running.cancel.send_replace(true);
        }
    }

    /// The outcome channel and the interruption flag of a workflow executing here, if it is.
    pub(crate) fn local_execution(
        &self,
        workflow_id: &str,
    ) -> Option<(OutcomeSlot, watch::Receiver<bool>)> {
        self.running()
            .get(workflow_id)
            .map(|r| (r.outcome.clone(), r.cancel.subscribe()))
    }

    /// The outcome channel of a workflow executing in this process, if it is.
    pub(crate) fn local_outcome(&self, workflow_id: &str) -> Option<OutcomeSlot> {
        self.running().get(workflow_id).map(|r| r.outcome.clone())
    }

    /// Remember how to abort a tracked workflow's task.
    pub(crate) fn set_abort(&self, workflow_id: &str, abort: AbortHandle) {
        if let Some(running) = self.running().get_mut(workflow_id) {
            running.abort = Some(abort);
        }
    }

    /// Abort every workflow task still executing here (they stay `PENDING` for recovery).
    pub(crate) fn abort_all(&self) {
        for running in self.running().values() {
            if let Some(abort) = &running.abort {
                abort.abort();
            }
        }
    }

    /// Whether this workflow is executing in this process.
    pub(crate) fn is_running_here(&self, workflow_id: &str) -> bool {
        self.running().contains_key(workflow_id)
    }

    /// How many workflows are executing in this process.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Wait until no workflow executes in this process.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A workflow executing in this process. Dropping it (even by abort) unregisters it and wakes
/// its waiters, who then read the database.
pub(crate) struct Execution {
    rt: Arc<Runtime>,
    workflow_id: String,
    sender: watch::Sender<Option<LocalOutcome>>,
}

impl Execution {
    /// Publish the outcome to local waiters.
    pub(crate) fn publish(self, outcome: LocalOutcome) {
        self.sender.send_replace(Some(outcome));
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        self.rt.running().remove(&self.workflow_id);
        if self.sender.borrow().is_none() {
            self.sender.send_replace(Some(LocalOutcome::Interrupted));
        }
        if self.rt.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.rt.idle.notify_waiters();
        }
    }
}
