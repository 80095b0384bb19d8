//! The application: configuration, launch, starting and retrieving workflows, shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;

use sha2::{Digest, Sha256};

use crate::engine::recovery;
use crate::engine::registry;
use crate::engine::runtime::Runtime;
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
    /// Default: `$DBOS__VMID`, else `local` (as DBOS).
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

    /// Open (creating and migrating if needed) the system database, record the application
    /// version, and resume this executor's unfinished workflows.
    pub async fn launch(self) -> Result<Cairn> {
        if self.app_name.trim().is_empty() {
            return Err(Error::InvalidArgument {
                argument: "app_name",
                reason: "must not be empty".to_owned(),
            });
        }
        let url = match self.database_url {
            Some(url) => url,
            None => std::env::var(DATABASE_URL_ENV)
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| format!("sqlite:///{}.sqlite", self.app_name)),
        };
        let executor_id = self
            .executor_id
            .or_else(|| {
                std::env::var(EXECUTOR_ID_ENV)
                    .ok()
                    .filter(|v| !v.is_empty())
            })
            .unwrap_or_else(|| "local".to_owned());
        let app_version = self
            .app_version
            .or_else(|| {
                std::env::var(APP_VERSION_ENV)
                    .ok()
                    .filter(|v| !v.is_empty())
            })
            .unwrap_or_else(|| default_app_version(&self.app_name));
        let store = store::open(&url, &self.store).await?;
        let rt = Runtime::new(store, self.app_name, executor_id, app_version);
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
            dispatcher: Arc::new(std::sync::Mutex::new(None)),
        };
        if self.recover {
            let resumed = recovery::recover_pending(&app.rt).await?;
            if !resumed.is_empty() {
                tracing::info!(count = resumed.len(), "resumed unfinished workflows");
            }
        }
        let dispatcher = tokio::spawn(recovery::dispatch_internal_queue(Arc::clone(&app.rt)));
        *app.dispatcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(dispatcher);
        Ok(app)
    }
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

/// A launched Cairn application: start workflows, retrieve them, shut down.
///
/// Cheap to clone; every clone is the same application.
#[derive(Clone)]
pub struct Cairn {
    rt: Arc<Runtime>,
    shutdown_grace: Duration,
    /// Runs workflows resumed onto DBOS's internal queue (by `dbos workflow resume`).
    dispatcher: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
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
        }
    }

    /// Start a workflow with a random id and return a handle to it. The workflow runs in this
    /// process as a task of its own.
    pub async fn start<W, M>(&self, workflow: W, args: W::Args) -> Result<WorkflowHandle<W::Output>>
    where
        W: WorkflowFn<M>,
    {
        self.start_with(StartOptions::default(), workflow, args)
            .await
    }

    /// Start a workflow with options. With [`StartOptions::workflow_id`] the id is an
    /// idempotency key: if that workflow exists, its handle is returned and it does not run again.
    pub async fn start_with<W, M>(
        &self,
        options: StartOptions,
        _workflow: W,
        args: W::Args,
    ) -> Result<WorkflowHandle<W::Output>>
    where
        W: WorkflowFn<M>,
    {
        let registration = workflow::registration_of::<W>()?;
        let positional = W::encode_args(&args, registration.name)?;
        let id = workflow::start_top_level(&self.rt, registration, positional, options).await?;
        Ok(WorkflowHandle::new(Arc::clone(&self.rt), id))
    }

    /// Start a workflow and wait for its result.
    pub async fn run<W, M>(&self, workflow: W, args: W::Args) -> Result<W::Output>
    where
        W: WorkflowFn<M>,
    {
        self.start(workflow, args).await?.result().await
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

    /// Send `message` to the workflow `destination` on `topic` from outside any workflow.
    /// With `idempotency_key`, sending the same key to the same destination again is a no-op.
    pub async fn send<T: serde::Serialize + ?Sized>(
        &self,
        destination: &str,
        topic: Option<&str>,
        message: &T,
        idempotency_key: Option<&str>,
    ) -> Result<()> {
        comm::send_from_outside(&self.rt, destination, topic, message, idempotency_key).await
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
    /// cancelled (`false`: it had already finished).
    pub async fn cancel(&self, workflow_id: &str) -> Result<bool> {
        Ok(!control::cancel(&self.rt, workflow_id, false)
            .await?
            .is_empty())
    }

    /// Cancel a workflow and every workflow it started, transitively. Returns the ids cancelled.
    pub async fn cancel_with_descendants(&self, workflow_id: &str) -> Result<Vec<String>> {
        control::cancel(&self.rt, workflow_id, true).await
    }

    /// Resume a cancelled or failed workflow in this process; it continues from its last
    /// checkpoint. Returns whether it was resumed (`false`: it is running or succeeded).
    pub async fn resume(&self, workflow_id: &str) -> Result<bool> {
        control::resume(&self.rt, workflow_id).await
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
        let dispatcher = self
            .dispatcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(dispatcher) = dispatcher {
            let _ = dispatcher.await;
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
