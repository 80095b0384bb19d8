//! The client: enqueue, message, inspect and manage workflows from any process, with or
//! without running workflows itself.
//!
//! One implementation serves both uses: a [`Client`] connected on its own
//! ([`Client::connect`]) and the client inside every launched [`Cairn`](crate::Cairn)
//! application (`Cairn` dereferences to it), so the application and a separate operator
//! process have the same calls with the same behaviour.

mod list;
mod manage;
mod messages;
mod schema;
mod stats;

pub(crate) use manage::run_retention;
pub use manage::{ApplicationVersion, EventHistoryEntry, ForkOptions, RetentionPolicy};
pub use messages::{Message, ReadStreamOptions};
pub use schema::{
    MigrateReport, check_system_database, migrate_system_database, reset_system_database,
};
pub use stats::{MessageInfo, QueueStats, StreamInfo};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;

use crate::app::{DATABASE_URL_ENV, change_sink, same_application};
use crate::engine::comm::SendOptions;
use crate::engine::context::{WorkflowContext, halting};
use crate::engine::enqueue::{self, EnqueueOptions};
use crate::engine::runtime::Runtime;
use crate::engine::schedule::{self, Schedule, ScheduleOptions};
use crate::engine::state::AppState;
use crate::engine::step::StepCall;
use crate::engine::workflow::{self, WorkflowFn, WorkflowHandle};
use crate::engine::{comm, control};
use crate::error::{Error, Result};
use crate::status::{StepInfo, WorkflowStatus};
use crate::store::{self, GetWorkflow, ListCheckpoints, StoreOptions};

/// How often a SQLite client checks for commits by other processes.
const CHANGE_POLL: Duration = Duration::from_millis(50);

/// How a [`Client`] connects: see [`Client::connect_with`]. Every option has a default.
#[derive(Debug, Clone)]
#[must_use = "options do nothing until passed to Client::connect_with"]
pub struct ClientOptions {
    application_name: Option<String>,
    store: StoreOptions,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            application_name: None,
            store: StoreOptions {
                pool_size: 4,
                create: false,
                ..StoreOptions::default()
            },
        }
    }
}

impl ClientOptions {
    /// The application this client acts for (as DBOS's `DBOSClient(application_name=…)`):
    /// the workflows it enqueues and the schedules it creates are owned by it, and only
    /// processes of that application run them. Unset (the default), they are unclaimed and
    /// any application serving the queue runs them. Set it when several applications share
    /// one system database.
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// The Postgres schema holding the system tables. Default: `dbos`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.store.schema = schema.into();
        self
    }

    /// Maximum connections (Postgres) or reader connections (SQLite). Default: 4.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.store.pool_size = size.max(1);
        self
    }

    /// How long connecting keeps retrying while the database is unreachable. Default: 30 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.store.connect_timeout = timeout;
        self
    }
}

/// A connection to a system database for a process that does not run workflows (an API
/// server, a script, an operator's tool), and the management surface of every launched
/// [`Cairn`](crate::Cairn) application (which dereferences to its client).
///
/// It enqueues workflows (typed, with the workflow function, or by name with JSON
/// arguments), sends messages, reads events and streams, retrieves handles and awaits
/// results, and inspects and manages workflows, queues and schedules — of Cairn and of DBOS
/// applications alike. A client never creates or migrates a schema. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    pub(crate) rt: Arc<Runtime>,
    /// The launched application's scheduler, told when schedules change (`None`: a
    /// standalone client, whose changes the schedulers of other processes read within about
    /// two seconds).
    scheduler: Option<Arc<schedule::Scheduler>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("backend", &self.rt.store.backend())
            .field("application_name", &self.rt.app_name)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connect to the system database `url` (`postgres://…` or `sqlite:…`; see
    /// [`Client::connect_with`]).
    pub async fn connect(url: &str) -> Result<Client> {
        Self::connect_with(url, ClientOptions::default()).await
    }

    /// Connect to the system database from [`DATABASE_URL_ENV`] (`DBOS_SYSTEM_DATABASE_URL`).
    /// Unset, it is a [`Error::Config`] that says so.
    pub async fn from_env() -> Result<Client> {
        let url = std::env::var(DATABASE_URL_ENV)
            .ok()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                Error::Config(format!(
                    "{DATABASE_URL_ENV} is not set; set it to the system database's URL (postgres://… or sqlite:///file.sqlite)"
                ))
            })?;
        Self::connect(&url).await
    }

    /// Connect with options. The database must already hold a current system database (one
    /// a Cairn application launched on, or `dbos migrate` created): a missing database or
    /// schema, or an older one, is [`Error::SchemaVersion`] with what to run, and nothing is
    /// written. While the database is unreachable, connecting is retried for
    /// [`ClientOptions::connect_timeout`].
    pub async fn connect_with(url: &str, options: ClientOptions) -> Result<Client> {
        let mut store_options = options.store;
        store_options.create = false;
        let store = store::open(url, &store_options).await?;
        let rt = Runtime::new(
            store,
            options.application_name.unwrap_or_default(),
            DEFAULT_CLIENT_EXECUTOR.to_owned(),
            String::new(),
            AppState::default(),
        );
        rt.store
            .watch_changes(change_sink(&rt), CHANGE_POLL)
            .await?;
        Ok(Client::of(rt, None))
    }

    /// The client of a launched application.
    pub(crate) fn of(rt: Arc<Runtime>, scheduler: Option<Arc<schedule::Scheduler>>) -> Self {
        Self { rt, scheduler }
    }

    /// Close the connections. Handles and streams obtained from this client fail with
    /// [`Error::Shutdown`] afterwards. (A launched application's client closes with
    /// [`Cairn::shutdown`](crate::Cairn::shutdown).)
    pub async fn close(self) {
        self.rt.begin_shutdown();
        self.rt.store.close().await;
    }

    /// The application this client acts for (`None`: a standalone client without one, which
    /// sees every application's queues and schedules).
    pub(crate) fn application_name(&self) -> Option<String> {
        (!self.rt.app_name.is_empty()).then(|| self.rt.app_name.clone())
    }

    /// Tell this process's scheduler that the schedules changed.
    async fn schedules_changed(&self) {
        if let Some(scheduler) = &self.scheduler {
            scheduler.changed().await;
        }
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

    /// [`Client::enqueue`] with options: workflow id, priority, deduplication, partition key,
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
    /// replays, as [`Client::enqueue`].
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
            application_name: self.application_name(),
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
    ///
    /// Inside a workflow the call is a step (`DBOS.getStatus`): a replay answers the status
    /// recorded the first time.
    pub fn status(
        &self,
        workflow_id: &str,
    ) -> impl Future<Output = Result<WorkflowStatus>> + Send + use<> {
        let rt = Arc::clone(&self.rt);
        let workflow_id = workflow_id.to_owned();
        let call = StepCall::begin("DBOS.getStatus");
        async move {
            call.run(Some(std::convert::identity), async move {
                let row = rt.store.run(GetWorkflow::of(&workflow_id)).await?;
                row.map(WorkflowStatus::from_row)
                    .ok_or(Error::NotFound(workflow_id))
            })
            .await
        }
    }

    /// The operations a workflow has recorded, in order. Inside a workflow the call is a
    /// step (`DBOS.listWorkflowSteps`).
    pub fn list_steps(
        &self,
        workflow_id: &str,
    ) -> impl Future<Output = Result<Vec<StepInfo>>> + Send + use<> {
        let rt = Arc::clone(&self.rt);
        let workflow_id = workflow_id.to_owned();
        let call = StepCall::begin("DBOS.listWorkflowSteps");
        async move {
            call.run(Some(std::convert::identity), async move {
                let checkpoints = rt.store.run(ListCheckpoints { workflow_id }).await?;
                Ok(checkpoints
                    .into_iter()
                    .map(StepInfo::from_checkpoint)
                    .collect())
            })
            .await
        }
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

    /// [`Client::send`] with options: with [`SendOptions::idempotency_key`], sending the same
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
    ///
    /// Inside a workflow the call is a step (`DBOS.get_events`).
    pub fn list_events(
        &self,
        workflow_id: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, serde_json::Value>>> + Send + use<> {
        let rt = Arc::clone(&self.rt);
        let workflow_id = workflow_id.to_owned();
        let call = StepCall::begin("DBOS.get_events");
        async move {
            call.run(Some(std::convert::identity), async move {
                comm::list_events(&rt, &workflow_id).await
            })
            .await
        }
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
        comm::read_stream(Arc::clone(&self.rt), workflow_id, key, 0)
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
                app.schedules_changed().await;
                Ok(())
            })
            .await
        }
    }

    /// This application's schedules (and those no application owns), by name.
    pub async fn list_schedules(&self) -> Result<Vec<Schedule>> {
        let list = store::ListSchedules {
            application_name: self.application_name(),
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
                app.schedules_changed().await;
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
                app.schedules_changed().await;
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
}

/// The executor id recorded on what a standalone client writes (as DBOS's client, which
/// runs nothing itself).
const DEFAULT_CLIENT_EXECUTOR: &str = "cairn-client";
