//! The application: configuration, launch, starting and retrieving workflows, shutdown.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::client::Client;
use crate::engine::context::{WorkflowContext, halting};
use crate::engine::registry;
use crate::engine::runtime::Runtime;
use crate::engine::schedule::{self, ScheduleOptions};
use crate::engine::state::AppState;
use crate::engine::workflow::{self, StartOptions, WorkflowFn, WorkflowHandle};
use crate::engine::{dispatch, recovery};
use crate::error::{Error, Result};
use crate::store::{self, RegisterAppVersion, StoreOptions};

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
    retention: Option<crate::client::RetentionPolicy>,
    /// See [`CairnBuilder::takeover`].
    takeover: bool,
    /// See [`CairnBuilder::takeover_interval`].
    takeover_interval: Duration,
    /// See [`CairnBuilder::evict_after`].
    evict_after: Option<Duration>,
    /// See [`CairnBuilder::admin_options`].
    #[cfg(feature = "admin")]
    admin: Option<crate::admin::AdminOptions>,
}

impl CairnBuilder {
    /// Serve the admin HTTP API and dashboard on `addr` (see [`crate::admin`]) from launch
    /// to shutdown. An address that is not loopback needs a token:
    /// use [`CairnBuilder::admin_options`]. Default: no admin server.
    #[cfg(feature = "admin")]
    pub fn admin_server(self, addr: std::net::SocketAddr) -> Self {
        let options = self.admin.clone().unwrap_or_default().addr(addr);
        self.admin_options(options)
    }

    /// Serve the admin HTTP API and dashboard with `options` (address, bearer token) from
    /// launch to shutdown (see [`crate::admin`]). A non-loopback address without a token
    /// makes [`launch`](Self::launch) fail with [`Error::InvalidArgument`] before anything is
    /// opened. Default: no admin server.
    #[cfg(feature = "admin")]
    pub fn admin_options(mut self, options: crate::admin::AdminOptions) -> Self {
        self.admin = Some(options);
        self
    }

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
    /// [`Client::create_schedule`] for the cron expression. An invalid cron expression or time
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

    /// Delete finished workflows by a [`RetentionPolicy`](crate::RetentionPolicy), every
    /// `policy.interval` (the first time one interval after launch) until shutdown: those
    /// created longer than `older_than` ago, then all but the newest `max_finished`.
    /// Workflows not yet finished are never touched, and each deleted workflow goes with all
    /// its rows (see [`Client::delete_finished_before`]). A process with a policy applies it
    /// to the whole system database, so one process per deployment is enough. Default: none
    /// (as DBOS, everything is kept).
    pub fn retention(mut self, policy: crate::client::RetentionPolicy) -> Self {
        self.retention = Some(policy);
        self
    }

    /// Whether this process takes over the unfinished workflows of executors that are gone:
    /// every [`takeover_interval`](Self::takeover_interval) it looks for executor ids that own
    /// `PENDING` workflows of this application and version but whose liveness lock (see
    /// [`executor_id`](Self::executor_id)) nobody holds — their process died, or shut down
    /// leaving them unfinished, and was not launched again — and resumes them here from their checkpoints, as recovery at launch
    /// resumes this executor's own. Exactly one live executor takes each dead one's work: the
    /// one that gets its lock. The workflows are recorded under this executor id from then on
    /// (a relaunch of the dead id finds nothing to recover), each takeover counts as a
    /// recovery attempt, and workflows of other application versions are left alone. This
    /// process's own id is never taken over by itself. Turn it off for deployments that always
    /// relaunch a dead process under the same id (a fixed set of ids, each restarted by a
    /// supervisor), which would otherwise race their own restart, and where DBOS processes
    /// share the application name and version (they hold no Cairn lock, so they look dead).
    /// Default: true.
    pub fn takeover(mut self, enabled: bool) -> Self {
        self.takeover = enabled;
        self
    }

    /// How often [`takeover`](Self::takeover) looks for dead executors: a dead executor's
    /// workflows resume elsewhere within about twice this (the lock of a process that died is
    /// freed at once; on Postgres, a vanished host's when the server notices its connection
    /// is gone). Each look is one read; on Postgres it skips the executors it sees alive.
    /// Default: 5 seconds.
    pub fn takeover_interval(mut self, interval: Duration) -> Self {
        self.takeover_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How long a workflow may wait in memory — in `recv`, `get_event`, a durable `sleep`, or
    /// for another workflow's result (a child's, or one it enqueued) — before its execution
    /// leaves memory, or `None` to keep every waiting workflow in memory.
    /// An evicted workflow costs only a small wake-up registration (what it waits for and its
    /// deadline); when that arrives it is executed again from its checkpoints, under the same
    /// ownership, finished steps replaying from their records, and continues from its wait.
    /// Its code and its callers cannot tell (handles read its outcome from the database).
    /// Waits shorter than this never evict. Default: 60 seconds.
    pub fn evict_after(mut self, after: Option<Duration>) -> Self {
        self.evict_after = after;
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
        #[cfg(feature = "admin")]
        if let Some(admin) = &self.admin {
            admin.check()?;
        }
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
        // The executor id is held before recovery can touch the workflows recorded under it;
        // the version and the queues' definitions (which need no id) are registered meanwhile.
        let (held, registered) = tokio::join!(
            hold_executor_id(
                &store,
                &self.app_name,
                chosen_executor_id,
                self.unique_executor_id,
                self.store.connect_timeout,
            ),
            register(&store, &self.app_name, &app_version, &self.queues),
        );
        let executor_id = match held.and_then(|id| registered.map(|()| id)) {
            Ok(executor_id) => executor_id,
            Err(error) => {
                store.close().await;
                return Err(error);
            }
        };
        let rt = Runtime::new(store, self.app_name, executor_id, app_version, self.state);
        rt.set_queues(self.queues);
        if let Some(after) = self.evict_after {
            rt.set_evict_after(after);
        }
        tracing::info!(
            app = %rt.app_name,
            backend = rt.store.backend(),
            executor_id = %rt.executor_id,
            app_version = %rt.app_version,
            "Cairn launched"
        );
        // Listening starts while other versions' pending workflows are counted (before
        // recovery: afterwards the count would wait behind the recovered work).
        let recover = self.recover;
        let (watching, ()) = tokio::join!(
            rt.store.watch_changes(change_sink(&rt), CHANGE_POLL),
            async {
                if recover {
                    recovery::report_other_versions(&rt).await;
                }
            }
        );
        watching?;
        let scheduler = schedule::Scheduler::new(self.max_automatic_backfill);
        #[allow(unused_mut)] // mutable to record the admin server's address
        let mut app = Cairn {
            #[cfg(feature = "admin")]
            admin_addr: None,
            client: Client::of(Arc::clone(&rt), Some(Arc::clone(&scheduler))),
            rt,
            shutdown_grace: self.shutdown_grace,
            background: Arc::new(std::sync::Mutex::new(Vec::new())),
            scheduler,
        };
        for declared in &self.schedules {
            declared.upsert(&app.rt).await?;
        }
        if self.recover {
            // The first batch resumes before launch returns; the rest stream in behind it.
            let pass = recovery::RecoveryPass::new();
            if let Some(first) = pass.next_batch(&app.rt).await? {
                let rt = Arc::clone(&app.rt);
                let rest = tokio::spawn(async move {
                    let mut count = first.len();
                    loop {
                        match pass.next_batch(&rt).await {
                            Ok(Some(batch)) => count += batch.len(),
                            Ok(None) => break,
                            Err(Error::Shutdown) => return,
                            Err(error) => {
                                tracing::error!(%error, "recovery stopped; the rest stays PENDING for the next launch");
                                break;
                            }
                        }
                    }
                    tracing::info!(count, "resumed unfinished workflows");
                });
                app.background
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(rest);
            }
        }
        let served = dispatch::served(app.rt.queues(), self.listen_queues.as_deref());
        let dispatcher = tokio::spawn(dispatch::dispatch(Arc::clone(&app.rt), served));
        let watchdog = tokio::spawn(crate::engine::watchdog::watch(Arc::clone(&app.rt)));
        app.background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([dispatcher, watchdog]);
        if self.takeover {
            let rt = Arc::clone(&app.rt);
            let takeover = tokio::spawn(crate::engine::takeover::watch(rt, self.takeover_interval));
            app.background
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(takeover);
        }
        let scheduler = tokio::spawn(schedule::run(
            Arc::clone(&app.rt),
            Arc::clone(&app.scheduler),
        ));
        #[cfg(feature = "admin")]
        let scheduler_abort = scheduler.abort_handle();
        app.background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(scheduler);
        if let Some(policy) = self.retention {
            let retention = tokio::spawn(retain(app.client.clone(), policy));
            app.background
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(retention);
        }
        #[cfg(feature = "admin")]
        if let Some(options) = self.admin {
            let hooks = crate::admin::AppHooks {
                rt: Arc::clone(&app.rt),
                scheduler: scheduler_abort,
            };
            let server = match crate::admin::start(app.client.clone(), options, Some(hooks)).await {
                Ok(server) => server,
                Err(error) => {
                    app.clone().shutdown().await?;
                    return Err(error);
                }
            };
            app.admin_addr = Some(server.local_addr());
            // Stopped (gracefully) when shutdown begins; shutdown awaits it.
            let rt = Arc::clone(&app.rt);
            let stop = tokio::spawn(async move {
                rt.shutdown_requested().await;
                server.shutdown().await;
            });
            app.background
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(stop);
        }
        crate::engine::runtime::register_launched(&app.rt);
        Ok(app)
    }
}

/// Apply a retention policy every `policy.interval` until shutdown. A failed pass is logged
/// and retried at the next interval (a database outage is already retried inside it).
async fn retain(client: Client, policy: crate::client::RetentionPolicy) {
    let interval = policy.interval.max(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = client.rt.shutdown_requested() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match crate::client::run_retention(&client, &policy).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "retention deleted finished workflows"),
            Err(Error::Shutdown) => return,
            Err(error) => tracing::warn!(%error, "retention failed; trying again next interval"),
        }
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

/// Record this application version and the definitions of the queues declared in code.
async fn register(
    store: &store::Store,
    app_name: &str,
    app_version: &str,
    queues: &[crate::engine::queue::Queue],
) -> Result<()> {
    let version = RegisterAppVersion {
        version: app_version.to_owned(),
        application_name: Some(app_name.to_owned()),
        now_ms: crate::engine::runtime::now_ms(),
    };
    store.run(version).await?;
    for queue in queues {
        let upsert = store::UpsertQueue {
            queue: queue.clone(),
            application_name: app_name.to_owned(),
            update: store::QueueUpdate::IfLatestVersion(app_version.to_owned()),
            now_ms: crate::engine::runtime::now_ms(),
        };
        store.run(upsert).await?;
    }
    Ok(())
}

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
pub(crate) fn same_application(parent: &WorkflowContext, rt: &Arc<Runtime>) -> Result<()> {
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
/// Everything that does not need this process to run workflows — enqueue, send, events,
/// streams, handles, listing and managing workflows, queues and schedules — is the
/// application's [`Client`], which `Cairn` dereferences to: `app.enqueue(…)`,
/// `app.cancel(…)`, `app.list_workflows(…)` are the client's calls, the same a separate
/// process makes with [`Client::connect`].
///
/// Cheap to clone; every clone is the same application.
#[derive(Clone)]
pub struct Cairn {
    pub(crate) rt: Arc<Runtime>,
    /// The management surface, shared with standalone clients (one implementation).
    client: Client,
    shutdown_grace: Duration,
    /// Background tasks, ended at shutdown: the dispatcher of DBOS's internal queue (where
    /// `dbos workflow resume` puts work) and the watchdog stopping executions whose workflow
    /// another process cancelled or took over.
    background: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// Shared with the scheduler task, which fires the schedules' ticks.
    scheduler: Arc<schedule::Scheduler>,
    /// Where the admin server listens, if launched with one.
    #[cfg(feature = "admin")]
    admin_addr: Option<std::net::SocketAddr>,
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

impl std::ops::Deref for Cairn {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// What the store calls with each change notification (Postgres NOTIFY, or SQLite's
/// "another process wrote"): wake the durable waits it concerns, and the queue dispatchers
/// when it may be an enqueue. Shared by applications and clients (whose runtime has no
/// dispatcher listening, so the wake is a no-op).
pub(crate) fn change_sink(rt: &Arc<Runtime>) -> crate::store::ChangeSink {
    let notifier = Arc::clone(&rt.notifier);
    // Weak: the store (which keeps the sink) belongs to the runtime.
    let dispatcher_rt = Arc::downgrade(rt);
    Arc::new(move |channel: &str, payload: &str| {
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
    })
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
            retention: None,
            takeover: true,
            takeover_interval: crate::engine::takeover::DEFAULT_INTERVAL,
            evict_after: Some(crate::engine::evict::DEFAULT_EVICT_AFTER),
            #[cfg(feature = "admin")]
            admin: None,
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

    /// Claim and resume this executor's unfinished workflows now (launch does it once).
    /// Returns the ids of the workflows resumed.
    pub async fn recover_pending(&self) -> Result<Vec<String>> {
        recovery::recover_pending(&self.rt).await
    }

    /// This application's name.
    pub fn app_name(&self) -> &str {
        &self.rt.app_name
    }

    /// The application version recorded on workflows started here.
    pub fn app_version(&self) -> &str {
        &self.rt.app_version
    }

    /// How many workflow executions are in this process's memory now: running, or waiting
    /// and not yet evicted ([`CairnBuilder::evict_after`]).
    pub fn workflows_in_memory(&self) -> usize {
        self.rt.in_flight()
    }

    /// This process's executor id.
    pub fn executor_id(&self) -> &str {
        &self.rt.executor_id
    }

    /// Where the admin server listens ([`CairnBuilder::admin_server`]), with the port picked
    /// when port 0 was asked; `None` without an admin server.
    #[cfg(feature = "admin")]
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin_addr
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

    /// Run until the process is asked to stop — SIGTERM or SIGINT (Ctrl-C) on Unix, Ctrl-C
    /// elsewhere — then [`shutdown`](Self::shutdown) gracefully: the last line of a typical
    /// `main`, and what a container runtime's stop (SIGTERM, then SIGKILL after its own grace)
    /// expects.
    ///
    /// When the signal arrives:
    /// - No more work is claimed: the queue dispatchers, the scheduler, the watchdog and the
    ///   retention task stop (a claim already in flight completes; its workflows stay
    ///   `PENDING` under this executor and resume at its next launch). Starts and enqueues
    ///   made through this application fail with [`Error::Shutdown`].
    /// - A step whose body is running finishes and its checkpoint is recorded (a retrying
    ///   step keeps retrying); a workflow whose body then returns records its outcome. A
    ///   workflow stops at its next durable operation instead of starting it: the next step,
    ///   child, send, … never begins. Durable waits (`sleep`, `recv`, `get_event`, a child's
    ///   result) and `cancellable` steps stop at once. Those workflows stay `PENDING`.
    /// - It returns as soon as nothing runs, at most [`shutdown_grace`](CairnBuilder::shutdown_grace)
    ///   (default 5 s) after the background tasks stopped; step bodies still running then
    ///   are dropped, unrecorded, and run again when their workflow is recovered.
    ///
    /// The next launch under the same executor id (and application version) resumes every
    /// `PENDING` workflow at its first unfinished step. On Unix the handlers are installed
    /// when this is called (inside the runtime), so a signal after the call is never missed;
    /// they stay installed, so a second signal during the grace does not kill the process.
    /// If they cannot be installed the application shuts down at once and the error is
    /// returned.
    ///
    /// ```no_run
    /// #[tokio::main]
    /// async fn main() -> cairn::Result<()> {
    ///     let app = cairn::Cairn::builder("shop")
    ///         .shutdown_grace(std::time::Duration::from_secs(20))
    ///         .launch()
    ///         .await?;
    ///     // Start an HTTP server with `app.clone()`, enqueue work, …
    ///     app.shutdown_on_signal().await // returns once the workflows here stopped
    /// }
    /// ```
    pub fn shutdown_on_signal(self) -> impl Future<Output = Result<()>> + Send + 'static {
        // Installed now when a runtime is there to register them with, else when first polled.
        let installed = tokio::runtime::Handle::try_current()
            .is_ok()
            .then(StopSignals::install);
        async move {
            let signals = match installed {
                Some(installed) => installed,
                None => StopSignals::install(),
            };
            let mut signals = match signals {
                Ok(signals) => signals,
                Err(error) => {
                    self.shutdown().await?;
                    return Err(error);
                }
            };
            let signal = signals.received().await;
            // Before the line, so whoever reads it knows nothing new is claimed any more.
            self.rt.begin_shutdown();
            tracing::info!(
                signal,
                in_flight = self.rt.in_flight(),
                grace = ?self.shutdown_grace,
                "shutdown signal received: no more work is claimed; waiting for the workflows running here to reach their next durable operation"
            );
            let rt = Arc::clone(&self.rt);
            self.shutdown().await?;
            tracing::info!(
                app = %rt.app_name,
                executor_id = %rt.executor_id,
                "Cairn stopped; unfinished workflows stay PENDING for the next launch"
            );
            Ok(())
        }
    }
}

/// The signals that ask a process to stop, listened for from installation on.
struct StopSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<Self> {
        let failed = |error: std::io::Error| {
            Error::Config(format!("cannot listen for the shutdown signals: {error}"))
        };
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                terminate: signal(SignalKind::terminate()).map_err(failed)?,
                interrupt: signal(SignalKind::interrupt()).map_err(failed)?,
            })
        }
        #[cfg(not(unix))]
        {
            let _ = failed;
            Ok(Self {})
        }
    }

    /// Wait for the first signal; answers its name.
    async fn received(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                Some(()) = self.terminate.recv() => "SIGTERM",
                Some(()) = self.interrupt.recv() => "SIGINT",
                // Both streams end only with the runtime: nothing to stop then.
                else => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                Err(_) => std::future::pending().await,
            }
        }
    }
}
