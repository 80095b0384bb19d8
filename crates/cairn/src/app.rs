//! The application: configuration, launch, starting and retrieving workflows, shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;

use sha2::{Digest, Sha256};

use crate::engine::comm::SendOptions;
use crate::engine::context::{WorkflowContext, halting};
use crate::engine::recovery;
use crate::engine::registry;
use crate::engine::runtime::Runtime;
use crate::engine::state::AppState;
use crate::engine::step::StepCall;
use crate::engine::workflow::{self, StartOptions, WorkflowFn, WorkflowHandle};
use crate::engine::{comm, control};
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
        tracing::info!(
            app = %rt.app_name,
            backend = rt.store.backend(),
            executor_id = %rt.executor_id,
            app_version = %rt.app_version,
            "Cairn launched"
        );
        let notifier = Arc::clone(&rt.notifier);
        let sink: crate::store::ChangeSink = Arc::new(move |channel: &str, payload: &str| {
            match crate::engine::notify::Channel::from_pg(channel) {
                Some(channel) => notifier.announce_payload(channel, payload),
                None => notifier.announce_all(),
            }
        });
        rt.store.watch_changes(sink, CHANGE_POLL).await?;
        let app = Cairn {
            rt,
            shutdown_grace: self.shutdown_grace,
            background: Arc::new(std::sync::Mutex::new(Vec::new())),
        };
        if self.recover {
            let resumed = recovery::recover_pending(&app.rt).await?;
            if !resumed.is_empty() {
                tracing::info!(count = resumed.len(), "resumed unfinished workflows");
            }
            recovery::report_other_versions(&app.rt).await;
        }
        let dispatcher = tokio::spawn(recovery::dispatch_internal_queue(Arc::clone(&app.rt)));
        let watchdog = tokio::spawn(crate::engine::watchdog::watch(Arc::clone(&app.rt)));
        app.background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([dispatcher, watchdog]);
        crate::engine::runtime::register_launched(&app.rt);
        Ok(app)
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
    rt: Arc<Runtime>,
    shutdown_grace: Duration,
    /// Background tasks, ended at shutdown: the dispatcher of DBOS's internal queue (where
    /// `dbos workflow resume` puts work) and the watchdog stopping executions whose workflow
    /// another process cancelled or took over.
    background: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
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
        let parent = WorkflowContext::current().map(|ctx| {
            let id = ctx.next_id();
            (ctx, id)
        });
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
        let waiter = WorkflowContext::current().map(|ctx| {
            let id = ctx.next_id();
            (ctx, id)
        });
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
