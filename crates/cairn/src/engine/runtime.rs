//! State shared by everything a launched application runs: the store, its identity, the
//! workflows executing in this process, and the shutdown switch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;

use super::notify::Notifier;
use super::state::AppState;
use crate::error::PortableError;
use crate::store::Store;

/// A new id for a workflow (or a message) the caller did not name: a UUIDv7, time-ordered
/// with random low bits. Time order matters to the system database: its indexes on these ids
/// take new rows at one end instead of all over, so an insert touches the few pages already
/// in cache rather than a random page of an index as large as the whole history. (DBOS uses
/// random v4 UUIDs; any string is a valid id, so both kinds mix freely.)
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The applications launched in this process and not shut down, for direct workflow calls
/// outside any workflow (which need an application to run on).
static LAUNCHED: Mutex<Vec<std::sync::Weak<Runtime>>> = Mutex::new(Vec::new());

/// Which applications a direct workflow call outside a workflow could run on.
pub(crate) enum Launched {
    /// None is launched: the call is a plain call of the function.
    None,
    /// Exactly one: the call runs as a durable workflow on it.
    One(Arc<Runtime>),
    /// Several: the call cannot choose.
    Several,
}

/// Remember a launched application (until it shuts down).
pub(crate) fn register_launched(rt: &Arc<Runtime>) {
    let mut launched = LAUNCHED.lock().unwrap_or_else(|p| p.into_inner());
    launched.retain(|weak| weak.strong_count() > 0);
    launched.push(Arc::downgrade(rt));
}

/// The applications launched in this process that are not shutting down.
pub(crate) fn launched() -> Launched {
    let mut launched = LAUNCHED.lock().unwrap_or_else(|p| p.into_inner());
    launched.retain(|weak| weak.upgrade().is_some_and(|rt| !rt.is_shutting_down()));
    match launched.as_slice() {
        [] => Launched::None,
        [one] => one.upgrade().map_or(Launched::None, Launched::One),
        _ => Launched::Several,
    }
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

/// Why an execution here was interrupted at its waits and cancellable steps (the first
/// reason given stays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interruption {
    /// The workflow was cancelled (or timed out), here or by anyone in the database.
    Cancelled,
    /// The workflow is no longer this execution's: finished, resumed or claimed elsewhere.
    OwnershipLost,
    /// The application is shutting down; the workflow stays `PENDING` for recovery.
    Shutdown,
}

/// Where an execution learns that it was interrupted, and why.
pub(crate) type Interrupted = watch::Receiver<Option<Interruption>>;

/// A workflow executing in this process: its ownership token, where its outcome arrives, and
/// how to stop it.
struct Running {
    /// The token every write of this execution is guarded by.
    owner: String,
    outcome: OutcomeSlot,
    abort: Option<AbortHandle>,
    /// Set to interrupt the execution's waits and cancellable steps.
    interrupt: watch::Sender<Option<Interruption>>,
}

impl Running {
    /// Interrupt the execution for `reason`, unless it already was.
    fn interrupt(&self, reason: Interruption) {
        self.interrupt.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(reason);
            }
            first
        });
    }
}

/// The shared state of one launched application.
pub(crate) struct Runtime {
    pub store: Store,
    pub app_name: String,
    pub executor_id: String,
    pub app_version: String,
    /// The values given to the builder, for `cairn::state`.
    pub state: AppState,
    /// Wake-ups for durable waits.
    pub notifier: Arc<Notifier>,
    shutting_down: AtomicBool,
    /// Workflows executing in this process, by id, with the channel their outcome arrives on.
    /// The last execution of an id is its current one; any before it were superseded (the
    /// workflow was claimed again, here) and are unwinding.
    running: Mutex<HashMap<String, Vec<Running>>>,
    in_flight: AtomicUsize,
    idle: Notify,
    /// Woken when an execution ends while someone waits for fewer in memory (recovery).
    room: Notify,
    room_wanted: AtomicBool,
    /// Woken when shutdown begins, for background loops.
    shutdown: Notify,
    /// Bumped to wake the queue dispatchers (an enqueue here or elsewhere, a freed slot), so
    /// they claim now rather than at their next poll.
    dispatch: watch::Sender<u64>,
    /// The queues registered on the builder (`CairnBuilder::queue`), set once at launch.
    queues: std::sync::OnceLock<Vec<crate::engine::queue::Queue>>,
    /// How long a workflow may wait in memory before it is evicted (set at launch; unset for
    /// clients and when eviction is off).
    evict_after: std::sync::OnceLock<std::time::Duration>,
}

impl Runtime {
    pub(crate) fn new(
        store: Store,
        app_name: String,
        executor_id: String,
        app_version: String,
        state: AppState,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            app_name,
            executor_id,
            app_version,
            state,
            notifier: Arc::new(Notifier::default()),
            shutting_down: AtomicBool::new(false),
            running: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            room: Notify::new(),
            room_wanted: AtomicBool::new(false),
            shutdown: Notify::new(),
            dispatch: watch::channel(0).0,
            queues: std::sync::OnceLock::new(),
            evict_after: std::sync::OnceLock::new(),
        })
    }

    /// How long a workflow may wait in memory before it is evicted, if it may be.
    pub(crate) fn evict_after(&self) -> Option<std::time::Duration> {
        self.evict_after.get().copied()
    }

    /// Turn eviction on (once, at launch).
    pub(crate) fn set_evict_after(&self, after: std::time::Duration) {
        let _ = self.evict_after.set(after);
    }

    /// The queues this application defines (registered on its builder), in registration
    /// order. Empty before launch stores them.
    pub(crate) fn queues(&self) -> &[crate::engine::queue::Queue] {
        self.queues.get().map_or(&[], Vec::as_slice)
    }

    /// The definition of queue `name`, if this application defines it.
    pub(crate) fn queue(&self, name: &str) -> Option<&crate::engine::queue::Queue> {
        self.queues().iter().find(|q| q.name == name)
    }

    /// Record the application's queue definitions (once, at launch; later calls are ignored).
    pub(crate) fn set_queues(&self, queues: Vec<crate::engine::queue::Queue>) {
        let _ = self.queues.set(queues);
    }

    /// Completes when shutdown begins (at once if it has).
    pub(crate) async fn shutdown_requested(&self) {
        let notified = self.shutdown.notified();
        if !self.is_shutting_down() {
            notified.await;
        }
    }

    /// Ask the queue dispatchers to look now (one busy claiming looks again after).
    pub(crate) fn wake_dispatcher(&self) {
        self.dispatch.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Where the dispatchers learn of [`Runtime::wake_dispatcher`] calls.
    pub(crate) fn dispatch_wakes(&self) -> watch::Receiver<u64> {
        self.dispatch.subscribe()
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
        for running in self.running().values().flatten() {
            running.interrupt(Interruption::Shutdown);
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Running>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current execution of a workflow here, if any.
    fn current<'a>(
        running: &'a HashMap<String, Vec<Running>>,
        workflow_id: &str,
    ) -> Option<&'a Running> {
        running
            .get(workflow_id)
            .and_then(|executions| executions.last())
    }

    /// Register a workflow about to execute here under the ownership token `owner`; its
    /// outcome is published on the sender. An earlier execution of the same workflow still
    /// here is superseded (the workflow was claimed again, so it is no longer that one's):
    /// it is interrupted and left to unwind.
    pub(crate) fn track(
        self: &Arc<Self>,
        workflow_id: &str,
        owner: &str,
    ) -> (Execution, Interrupted) {
        let (sender, receiver) = watch::channel(None);
        let (interrupt, interrupted) = watch::channel(None);
        let running = Running {
            owner: owner.to_owned(),
            outcome: receiver,
            abort: None,
            interrupt,
        };
        {
            let mut all = self.running();
            let executions = all.entry(workflow_id.to_owned()).or_default();
            for earlier in executions.iter() {
                earlier.interrupt(Interruption::OwnershipLost);
            }
            executions.push(running);
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let execution = Execution {
            rt: Arc::clone(self),
            workflow_id: workflow_id.to_owned(),
            owner: owner.to_owned(),
            sender,
        };
        (execution, interrupted)
    }

    /// Interrupt a workflow executing here (every execution of it) at its current wait or
    /// cancellable step: it was cancelled.
    pub(crate) fn interrupt(&self, workflow_id: &str) {
        for running in self.running().get(workflow_id).into_iter().flatten() {
            running.interrupt(Interruption::Cancelled);
        }
    }

    /// Interrupt the execution of `workflow_id` holding `owner` for `reason`, if it is still
    /// here (not one that took its place since).
    pub(crate) fn interrupt_execution(&self, workflow_id: &str, owner: &str, reason: Interruption) {
        let running = self.running();
        let found = running
            .get(workflow_id)
            .into_iter()
            .flatten()
            .find(|r| r.owner == owner);
        if let Some(running) = found {
            running.interrupt(reason);
        }
    }

    /// The workflows executing here that have not been interrupted, each with its
    /// execution's ownership token (what the watchdog checks against the database).
    pub(crate) fn uninterrupted_executions(&self) -> Vec<(String, String)> {
        self.running()
            .iter()
            .flat_map(|(id, executions)| executions.iter().map(move |r| (id, r)))
            .filter(|(_, r)| r.interrupt.borrow().is_none())
            .map(|(id, r)| (id.clone(), r.owner.clone()))
            .collect()
    }

    /// The outcome channel and the interruption flag of a workflow executing here, if it is.
    pub(crate) fn local_execution(&self, workflow_id: &str) -> Option<(OutcomeSlot, Interrupted)> {
        Self::current(&self.running(), workflow_id)
            .map(|r| (r.outcome.clone(), r.interrupt.subscribe()))
    }

    /// The outcome channel of a workflow executing in this process, if it is.
    pub(crate) fn local_outcome(&self, workflow_id: &str) -> Option<OutcomeSlot> {
        Self::current(&self.running(), workflow_id).map(|r| r.outcome.clone())
    }

    /// Remember how to abort the task of a tracked execution.
    pub(crate) fn set_abort(&self, workflow_id: &str, owner: &str, abort: AbortHandle) {
        let mut running = self.running();
        let found = running
            .get_mut(workflow_id)
            .into_iter()
            .flatten()
            .find(|r| r.owner == owner);
        if let Some(running) = found {
            running.abort = Some(abort);
        }
    }

    /// Abort every workflow task still executing here (they stay `PENDING` for recovery).
    pub(crate) fn abort_all(&self) {
        for running in self.running().values().flatten() {
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
    /// Completes once fewer than `limit` executions are in memory.
    pub(crate) async fn until_in_flight_below(&self, limit: usize) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.room_wanted.store(true, Ordering::SeqCst);
            if self.in_flight() < limit {
                self.room_wanted.store(false, Ordering::SeqCst);
                return;
            }
            notified.await;
        }
    }

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
    /// Its ownership token, which tells it from other executions of the same workflow.
    owner: String,
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
        {
            let mut running = self.rt.running();
            if let Some(executions) = running.get_mut(&self.workflow_id) {
                executions.retain(|r| r.owner != self.owner);
                if executions.is_empty() {
                    running.remove(&self.workflow_id);
                }
            }
        }
        if self.sender.borrow().is_none() {
            self.sender.send_replace(Some(LocalOutcome::Interrupted));
        }
        if self.rt.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.rt.idle.notify_waiters();
        }
        if self.rt.room_wanted.load(Ordering::SeqCst) {
            self.rt.room.notify_waiters();
        }
    }
}
