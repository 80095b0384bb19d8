//! The application: configuration, launch, starting and retrieving workflows, shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;

use sha2::{Digest, Sha256};

use crate::engine::comm::SendOptions;
use crate::engine::context::{WorkflowContext, halting};
use crate::engine::enqueue::{self, EnqueueOptions};
use crate::engine::registry;
use crate::engine::runtime::Runtime;
use crate::engine::schedule::{self, Schedule, ScheduleOptions};
use crate::engine::state::AppState;
use crate::engine::step::StepCall;
use crate::engine::workflow::{self, StartOptions, WorkflowFn, WorkflowHandle};
use crate::engine::{comm, control};
use crate::engine::{dispatch, recovery};
use crate::error::{Error, Result};
use crate::status::{StepInfo, WorkflowStatus};
use crate::store::{self, GetWorkflow, ListCheckpoints, RegisterAppVersion, StoreOptions};

/// Environment variable naming the system database (a `postgres://` or `sqlite:` URL).
pub const DATABASE_URL_ENV: &str = "DBOS_SYSTEM_DATABASE_URL";
/// Environment variable overriding the executor id.
pub const EXECUTOR_ID_ENV: &str = "DBOS__VMID";
/// Environment variable overriding the application version.
pub const APP_VERSION_ENV: &str = "DBOS__APPVERSION";

/// How often SQLite checks for commits by other processes (Postgres pushes them instead).
const CHANGE_POLL: Duration = Duration::from_millis(50);

/// How to launch a [`Cairn`] application. Every option has a default; see each method.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until launch() is awaited"]
pub struct CairnBuilder {
    app_name: String,
    database_url: Option<String>,
    executor_id: Option<String>,
    app_version: Option<String>,
    store: StoreOptions,
    shutdown_grace: Duration,
    recover: bool,
    state: AppState,
    unique_executor_id: bool,
    /// See [`CairnBuilder::max_automatic_backfill`].
    max_automatic_backfill: usize,
    /// See [`CairnBuilder::schedule`].
    schedules: Vec<DeclaredSchedule>,
    listen_queues: Option<Vec<String>>,
    /// See [`CairnBuilder::queue`].
    queues: Vec<crate::engine::queue::Queue>,
}

impl CairnBuilder {
    /// The system database URL: `postgres://user:pass@host/db?sslmode=prefer`,
    /// `sqlite:///relative/file.sqlite`, `sqlite:////absolute/file.sqlite` (as DBOS and SQLAlchemy read them) or `sqlite::memory:`.
    /// Default: `$DBOS_SYSTEM_DATABASE_URL`, else `sqlite:///<app_name>.sqlite` (a file in the working directory, as DBOS).
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// This process's executor id; recovery at launch resumes the workflows recorded under it.
    /// Two live processes of one application (by name) never share an id on one system
    /// database, as two applications in one process do not: `launch()` holds it
    /// (a Postgres advisory lock, or an OS lock on a file beside the SQLite database) for as
    /// long as the application runs, and refuses to start a second process under it with
    /// [`Error::ExecutorIdInUse`] — the second would recover the first one's in-flight
    /// workflows and run their current steps again. Give every process its own id. A process
    /// that dies frees its id at once, however it dies, so its replacement launches and
    /// recovers its workflows (on Postgres, a host that vanished frees it when the server
    /// notices the connection is gone: see the server's `tcp_keepalives_*` settings).
    /// Default: `$DBOS__VMID`, else `local` (as DBOS; see
    /// [`unique_executor_id_if_in_use`](Self::unique_executor_id_if_in_use)).
    pub fn executor_id(mut self, id: impl Into<String>) -> Self {
        self.executor_id = Some(id.into());
        self
    }

    /// The application version recorded on each workflow; recovery resumes only workflows of
    /// the same version. Default: `$DBOS__APPVERSION`, else a hash of every registered
    /// workflow's source tokens, Cairn's version and the application name — stable across
    /// rebuilds that leave workflow code alone, different when a workflow changes (so old
    /// executions are not replayed against new code).
    pub fn app_version(mut self, version: impl Into<String>) -> Self {
        self.app_version = Some(version.into());
        self
    }

    /// The Postgres schema holding the system tables. Default: `dbos`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.store.schema = schema.into();
        self
    }

    /// Maximum database connections (Postgres pool; SQLite readers). Default: 16.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.store.pool_size = size.max(1);
        self
    }

    /// How long `launch()` keeps trying while the system database is unreachable (a server
    /// still starting, a network not up yet) before it fails with the last error. Once
    /// launched, durable operations wait out outages for as long as they last. Default: 30 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.store.connect_timeout = timeout;
        self
    }

    /// How long `shutdown()` lets in-flight workflows reach their next checkpoint before it
    /// abandons them (they stay `PENDING` and resume at the next launch). Default: 5 seconds.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// The queues this process takes work from (as DBOS's `listen_queues`): any of the
    /// declared queues (a name not declared here is served without limits). DBOS's internal
    /// queue (resumes, forks) is always served. Default: every declared queue.
    pub fn listen_queues<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.listen_queues = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// The most missed ticks a schedule with
    /// [`ScheduleOptions::automatic_backfill`] fires when this process starts firing it (the
    /// latest ones; older ones are skipped). Also bounds how many overdue ticks of one
    /// schedule are fired at once after this process was suspended. Default: 100.
    pub fn max_automatic_backfill(mut self, ticks: usize) -> Self {
        self.max_automatic_backfill = ticks;
        self
    }

    /// Declare a schedule: `launch()` creates it, or replaces the definition of the stored
    /// schedule of that name (keeping its status — a paused schedule stays paused — and its
    /// last tick), as DBOS's `upsert_schedule`. The workflow must take the tick's scheduled
    /// time and the context, `(chrono::DateTime<Utc>, C)`; see
    /// [`Cairn::create_schedule`] for the cron expression. An invalid cron expression or time
    /// zone, or a context that cannot be serialized, fails `launch()` with
    /// [`Error::InvalidArgument`]. Default: none.
    pub fn schedule<W, M, C>(
        mut self,
        name: impl Into<String>,
        _workflow: W,
        cron: impl Into<String>,
        context: C,
        options: ScheduleOptions,
    ) -> Self
    where
        W: WorkflowFn<M, Args = (chrono::DateTime<chrono::Utc>, C)>,
        C: serde::Serialize,
    {
        self.schedules.push(DeclaredSchedule {
            name: name.into(),
            registration: workflow::registration_of::<W>,
            cron: cron.into(),
            context: serde_json::to_value(&context).map_err(|e| e.to_string()),
            options,
        });
        self
    }

    /// Whether `launch()` resumes this executor's unfinished workflows. Default: true.
    pub fn recover_on_launch(mut self, recover: bool) -> Self {
        self.recover = recover;
        self
    }

    /// When no executor id was chosen (neither [`executor_id`](Self::executor_id) nor
    /// `$DBOS__VMID`) and a live process already runs as `local` on the same system
    /// database, launch under a fresh id `local-<uuid>` (logged) instead of failing with
    /// [`Error::ExecutorIdInUse`]. Meant for short-lived helpers beside a running service (a
    /// script that starts or inspects workflows): workflows started under a fresh id are
    /// recovered only by a process launched with that same id, so a long-running process
    /// should set a stable id of its own instead. An id that was chosen is never replaced.
    /// Default: false.
    pub fn unique_executor_id_if_in_use(mut self, unique: bool) -> Self {
        self.unique_executor_id = unique;
        self
    }

    /// Define a queue this application serves and enqueues on (several may be given). At
    /// launch each definition is stored in the system database's `queues` table as DBOS 3.4
    /// stores it: a new name is inserted; an existing one is overwritten only when this
    /// process's application version is the latest registered (so an older version in a
    /// rolling deploy keeps the newer limits); a name another application registered is an
    /// error. An invalid definition, or two with one name, fail `launch()` with
    /// [`Error::InvalidArgument`]. Default: none.
    pub fn queue(mut self, queue: crate::engine::queue::Queue) -> Self {
        self.queues.push(queue);
        self
    }

    /// A value every workflow and step of the application can reach with
    /// [`cairn::state::<T>()`](crate::state): a database pool, an HTTP client, configuration.
    /// One value per type (several types may be given); giving a type again replaces its
    /// value. Default: none.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }

    /// A value for the workflows started as instance `instance`
    /// ([`StartOptions::with_instance`]): one workflow function, several configured
    /// instances, as DBOS's configured class instances. [`cairn::state::<T>()`](crate::state)
    /// returns the instance's value, else the application's. Giving any value configures the
    /// instance; only configured instances can be started, and a recovered workflow of an
    /// instance this process does not configure is left for a process that does.
    /// Default: no instances.
    pub fn instance_state<T: Send + Sync + 'static>(
        mut self,
        instance: impl Into<String>,
        value: T,
    ) -> Self {
        self.state.insert_for(instance.into(), value);
        self
    }

    /// Open (creating and migrating if needed) the system database, take the executor id,
    /// record the application version, and resume this executor's unfinished workflows.
    /// Fails with [`Error::DuplicateWorkflowName`] if two workflow functions share a name, and
    /// with [`Error::ExecutorIdInUse`] if a live process already runs under the executor id
    /// (see [`executor_id`](Self::executor_id)).
    pub async fn launch(self) -> Result<Cairn> {
        if self.app_name.trim().is_empty() {
            return Err(Error::InvalidArgument {
                argument: "app_name",
                reason: "must not be empty".to_owned(),
            });
        }
        registry::check_unique_names()?;
        // Before anything is opened: a bad declaration is a programming error.
        for declared in &self.schedules {
            declared.check()?;
        }
        check_queues(&self.queues)?;
        let url = match self.database_url {
            Some(url) => url,
            None => std::env::var(DATABASE_URL_ENV)
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| format!("sqlite:///{}.sqlite", self.app_name)),
        };
        let chosen_executor_id = self.executor_id.or_else(|| {
            std::env::var(EXECUTOR_ID_ENV)
                .ok()
                .filter(|v| !v.is_empty())
        });
        let app_version = self
            .app_version
            .or_else(|| {
                std::env::var(APP_VERSION_ENV)
                    .ok()
                    .filter(|v| !v.is_empty())
            })
            .unwrap_or_else(|| default_app_version(&self.app_name));
        let store = store::open(&url, &self.store).await?;
        // Before recovery can touch the workflows recorded under the id.
        let held = hold_executor_id(
            &store,
            &self.app_name,
            chosen_executor_id,
            self.unique_executor_id,
            self.store.connect_timeout,
        )
        .await;
        let executor_id = match held {
            Ok(executor_id) => executor_id,
            Err(error) => {
                store.close().await;
                return Err(error);
            }
        };
        let rt = Runtime::new(store, self.app_name, executor_id, app_version, self.state);
        let version = RegisterAppVersion {
            version: rt.app_version.clone(),
            application_name: Some(rt.app_name.clone()),
            now_ms: crate::engine::runtime::now_ms(),
        };
        rt.store.run(version).await?;
        for queue in &self.queues {
            let upsert = store::UpsertQueue {
                queue: queue.clone(),
                application_name: rt.app_name.clone(),
                update: store::QueueUpdate::IfLatestVersion(rt.app_version.clone()),
                now_ms: crate::engine::runtime::now_ms(),
            };
            rt.store.run(upsert).await?;
        }
        rt.set_queues(self.queues);
        tracing::info!(
            app = %rt.app_name,
            backend = rt.store.backend(),
            executor_id = %rt.executor_id,
            app_version = %rt.app_version,
            "Cairn launched"
        );
        let notifier = Arc::clone(&rt.notifier);
        // Weak: the store (which keeps the sink) belongs to the runtime.
        let dispatcher_rt = Arc::downgrade(&rt);
        let sink: crate::store::ChangeSink = Arc::new(move |channel: &str, payload: &str| {
            if channel == dispatch::QUEUE_CHANNEL {
                // Another process enqueued: claim now.
                if let Some(rt) = dispatcher_rt.upgrade() {
                    rt.wake_dispatcher();
                }
                return;
            }
            match crate::engine::notify::Channel::from_pg(channel) {
                Some(channel) => notifier.announce_payload(channel, payload),
                None => {
                    notifier.announce_all();
                    // SQLite's feed: another process wrote, perhaps an enqueue.
                    if let Some(rt) = dispatcher_rt.upgrade() {
                        rt.wake_dispatcher();
                    }
                }
            }
        });
        rt.store.watch_changes(sink, CHANGE_POLL).await?;
        let app = Cairn {
            rt,
            shutdown_grace: self.shutdown_grace,
            background: Arc::new(std::sync::Mutex::new(Vec::new())),
            scheduler: schedule::Scheduler::new(self.max_automatic_backfill),
        };
        for declared in &self.schedules {
            declared.upsert(&app.rt).await?;
        }
        if self.recover {
            let resumed = recovery::recover_pending(&app.rt).await?;
            if !resumed.is_empty() {
                tracing::info!(count = resumed.len(), "resumed unfinished workflows");
            }
            recovery::report_other_versions(&app.rt).await;
        }
        let served = dispatch::served(app.rt.queues(), self.listen_queues.as_deref());
        let dispatcher = tokio::spawn(dispatch::dispatch(Arc::clone(&app.rt), served));
        let watchdog = tokio::spawn(crate::engine::watchdog::watch(Arc::clone(&app.rt)));
        app.background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([dispatcher, watchdog]);
        let scheduler = tokio::spawn(schedule::run(
            Arc::clone(&app.rt),
            Arc::clone(&app.scheduler),
        ));
        app.background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(scheduler);
        crate::engine::runtime::register_launched(&app.rt);
        Ok(app)
    }
}

/// A schedule given to [`CairnBuilder::schedule`], stored at launch.
#[derive(Debug, Clone)]
struct DeclaredSchedule {
    name: String,
    /// The workflow's registration (resolved at launch, when the registry is complete).
    registration: fn() -> Result<&'static registry::WorkflowRegistration>,
    cron: String,
    /// The context as JSON, or why it could not be serialized.
    context: std::result::Result<serde_json::Value, String>,
    options: ScheduleOptions,
}

impl DeclaredSchedule {
    /// Check the declaration: the workflow, the cron expression, the time zone, the context.
    fn check(&self) -> Result<()> {
        (self.registration)()?;
        self.context()?;
        schedule::validate(&self.name, &self.cron, &self.options)
    }

    fn context(&self) -> Result<serde_json::Value> {
        self.context
            .clone()
            .map_err(|reason| Error::InvalidArgument {
                argument: "context",
                reason: format!("the context of schedule {}: {reason}", self.name),
            })
    }

    /// Create the schedule, or replace the stored definition of that name.
    async fn upsert(&self, rt: &Runtime) -> Result<()> {
        let registration = (self.registration)()?;
        let context = self.context()?;
        let row = schedule::new_row(
            rt,
            &self.name,
            registration.name,
            &self.cron,
            &context,
            &self.options,
        )?;
        let op = store::CreateSchedule {
            row,
            replace_definition: true,
        };
        rt.store.run(op).await.map(drop)
    }
}

/// The executor id `launch()` runs as when none is chosen (as DBOS).
const DEFAULT_EXECUTOR_ID: &str = "local";

/// How long `launch()` keeps trying an executor id that is in use before it refuses: a
/// process that has just died may still hold it for a moment (a server notices a closed
/// socket promptly, not at once), and its replacement, started right away, should get it.
const EXECUTOR_ID_GRACE: Duration = Duration::from_secs(2);

/// Hold the executor id this process runs as (see [`CairnBuilder::executor_id`]) and
/// answer it: the chosen one, else `local`, else (if allowed and `local` is in use) a
/// fresh one. A held id is released when the store closes.
async fn hold_executor_id(
    store: &store::Store,
    app_name: &str,
    chosen: Option<String>,
    unique_if_in_use: bool,
    limit: Duration,
) -> Result<String> {
    let defaulted = chosen.is_none();
    let executor_id = chosen.unwrap_or_else(|| DEFAULT_EXECUTOR_ID.to_owned());
    let holder = match store
        .lock_executor(app_name, &executor_id, EXECUTOR_ID_GRACE, limit)
        .await?
    {
        store::LockAttempt::Taken(()) => return Ok(executor_id),
        store::LockAttempt::InUse { holder } => holder,
    };
    if defaulted && unique_if_in_use {
        let unique = format!("{executor_id}-{}", uuid::Uuid::new_v4().simple());
        if let store::LockAttempt::Taken(()) = store
            .lock_executor(app_name, &unique, Duration::ZERO, limit)
            .await?
        {
            tracing::warn!(
                app = app_name,
                executor_id = %unique,
                in_use = %executor_id,
                holder = holder.as_deref().unwrap_or("unknown"),
                "a live process runs as executor `{executor_id}` on this system database; this one runs as `{unique}`. Only a process launched with that id recovers the workflows started here: give each long-running process a stable id of its own (DBOS__VMID or CairnBuilder::executor_id)"
            );
            return Ok(unique);
        }
    }
    let also = if defaulted {
        ", or let a short-lived process run under a fresh id with CairnBuilder::unique_executor_id_if_in_use(true)"
    } else {
        ""
    };
    tracing::error!(
        app = app_name,
        executor_id = %executor_id,
        holder = holder.as_deref().unwrap_or("unknown"),
        "a live process runs as executor `{executor_id}` on this system database; refusing to launch a second one, which would recover its in-flight workflows and run their current steps again. Give each process its own executor id: set DBOS__VMID or CairnBuilder::executor_id{also}"
    );
    Err(Error::ExecutorIdInUse {
        executor_id,
        holder,
    })
}

/// The default application version: see [`CairnBuilder::app_version`].
fn default_app_version(app_name: &str) -> String {
    let mut hasher = Sha256::new();
    for registration in registry::all() {
        hasher.update(registration.name.as_bytes());
        hasher.update([0]);
        hasher.update(registration.source_hash.as_bytes());
        hasher.update([0]);
    }
    hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
    hasher.update([0]);
    hasher.update(app_name.as_bytes());
    hasher
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Refuse invalid queue definitions and two definitions of one name.
fn check_queues(queues: &[crate::engine::queue::Queue]) -> Result<()> {
    let mut names = std::collections::HashSet::new();
    for queue in queues {
        queue.validate()?;
        if !names.insert(queue.name.as_str()) {
            return Err(Error::InvalidArgument {
                argument: "queue",
                reason: format!("queue `{}` is defined twice on the builder", queue.name),
            });
        }
    }
    Ok(())
}

/// Refuse to start a child of a workflow on another application than the workflow's own: its
/// start could not commit with the parent's checkpoint.
fn same_application(parent: &WorkflowContext, rt: &Arc<Runtime>) -> Result<()> {
    if Arc::ptr_eq(&parent.rt, rt) {
        return Ok(());
    }
    Err(Error::InvalidArgument {
        argument: "app",
        reason: format!(
            "workflow {} runs on another Cairn application; inside a workflow, start workflows \
             with the application that runs it (or cairn::start_child_workflow)",
            parent.workflow_id
        ),
    })
}

/// A launched Cairn application: start workflows, retrieve them, shut down.
///
/// Cheap to clone; every clone is the same application.
#[derive(Clone)]
pub struct Cairn {
    pub(crate) rt: Arc<Runtime>,
    shutdown_grace: Duration,
    /// Background tasks, ended at shutdown: the dispatcher of DBOS's internal queue (where
    /// `dbos workflow resume` puts work) and the watchdog stopping executions whose workflow
    /// another process cancelled or took over.
    background: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// Shared with the scheduler task, which fires the schedules' ticks.
    scheduler: Arc<schedule::Scheduler>,
}

impl std::fmt::Debug for Cairn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cairn")
            .field("app_name", &self.rt.app_name)
            .field("backend", &self.rt.store.backend())
            .field("executor_id", &self.rt.executor_id)
            .field("app_version", &self.rt.app_version)
            .finish()
    }
}

impl Cairn {
    /// Configure an application named `app_name`.
    pub fn builder(app_name: impl Into<String>) -> CairnBuilder {
        CairnBuilder {
            app_name: app_name.into(),
            database_url: None,
            executor_id: None,
            app_version: None,
            store: StoreOptions::default(),
            shutdown_grace: Duration::from_secs(5),
            recover: true,
            state: AppState::default(),
            unique_executor_id: false,
            max_automatic_backfill: 100,
            schedules: Vec::new(),
            listen_queues: None,
            queues: Vec::new(),
        }
    }

    /// Start a workflow with a random id and return a handle to it. The workflow runs in this
    /// process as a task of its own. Called inside a workflow, it starts a child of that
    /// workflow instead, exactly once across replays (as `DBOS.start_workflow` does).
    pub fn start<W, M>(
        &self,
        workflow: W,
        args: W::Args,
    ) -> impl Future<Output = Result<WorkflowHandle<W::Output>>> + Send + use<W, M>
    where
        W: WorkflowFn<M>,
    {
        self.start_with(StartOptions::default(), workflow, args)
    }

    /// Start a workflow with options. With [`StartOptions::workflow_id`] the id is an
    /// idempotency key: if that workflow exists, its handle is returned and it does not run
    /// again. Called inside a workflow, it starts a child of that workflow (exactly once across
    /// replays; the operation id is taken when this is called, so `join!` stays deterministic).
    pub fn start_with<W, M>(
        &self,
        options: StartOptions,
        _workflow: W,
        args: W::Args,
    ) -> impl Future<Output = Result<WorkflowHandle<W::Output>>> + Send + use<W, M>
    where
        W: WorkflowFn<M>,
    {
        let rt = Arc::clone(&self.rt);
        let parent = WorkflowContext::operation();
        let halted = parent.as_ref().map(|(ctx, _)| Arc::clone(ctx));
        halting(halted, async move {
            let registration = workflow::registration_of::<W>()?;
            let positional = W::encode_args(&args, registration.name)?;
            let started = match parent {
                Some((parent, function_id)) => {
                    same_application(&parent, &rt)?;
                    workflow::start_child(&parent, function_id, registration, positional, options)
                        .await?
                }
                None => workflow::start_top_level(&rt, registration, positional, options).await?,
            };
            Ok(WorkflowHandle::started(rt, started))
        })
    }

    /// Enqueue a workflow on `queue` (a [`Queue`](crate::Queue) or its name) and return a
    /// handle to it: it runs when a process serving the queue dequeues it. Called inside a
    /// workflow, the enqueue is that workflow's operation, exactly once across replays (as
    /// `DBOS.start_workflow` on a queue). A queue this process does not define is allowed
    /// (another process may serve it); an empty name is not.
    pub fn enqueue<W, M, Q>(
        &self,
        queue: Q,
        workflow: W,
        args: W::Args,
    ) -> impl Future<Output = Result<WorkflowHandle<W::Output>>> + Send + use<W, M, Q>
    where
        W: WorkflowFn<M>,
        Q: AsRef<str>,
    {
        self.enqueue_with(EnqueueOptions::default(), queue, workflow, args)
    }

    /// [`Cairn::enqueue`] with options: workflow id, priority, deduplication, partition key,
    /// delay, timeout, application version (see [`EnqueueOptions`]). A deduplication id held
    /// by another unfinished workflow of the queue fails with [`Error::Deduplicated`], or
    /// answers that workflow's handle with
    /// [`DeduplicationPolicy::ReturnExisting`](crate::DeduplicationPolicy::ReturnExisting).
    pub fn enqueue_with<W, M, Q>(
        &self,
        options: EnqueueOptions,
        queue: Q,
        _workflow: W,
        args: W::Args,
    ) -> impl Future<Output = Result<WorkflowHandle<W::Output>>> + Send + use<W, M, Q>
    where
        W: WorkflowFn<M>,
        Q: AsRef<str>,
    {
        let queue = queue.as_ref().to_owned();
        let rt = Arc::clone(&self.rt);
        let parent = WorkflowContext::operation();
        let halted = parent.as_ref().map(|(ctx, _)| Arc::clone(ctx));
        halting(halted, async move {
            let registration = workflow::registration_of::<W>()?;
            let positional = W::encode_args(&args, registration.name)?;
            if let Some((parent, _)) = &parent {
                same_application(parent, &rt)?;
            }
            let started =
                enqueue::enqueue(&rt, parent, &queue, registration.name, &positional, options)
                    .await?;
            Ok(WorkflowHandle::started(rt, started))
        })
    }

    /// Enqueue the workflow registered (in whichever process serves the queue) under
    /// `workflow_name`, with JSON positional arguments: for callers that do not link the
    /// workflow's code (DBOS's client `enqueue`). Inside a workflow, exactly once across
    /// replays, as [`Cairn::enqueue`].
    pub fn enqueue_by_name(
        &self,
        queue: &str,
        workflow_name: &str,
        args: Vec<serde_json::Value>,
        options: EnqueueOptions,
    ) -> impl Future<Output = Result<WorkflowHandle<serde_json::Value>>> + Send + use<> {
        let (queue, name) = (queue.to_owned(), workflow_name.to_owned());
        let rt = Arc::clone(&self.rt);
        let parent = WorkflowContext::operation();
        let halted = parent.as_ref().map(|(ctx, _)| Arc::clone(ctx));
        halting(halted, async move {
            workflow::check_key("workflow_name", &name)?;
            if let Some((parent, _)) = &parent {
                same_application(parent, &rt)?;
            }
            let started = enqueue::enqueue(&rt, parent, &queue, &name, &args, options).await?;
            Ok(WorkflowHandle::started(rt, started))
        })
    }

    /// The queue definitions stored for this application (and unowned ones), by name.
    pub async fn list_queues(&self) -> Result<Vec<crate::engine::queue::Queue>> {
        let list = store::ListQueues {
            application_name: self.rt.app_name.clone(),
        };
        self.rt.store.run(list).await
    }

    /// The stored definition of queue `name`, if any.
    pub async fn get_queue(&self, name: &str) -> Result<Option<crate::engine::queue::Queue>> {
        let get = store::GetQueue {
            name: name.to_owned(),
        };
        self.rt.store.run(get).await
    }

    /// Overwrite the stored limits of queue `queue.name` with `queue`'s (every process
    /// serving it reads them from there). Answers whether the queue exists.
    pub async fn update_queue(&self, queue: crate::engine::queue::Queue) -> Result<bool> {
        queue.validate()?;
        let update = store::UpdateQueue {
            queue,
            now_ms: crate::engine::runtime::now_ms(),
        };
        self.rt.store.run(update).await
    }

    /// Delete the stored definition of queue `name` (its workflows stay). Answers whether it
    /// existed.
    pub async fn delete_queue(&self, name: &str) -> Result<bool> {
        let delete = store::DeleteQueue {
            name: name.to_owned(),
        };
        self.rt.store.run(delete).await
    }

    /// Start a workflow and wait for its result. Called inside a workflow, the start is a
    /// child's and the wait is recorded (`DBOS.getResult`), both exactly once across replays.
    pub fn run<W, M>(
        &self,
        workflow: W,
        args: W::Args,
    ) -> impl Future<Output = Result<W::Output>> + Send + use<W, M>
    where
        W: WorkflowFn<M>,
    {
        let start = self.start(workflow, args);
        // Both operation ids are taken now, in call order.
        let waiter = WorkflowContext::operation();
        async move {
            let handle = start.await?;
            workflow::result_of(Arc::clone(handle.runtime()), handle.id().to_owned(), waiter).await
        }
    }

    /// A handle to any workflow by id (started here, elsewhere, or by another language).
    pub async fn retrieve<T>(&self, workflow_id: &str) -> Result<WorkflowHandle<T>>
    where
        T: serde::de::DeserializeOwned + serde::Serialize + Send + 'static,
    {
        if self
            .rt
            .store
            .run(GetWorkflow::of(workflow_id))
            .await?
            .is_none()
        {
            return Err(Error::NotFound(workflow_id.to_owned()));
        }
        Ok(WorkflowHandle::new(
            Arc::clone(&self.rt),
            workflow_id.to_owned(),
        ))
    }

    /// A workflow's status row.
    pub async fn status(&self, workflow_id: &str) -> Result<WorkflowStatus> {
        let row = self.rt.store.run(GetWorkflow::of(workflow_id)).await?;
        row.map(WorkflowStatus::from_row)
            .ok_or_else(|| Error::NotFound(workflow_id.to_owned()))
    }

    /// The operations a workflow has recorded, in order.
    pub async fn list_steps(&self, workflow_id: &str) -> Result<Vec<StepInfo>> {
        let checkpoints = self
            .rt
            .store
            .run(ListCheckpoints {
                workflow_id: workflow_id.to_owned(),
            })
            .await?;
        Ok(checkpoints
            .into_iter()
            .map(StepInfo::from_checkpoint)
            .collect())
    }

    /// Send `message` to the workflow `destination` on `topic` (a `&str`, or `None` for no
    /// topic — the same convention as [`crate::send`] and [`crate::recv`]). Called inside a
    /// workflow it is that workflow's durable send ([`crate::send`]: exactly once across
    /// replays).
    pub fn send<'a, T: serde::Serialize + ?Sized>(
        &self,
        destination: &str,
        topic: impl Into<Option<&'a str>>,
        message: &T,
    ) -> impl Future<Output = Result<()>> + Send {
        self.send_with(SendOptions::default(), destination, topic, message)
    }

    /// [`Cairn::send`] with options: with [`SendOptions::idempotency_key`], sending the same
    /// key to the same destination again is a no-op (the key is ignored inside a workflow,
    /// whose sends are exactly once anyway).
    pub fn send_with<'a, T: serde::Serialize + ?Sized>(
        &self,
        options: SendOptions,
        destination: &str,
        topic: impl Into<Option<&'a str>>,
        message: &T,
    ) -> impl Future<Output = Result<()>> + Send {
        let topic: Option<&'a str> = topic.into();
        let durable = WorkflowContext::current().map(|_| comm::send(destination, topic, message));
        let outside = comm::prepare_send(destination, topic, message, options);
        let rt = Arc::clone(&self.rt);
        async move {
            match durable {
                Some(send) => send.await,
                None => comm::send_prepared(&rt, outside?).await,
            }
        }
    }

    /// Read the event `key` of a workflow, waiting up to `timeout` for it to be set.
    pub async fn get_event<T: serde::de::DeserializeOwned>(
        &self,
        workflow_id: &str,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<T>> {
        comm::get_event_from_outside(&self.rt, workflow_id, key, timeout).await
    }

    /// Every event of a workflow, with its latest value.
    pub async fn list_events(
        &self,
        workflow_id: &str,
    ) -> Result<BTreeMap<String, serde_json::Value>> {
        comm::list_events(&self.rt, workflow_id).await
    }

    /// Read a workflow's stream `key` in order, as it is written. The stream ends when the
    /// workflow closes it, or when the workflow has finished and every value has been read.
    /// A workflow that does not exist yields [`Error::NotFound`] (as DBOS).
    pub fn read_stream<T>(
        &self,
        workflow_id: &str,
        key: &str,
    ) -> impl Stream<Item = Result<T>> + Send + 'static
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        comm::read_stream(Arc::clone(&self.rt), workflow_id, key)
    }

    /// Cancel a workflow: it becomes `CANCELLED`; if it runs in this process it is
    /// interrupted at once, elsewhere at its next durable operation. Returns whether it was
    /// cancelled (`false`: it had already finished). Inside a workflow the call is a step
    /// (`DBOS.cancelWorkflow`, as in DBOS), so a replay does not cancel again.
    pub fn cancel(&self, workflow_id: &str) -> impl Future<Output = Result<bool>> + Send + use<> {
        let rt = Arc::clone(&self.rt);
        let workflow_id = workflow_id.to_owned();
        let call = StepCall::begin("DBOS.cancelWorkflow");
        async move {
            call.run(Some(std::convert::identity), async move {
                Ok(!control::cancel(&rt, &workflow_id, false).await?.is_empty())
            })
            .await
        }
    }

    /// Cancel a workflow and every workflow it started, transitively. Returns the ids
    /// cancelled. Inside a workflow the call is a step (`DBOS.cancelWorkflow`).
    pub fn cancel_with_descendants(
        &self,
        workflow_id: &str,
    ) -> impl Future<Output = Result<Vec<String>>> + Send + use<> {
        let rt = Arc::clone(&self.rt);
        let workflow_id = workflow_id.to_owned();
        let call = StepCall::begin("DBOS.cancelWorkflow");
        async move {
            call.run(Some(std::convert::identity), async move {
                control::cancel(&rt, &workflow_id, true).await
            })
            .await
        }
    }

    /// Resume a workflow, as DBOS 3.4 does: unless it finished (`SUCCESS` or `ERROR`), it is
    /// put back on DBOS's internal queue (`_dbos_internal_queue`) with its recovery attempts
    /// reset, keeping its application version, and a process of that version — this one at
    /// once, if it is — continues it from its last checkpoint. A finished workflow is left as
    /// it is. Returns a handle to it either way; a missing id is [`Error::NotFound`]. Inside
    /// a workflow the call is a step (`DBOS.resumeWorkflow`).
    pub fn resume<T>(
        &self,
        workflow_id: &str,
    ) -> impl Future<Output = Result<WorkflowHandle<T>>> + Send + use<T>
    where
        T: serde::de::DeserializeOwned + serde::Serialize + Send + 'static,
    {
        let rt = Arc::clone(&self.rt);
        let workflow_id = workflow_id.to_owned();
        let call = StepCall::begin("DBOS.resumeWorkflow");
        async move {
            call.run(Some(std::convert::identity), async {
                control::resume(&rt, &workflow_id).await.map(drop)
            })
            .await?;
            Ok(WorkflowHandle::new(rt, workflow_id))
        }
    }

    /// Claim and resume this executor's unfinished workflows now (launch does it once).
    /// Returns the ids of the workflows resumed.
    pub async fn recover_pending(&self) -> Result<Vec<String>> {
        recovery::recover_pending(&self.rt).await
    }

    /// Create a schedule: from now on, at every tick of `cron` some process of this
    /// application starts `workflow` with the tick's scheduled time and `context`. The
    /// workflow must take `(chrono::DateTime<Utc>, C)` (checked at compile time). Each tick's
    /// workflow has the id `sched-<name>-<scheduled time>` (`sched-nightly-2026-01-01T00:00:00+00:00`,
    /// as DBOS), which makes it exactly once however many processes run; it is enqueued on
    /// [`ScheduleOptions::queue`] (DBOS's internal queue by default) and runs in whichever
    /// process dequeues it. `cron` has 5 fields (minute hour day-of-month month
    /// day-of-week) or 6 with seconds first (`*/5 * * * * *`: every 5 seconds), read in
    /// [`ScheduleOptions::timezone`] (UTC by default). A name in use, an invalid cron
    /// expression or time zone is [`Error::InvalidArgument`]. Inside a workflow the call is a
    /// step (`DBOS.createSchedule`).
    pub fn create_schedule<W, M, C>(
        &self,
        name: &str,
        _workflow: W,
        cron: &str,
        context: C,
        options: ScheduleOptions,
    ) -> impl Future<Output = Result<()>> + Send + use<W, M, C>
    where
        W: WorkflowFn<M, Args = (chrono::DateTime<chrono::Utc>, C)>,
        C: serde::Serialize,
    {
        let app = self.clone();
        let prepared = workflow::registration_of::<W>().and_then(|registration| {
            let context = serde_json::to_value(&context).map_err(|source| Error::Serialize {
                what: format!("the context of schedule {name}"),
                source,
            })?;
            schedule::new_row(&app.rt, name, registration.name, cron, &context, &options)
        });
        let call = StepCall::begin("DBOS.createSchedule");
        async move {
            call.run(Some(std::convert::identity), async move {
                let row = prepared?;
                let name = row.schedule_name.clone();
                let op = store::CreateSchedule {
                    row,
                    replace_definition: false,
                };
                if !app.rt.store.run(op).await? {
                    return Err(Error::InvalidArgument {
                        argument: "name",
                        reason: format!("a schedule named `{name}` already exists"),
                    });
                }
                app.scheduler.changed().await;
                Ok(())
            })
            .await
        }
    }

    /// This application's schedules (and those no application owns), by name.
    pub async fn list_schedules(&self) -> Result<Vec<Schedule>> {
        let list = store::ListSchedules {
            application_name: Some(self.rt.app_name.clone()),
        };
        let rows = self.rt.store.run(list).await?;
        Ok(rows.into_iter().map(Schedule::from_row).collect())
    }

    /// A schedule by name, or `None`.
    pub async fn get_schedule(&self, name: &str) -> Result<Option<Schedule>> {
        let get = store::GetSchedule {
            schedule_name: name.to_owned(),
        };
        Ok(self.rt.store.run(get).await?.map(Schedule::from_row))
    }

    /// Pause a schedule: no process fires its ticks until it is resumed (in this process,
    /// none from the moment this returns; in others, from their next reading of the schedules,
    /// within about 2 seconds). A missing schedule is [`Error::NotFound`]. Inside a workflow
    /// the call is a step (`DBOS.pauseSchedule`).
    pub fn pause_schedule(&self, name: &str) -> impl Future<Output = Result<()>> + Send + use<> {
        self.set_schedule_status(name, schedule::PAUSED, "DBOS.pauseSchedule")
    }

    /// Resume a paused schedule: its ticks fire again from now on (after the missed ones, if
    /// it has [`ScheduleOptions::automatic_backfill`]). A missing schedule is
    /// [`Error::NotFound`]. Inside a workflow the call is a step (`DBOS.resumeSchedule`).
    pub fn resume_schedule(&self, name: &str) -> impl Future<Output = Result<()>> + Send + use<> {
        self.set_schedule_status(name, schedule::ACTIVE, "DBOS.resumeSchedule")
    }

    fn set_schedule_status(
        &self,
        name: &str,
        status: &'static str,
        step: &'static str,
    ) -> impl Future<Output = Result<()>> + Send + use<> {
        let app = self.clone();
        let name = name.to_owned();
        let call = StepCall::begin(step);
        async move {
            call.run(Some(std::convert::identity), async move {
                let op = store::SetScheduleStatus {
                    schedule_name: name.clone(),
                    status: status.to_owned(),
                };
                if !app.rt.store.run(op).await? {
                    return Err(Error::NotFound(format!("schedule {name}")));
                }
                app.scheduler.changed().await;
                Ok(())
            })
            .await
        }
    }

    /// Delete a schedule; the workflows it started stay. Answers whether it existed. Inside a
    /// workflow the call is a step (`DBOS.deleteSchedule`).
    pub fn delete_schedule(&self, name: &str) -> impl Future<Output = Result<bool>> + Send + use<> {
        let app = self.clone();
        let name = name.to_owned();
        let call = StepCall::begin("DBOS.deleteSchedule");
        async move {
            call.run(Some(std::convert::identity), async move {
                let op = store::DeleteSchedule {
                    schedule_name: name,
                };
                let existed = app.rt.store.run(op).await?;
                app.scheduler.changed().await;
                Ok(existed)
            })
            .await
        }
    }

    /// Start a schedule's workflow now, outside its cron, with the current time as its
    /// scheduled time, under the id `sched-<name>-trigger-<now>` (as DBOS). Answers the id.
    /// Works on a paused schedule too. A missing schedule is [`Error::NotFound`]. Inside a
    /// workflow the call is a step (`DBOS.triggerSchedule`).
    pub fn trigger_schedule(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<String>> + Send + use<> {
        let rt = Arc::clone(&self.rt);
        let name = name.to_owned();
        let call = StepCall::begin("DBOS.triggerSchedule");
        async move {
            call.run(Some(std::convert::identity), async move {
                let loaded = schedule::load(&rt, &name).await?;
                schedule::trigger(&rt, &loaded).await
            })
            .await
        }
    }

    /// Start the workflow of every tick of a schedule strictly after `start` and strictly
    /// before `end` (as DBOS's `backfill_schedule`), each under its tick's id, so running a
    /// backfill again, or over a range the schedule already fired, starts nothing twice.
    /// Answers the ticks' ids in order (those that existed included). A missing schedule is
    /// [`Error::NotFound`]. Inside a workflow the call is a step (`DBOS.backfillSchedule`).
    pub fn backfill_schedule(
        &self,
        name: &str,
        start: chrono::DateTime<chrono::Utc>,
        end: chrono::DateTime<chrono::Utc>,
    ) -> impl Future<Output = Result<Vec<String>>> + Send + use<> {
        let rt = Arc::clone(&self.rt);
        let name = name.to_owned();
        let call = StepCall::begin("DBOS.backfillSchedule");
        async move {
            call.run(Some(std::convert::identity), async move {
                let loaded = schedule::load(&rt, &name).await?;
                schedule::backfill(&rt, &loaded, start, end).await
            })
            .await
        }
    }

    /// The system database backend: `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        self.rt.store.backend()
    }

    /// This application's name.
    pub fn app_name(&self) -> &str {
        &self.rt.app_name
    }

    /// The application version recorded on workflows started here.
    pub fn app_version(&self) -> &str {
        &self.rt.app_version
    }

    /// This process's executor id.
    pub fn executor_id(&self) -> &str {
        &self.rt.executor_id
    }

    /// Stop taking work; let in-flight workflows reach their next durable operation (within
    /// the grace period), then abandon the rest. Unfinished workflows stay `PENDING` and
    /// resume at the next launch.
    pub async fn shutdown(self) -> Result<()> {
        self.rt.begin_shutdown();
        let background =
            std::mem::take(&mut *self.background.lock().unwrap_or_else(|p| p.into_inner()));
        for task in background {
            let _ = task.await;
        }
        if tokio::time::timeout(self.shutdown_grace, self.rt.idle())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.rt.in_flight(),
                "shutdown grace elapsed; abandoning in-flight workflows"
            );
            self.rt.abort_all();
            self.rt.idle().await;
        }
        self.rt.store.close().await;
        Ok(())
    }
}
