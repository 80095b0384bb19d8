#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! A workflow is an async function whose steps are checkpointed; recovery replays it from its
//! checkpoints.
//!
//! Cairn is durable workflows for Rust. Write workflows as ordinary `async fn`s made of steps;
//! Cairn records each step's outcome in a *system database* before the workflow moves on. When
//! the process crashes, is killed or redeployed, every unfinished workflow resumes at its first
//! unfinished step at the next launch, and no finished step runs twice.
//!
//! - **Embedded by default**: with no configuration the system database is a SQLite file,
//!   `<app_name>.sqlite`, in the working directory.
//! - **Postgres when it grows**: set `DBOS_SYSTEM_DATABASE_URL=postgres://…` (or
//!   [`CairnBuilder::database_url`]) and many processes share the work.
//! - **DBOS-compatible**: the system database is the one DBOS Transact 3.4 uses, so DBOS's
//!   clients and `dbos` CLI can list and manage Cairn workflows.
//!
//! # Contents
//!
//! - [A first workflow](#a-first-workflow)
//! - [Steps](#steps)
//! - [Workflow ids and idempotency](#workflow-ids-and-idempotency)
//! - [Child workflows and parallel steps](#child-workflows-and-parallel-steps)
//! - [Queues](#queues)
//! - [The client and workflow management](#the-client-and-workflow-management)
//! - [Application state and context](#application-state-and-context)
//! - [What the macros check](#what-the-macros-check)
//! - [Recovery](#recovery)
//! - [Durable timers and deadlines](#durable-timers-and-deadlines)
//! - [Cancellation and resume](#cancellation-and-resume)
//! - [Messages, events and streams](#messages-events-and-streams)
//! - [Schedules](#schedules)
//! - [Changing deployed workflows](#changing-deployed-workflows)
//! - [Rolling out new code](#rolling-out-new-code)
//! - [When the database goes away](#when-the-database-goes-away)
//! - [Logs and spans](#logs-and-spans)
//! - [Coming from DBOS Python](#coming-from-dbos-python)
//! - [Errors](#errors)
//! - [Cargo features](#cargo-features)
//!
//! # A first workflow
//!
//! ```no_run
//! use cairn::Cairn;
//!
//! #[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
//! enum ShopError {
//!     #[error("card declined")]
//!     Declined,
//! }
//!
//! #[cairn::step]
//! async fn charge(order: u64) -> Result<String, ShopError> {
//!     Ok(format!("receipt-{order}"))
//! }
//!
//! #[cairn::step]
//! async fn ship(order: u64) -> Result<(), ShopError> {
//!     Ok(())
//! }
//!
//! #[cairn::workflow]
//! async fn checkout(order: u64) -> Result<String, ShopError> {
//!     let receipt = charge(order).await?; // checkpointed
//!     ship(order).await?;                 // checkpointed
//!     Ok(receipt)
//! }
//!
//! #[tokio::main]
//! async fn main() -> cairn::Result<()> {
//!     let app = Cairn::builder("shop").launch().await?; // shop.sqlite unless configured
//!     let handle = app.start(checkout, 42).await?;
//!     println!("{}", handle.result().await?);
//!     app.shutdown().await
//! }
//! ```
//!
//! # Steps
//!
//! `#[cairn::step]` makes an `async fn` returning `Result<T, E>` a checkpointed step: inside a
//! workflow its outcome (output or error) is recorded before the workflow continues, and a
//! replay returns the recorded outcome without running the body. Outside a workflow, or
//! inside another step, it is a plain call. Retries: `#[cairn::step(max_attempts = 3,
//! interval_ms = 500, backoff_rate = 2.0)]`. For closures, use [`run_step`].
//!
//! `T` must be `Serialize + DeserializeOwned`; the error type `E` must be `Serialize +
//! DeserializeOwned + Display` ([`DurableError`]). Its value is recorded with the step's
//! outcome, so a replay after a crash returns the *same* `E` — the same variant, the same
//! fields — and a workflow that matches on it takes the same branch. A workflow's own error is
//! recorded the same way; read it back with [`Error::application_error`].
//!
//! Your error type does not need a `From<cairn::Error>` variant. Cairn's own failures
//! (cancellation, shutdown, non-determinism, a database error that is not transient) stop the
//! workflow where it is instead of flowing through your code. Failures that concern a step
//! itself — a panic, an attempt past its `timeout_ms`, a child workflow that was cancelled —
//! come back as `E::from(error)` when `E: From<cairn::Error>` (the macros detect it at
//! compile time), and otherwise fail the workflow with that error recorded.
//!
//! A database outage is never a step's or a workflow's error: every durable operation waits
//! for the database to come back (retrying with backoff for as long as the outage lasts) and
//! continues. [`Error::is_transient`] tells such failures apart where a public call returns one.
//!
//! # Workflow ids and idempotency
//!
//! [`Cairn::start_with`] with [`StartOptions::id`] makes the id an idempotency key: starting an
//! id that exists returns the existing workflow's handle and never runs it twice, even under
//! concurrent starts. [`WorkflowHandle::created`] says whether this call created it, so a
//! caller can tell its own retry from another request that chose the same id.
//! [`Client::retrieve`] returns a handle to any workflow.
//!
//! # Child workflows and parallel steps
//!
//! Calling a `#[cairn::workflow]` function from inside a workflow starts it as a child (id
//! `<parent id>-<operation id>`), exactly once across replays, and waits for it.
//! [`start_child_workflow`] returns a handle instead. Operation ids are taken when a durable
//! operation is *called*, so steps started in a fixed order and awaited together (`join!`,
//! `futures::future::join_all`) replay correctly.
//!
//! # Queues
//!
//! A [`Queue`] is defined on the builder ([`CairnBuilder::queue`]; stored in the system
//! database's `queues` table at launch, as DBOS does) and workflows are put on it with
//! [`Client::enqueue`] / [`Client::enqueue_with`] ([`EnqueueOptions`]: id, priority,
//! deduplication id — [`Error::Deduplicated`] or the holder's handle — partition key, delay,
//! timeout counted from dequeue, application version). Whichever process serves the queue
//! runs them. Inside a workflow, [`enqueue_workflow`] (or `app.enqueue`) is an operation of
//! that workflow: the row and its checkpoint commit together, exactly once across replays.
//! [`Client::enqueue_by_name`] enqueues by workflow name with JSON arguments, for code that
//! does not link the workflow. [`Client::list_queues`], [`Client::get_queue`],
//! [`Client::update_queue`] and [`Client::delete_queue`] manage the stored definitions.
//!
//! ```no_run
//! # #[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
//! # #[error("{0}")] struct AppError(String);
//! #[cairn::workflow]
//! async fn resize(image: String) -> Result<String, AppError> {
//!     Ok(image)
//! }
//!
//! # async fn demo() -> cairn::Result<()> {
//! let images = cairn::Queue::new("images").concurrency(4);
//! let app = cairn::Cairn::builder("gallery").queue(images.clone()).launch().await?;
//! let options = cairn::EnqueueOptions::default().with_deduplication_id("cat.png");
//! let handle = app.enqueue_with(options, &images, resize, "cat.png".into()).await?;
//! # let _ = handle;
//! # Ok(()) }
//! ```
//!
//! # The client and workflow management
//!
//! A process that does not run workflows — an API server, a cron job, an operator's script —
//! uses a [`Client`]: [`Client::connect`] takes the same URL as the application (SQLite or
//! Postgres) and never creates or migrates a schema (a missing or older one is
//! [`Error::SchemaVersion`], saying what to run). It enqueues typed workflows (only the
//! function's signature is needed, not a worker), or by name with JSON arguments for
//! workflows in other languages; sends messages; reads events and streams; retrieves handles
//! and awaits results; and lists, inspects and manages workflows, queues and schedules —
//! Cairn's and DBOS's alike, on the one system database.
//!
//! A launched [`Cairn`] *is* a client too: it dereferences to its own [`Client`], so
//! `app.cancel(id)` and `client.cancel(id)` are one implementation. Called inside a workflow,
//! each management call is a durable step of that workflow (with DBOS's step names), so a
//! replay does not repeat it.
//!
//! ```no_run
//! # #[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
//! # #[error("{0}")] struct AppError(String);
//! #[cairn::workflow]
//! async fn resize(image: String) -> Result<String, AppError> {
//!     Ok(image)
//! }
//!
//! # async fn demo() -> cairn::Result<()> {
//! let client = cairn::Client::connect("postgres://postgres@db:5432/gallery").await?;
//! let handle = client.enqueue("images", resize, "cat.png".into()).await?;
//! let resized: String = handle.result().await?;
//! # let _ = resized;
//! # Ok(()) }
//! ```
//!
//! # Application state and context
//!
//! Values an application builds once — a database pool, an HTTP client, configuration — are
//! given to the builder and read, typed, by any workflow or step with [`state()`], the way
//! axum hands handlers their `State`; no globals. One value per type; [`Error::MissingState`]
//! names a type that was not given.
//!
//! One workflow function can also run as several configured *instances* (DBOS's class
//! instances): [`CairnBuilder::instance_state`] gives an instance its values,
//! [`StartOptions::with_instance`] starts a workflow as that instance (recorded as DBOS's
//! `config_name`), and [`state()`] then returns the instance's value before the
//! application's. Children run as their parent's instance, and recovery gives each workflow
//! its own instance again; a process that does not configure an instance leaves its
//! workflows to one that does.
//!
//! [`workflow_id()`], [`instance()`], [`in_workflow()`], and inside a step body [`step_id()`]
//! and [`step_attempt()`], say where code runs: `(workflow_id, step_id)` is stable across
//! retries and recoveries, an idempotency key for calls to other systems.
//!
//! ```no_run
//! use cairn::{Cairn, StartOptions};
//!
//! struct Payments { endpoint: String }
//!
//! #[cairn::step(max_attempts = 3)]
//! async fn charge(order: u64) -> Result<String, cairn::Error> {
//!     let payments = cairn::state::<Payments>()?; // this instance's, else the application's
//!     let key = format!("{}/{}", cairn::workflow_id().unwrap_or_default(), cairn::step_id().unwrap_or(0));
//!     Ok(format!("charged {order} at {} (idempotency key {key})", payments.endpoint))
//! }
//!
//! #[cairn::workflow]
//! async fn checkout(order: u64) -> Result<String, cairn::Error> {
//!     charge(order).await
//! }
//!
//! # async fn demo() -> cairn::Result<()> {
//! let app = Cairn::builder("shop")
//!     .state(Payments { endpoint: "https://pay.example".into() })
//!     .instance_state("eu", Payments { endpoint: "https://eu.pay.example".into() })
//!     .launch()
//!     .await?;
//! app.start_with(StartOptions::default().with_instance("eu"), checkout, 42).await?;
//! # Ok(()) }
//! ```
//!
//! # What the macros check
//!
//! Mistakes that would only show at run time — or at recovery, much later — are compile
//! errors that say what to write instead: a generic workflow (write one per type), a method
//! taking `self` (use [`state()`]), a workflow argument that borrows (`&str`: take `String`)
//! or is not serde, a return type that is not `Result<T, E>`, an error type that cannot be
//! recorded ([`DurableError`]), an unknown option, and a function without
//! `#[cairn::workflow]` passed to [`Cairn::start`] (only the macro's functions return a
//! [`WorkflowFuture`]). Two workflows under one name make [`CairnBuilder::launch`] fail with
//! [`Error::DuplicateWorkflowName`] naming both.
//!
//! # Recovery
//!
//! [`CairnBuilder::launch`] claims this executor's `PENDING` workflows of the same application
//! version and replays them. Each claim counts as a recovery attempt; a workflow that exceeds
//! its `max_recovery_attempts` (default 100, `#[cairn::workflow(max_recovery_attempts = 5)]`)
//! is moved to `MAX_RECOVERY_ATTEMPTS_EXCEEDED` instead of looping forever.
//!
//! # Durable timers and deadlines
//!
//! [`sleep`] records its wake-up time (`DBOS.sleep`), so after a crash the workflow wakes at
//! the original time. [`StartOptions::with_timeout`] gives a workflow a recorded deadline: past
//! it the workflow is cancelled wherever it runs (also after recovery by another process),
//! its children inherit the deadline, and its caller gets [`Error::TimedOut`].
//!
//! A workflow that waits long — in [`sleep`], [`recv`], [`get_event`], or for another
//! workflow's result — leaves memory after [`CairnBuilder::evict_after`] (default 60 s),
//! keeping only a wake-up registration of under a kilobyte; when what it waits for arrives it
//! replays from its checkpoints to the wait and continues. Its code and its callers cannot
//! tell, so a process can hold a very large number of waiting workflows.
//!
//! # Cancellation and resume
//!
//! [`Client::cancel`] (and [`Client::cancel_with_descendants`]) makes a workflow `CANCELLED`.
//! In this process it stops at once where it waits (`sleep`, `recv`, `get_event`, a child's
//! result) or in a cancellable step (`#[cairn::step(cancellable = true)]`); a step that is
//! not cancellable finishes and is recorded, and the workflow stops at its next durable
//! operation. Its caller's [`WorkflowHandle::result`] returns [`Error::Cancelled`].
//! [`Client::resume`] follows DBOS 3.4: a workflow that has not finished goes back on DBOS's
//! internal queue with its recovery attempts reset, and a process of its application version
//! (this one at once, if it can) continues it from its last checkpoint. To run a failed
//! workflow's code again, fork it (coming with workflow management).
//!
//! # Messages, events and streams
//!
//! - [`send`] / [`recv`]: messages to a workflow by topic, FIFO, each consumed by exactly one
//!   `recv`; `recv` waits up to a durable deadline. From outside, [`Client::send`] (and
//!   [`Client::send_with`] with an idempotency key).
//! - [`set_event`] / [`get_event`]: a workflow publishes key/value events (latest wins,
//!   history kept); anyone reads them, waiting if needed ([`Client::get_event`],
//!   [`Client::list_events`]).
//! - [`write_stream`] / [`close_stream`]: an ordered stream of values;
//!   [`Client::read_stream`] yields them as they are written.
//! - [`wait_first`] / [`wait_all`]: durable waits over several workflows.
//!
//! Writes made by a workflow commit with its checkpoint, so a replay neither repeats nor
//! loses them. Waiting is woken by notifications: in-process at once, Postgres LISTEN/NOTIFY
//! across processes, and on SQLite a cheap `data_version` check for other processes.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! #[cairn::workflow]
//! async fn approval(order: u64) -> Result<bool, cairn::Error> {
//!     cairn::set_event("status", &"waiting for approval").await?;
//!     let approved = cairn::recv::<bool>("approval", Duration::from_secs(3600)).await?;
//!     cairn::set_event("status", &"decided").await?;
//!     Ok(approved.unwrap_or(false))
//! }
//! ```
//!
//! # Schedules
//!
//! [`Client::create_schedule`] runs a workflow at every tick of a cron expression (5 fields, or
//! 6 with seconds first), read in an IANA time zone ([`ScheduleOptions::timezone`], UTC by
//! default). The workflow takes the tick's scheduled time and the schedule's context, checked
//! at compile time. Each tick starts exactly one workflow, `sched-<name>-<time>` as DBOS names
//! it, however many processes run; it is enqueued on the schedule's queue (DBOS's internal
//! queue by default). Schedules live in the system database (`workflow_schedules`), so a
//! schedule created by one process is fired by all of them; [`CairnBuilder::schedule`]
//! declares one in code instead (created or updated at launch). Pause, resume, delete, list,
//! trigger now and backfill a past range are methods of [`Cairn`];
//! [`ScheduleOptions::automatic_backfill`] fires ticks missed while no process ran (the latest
//! [`CairnBuilder::max_automatic_backfill`]).
//!
//! ```no_run
//! use chrono::{DateTime, Utc};
//!
//! #[cairn::workflow]
//! async fn report(at: DateTime<Utc>, team: String) -> Result<(), cairn::Error> {
//!     println!("report for {team} scheduled at {at}");
//!     Ok(())
//! }
//!
//! # async fn demo(app: cairn::Cairn) -> cairn::Result<()> {
//! let weekdays = cairn::ScheduleOptions::default().timezone("Europe/Berlin");
//! app.create_schedule("daily-report", report, "0 9 * * MON-FRI", "ops".to_owned(), weekdays)
//!     .await?;
//! app.pause_schedule("daily-report").await?;
//! # Ok(()) }
//! ```
//!
//! # Changing deployed workflows
//!
//! [`patch`] and [`deprecate_patch`] let new code branch old executions (started before a
//! change) from new ones, with DBOS's semantics.
//!
//! # Rolling out new code
//!
//! Every workflow records the application version of the process that started it
//! ([`CairnBuilder::app_version`]; by default a hash of the registered workflows' code), and
//! recovery resumes only workflows of its own version and executor id, so an execution is
//! never replayed against steps that changed under it. [`CairnBuilder::launch`] leaves this
//! executor's `PENDING` workflows of other versions alone and says so in a warning (how many,
//! of which versions, what to do). Two ways to roll out:
//!
//! - **Keep the old workers until they drain.** Start the new version's processes beside the
//!   old ones, each under an executor id of its own (`DBOS__VMID`), send new work to them,
//!   and stop each old process once its workflows are done (`dbos workflow list --status
//!   PENDING --application-version <old>` is empty). An old process that dies before then is
//!   restarted with its old code and executor id, and recovers its own workflows.
//! - **Fork onto the new version.** For an execution the new code can continue, cancel it and
//!   fork it from a step: `dbos workflow cancel <id>`, then `dbos workflow fork <id> --step <n>
//!   --application-version <new>`. The fork is a new workflow that keeps the original's
//!   recorded steps before `<n>`; a running Cairn process of the new version dequeues it from
//!   DBOS's internal queue within five seconds, and those steps do not run again.
//!
//! For changes that only add a branch, [`patch`] lets new code replay old executions; keep the
//! old version string (`DBOS__APPVERSION`) while old executions remain so recovery picks them up.
//!
//! # When the database goes away
//!
//! A database outage is waited out, never turned into a workflow's failure: every durable
//! operation (starts, checkpoints, completions, messages, events, streams, recovery, and
//! reads such as [`WorkflowHandle::result`]) retries failures that can pass by themselves —
//! a lost or refused connection, a restarting server, too many connections, a serialization
//! failure or deadlock, a SQLite file locked by another process — with capped, jittered
//! backoff for as long as the outage lasts, and continues where it was. Only shutdown ends
//! the wait (the workflows stay `PENDING` for the next launch). [`CairnBuilder::launch`]
//! waits up to [`CairnBuilder::connect_timeout`] for a database that is not up yet.
//! [`Error::is_transient`] tells these failures apart where a public call returns one.
//!
//! # Logs and spans
//!
//! Cairn reports through [`tracing`](https://docs.rs/tracing); install any subscriber to see
//! it. Without one, spans and lines cost next to nothing.
//!
//! - A `workflow` span (`workflow_id`, `name`, `origin`: `start`, `child`, `recovery` or
//!   `queue`) covers each execution in this process, and a `step` span (`workflow_id`,
//!   `name`, `function_id`, `attempt`) each step inside it. A child's span nests under its
//!   parent's; a top-level workflow's span is a root that *follows from* the caller's span,
//!   so a request that started a long workflow is not held open until it ends.
//! - `warn`: a workflow failed (with its id and error), a step is retrying or out of attempts
//!   (with its workflow id), launch left other versions' workflows alone. `info`: a workflow
//!   recovered or dequeued, cancelled, timed out, or taken over by another execution.
//!   `debug`: a workflow started or succeeded (at a thousand workflows a second, `info` lines
//!   for those would drown the ones that need attention).
//!
//! # Errors
//!
//! Every public call returns [`Result`]. A panicking workflow or step is recorded as that
//! workflow's error (name `Panic`), never a crash of the process. A workflow's or step's own
//! error is recorded with its value and read back as the same value on replay (see
//! [Steps](#steps)); [`Error::application_error`] reads it from a handle's result.
//!
//! # Coming from DBOS Python
//!
//! | DBOS Python | Cairn | What differs, and why |
//! |---|---|---|
//! | `@DBOS.workflow()` | [`#[cairn::workflow]`](macro@workflow) on an `async fn … -> Result<T, E>` | Arguments, output and error are serde types stored as `portable_json` (not pickle), so every DBOS language reads them; the error's value is recorded and a replay returns the same `E`. |
//! | `@DBOS.step(retries_allowed=True, max_attempts=3)` | [`#[cairn::step(max_attempts = 3)]`](macro@step); [`run_step`] for a closure | Retries are on when `max_attempts > 1` (default 1). `timeout_ms`, `should_retry` and `cancellable` are Cairn's. |
//! | `DBOS.start_workflow(f, *args)` | [`Cairn::start`] → [`WorkflowHandle<T>`] | Arguments are one value, `()` or a tuple. Inside a workflow it starts a child exactly once, as DBOS does ([`start_child_workflow`] too). |
//! | calling `f(*args)` | `f(args).await` | Inside a workflow: a child, waited for. Outside, after launch: a durable workflow with a generated id when `E: From<cairn::Error>` (a cancellation needs somewhere to go), else a plain call that says so in the log; [`Cairn::run`] is always durable. |
//! | `with SetWorkflowID(id):` | [`Cairn::start_with`] with [`StartOptions::id`] | An option instead of a context manager; [`WorkflowHandle::created`] says whether the start created the workflow. |
//! | `DBOS.retrieve_workflow(id)` | [`Client::retrieve`] | The caller names the output type. |
//! | `DBOS.send` / `DBOS.recv` | [`send`], [`Client::send`], [`Client::send_with`] / [`recv`] | A topic is a `&str` or `None`; `recv` takes its timeout explicitly (DBOS defaults to 60 s). |
//! | `DBOS.set_event` / `DBOS.get_event` | [`set_event`] / [`get_event`], [`Client::get_event`], [`Client::list_events`] | |
//! | `DBOS.write_stream` / `DBOS.read_stream` | [`write_stream`], [`close_stream`] / [`Client::read_stream`] | Reading is an async `futures::Stream`. |
//! | `DBOS.sleep(seconds)` | [`sleep`] | |
//! | `DBOS.workflow_id`, `DBOS.step_id`, `DBOS.step_status.current_attempt` | [`workflow_id()`], [`step_id()`], [`step_attempt()`] | `step_attempt()` counts from 1; DBOS's from 0. |
//! | `DBOS.cancel_workflow` / `DBOS.resume_workflow` | [`Client::cancel`], [`Client::cancel_with_descendants`] / [`Client::resume`] | As DBOS 3.4: resume goes through `_dbos_internal_queue` and keeps the workflow's version. |
//! | `DBOS.fork_workflow` | not yet in Cairn's API | `dbos workflow fork` works on Cairn's database (see [Rolling out new code](#rolling-out-new-code)). |
//! | `DBOSClient` | not yet in Rust | A launched [`Cairn`] does by id what a client does (retrieve, send, events, streams, cancel, resume); DBOS's own clients work on Cairn's database. |
//! | `Queue(..)`, `queue.enqueue(..)`, `SetEnqueueOptions` | `CairnBuilder::queue(Queue::new(..))`, `app.enqueue(&queue, ..)`, `EnqueueOptions` | Rows and definitions as DBOS writes them. |
//! | `@DBOS.scheduled(cron)` | coming | |
//! | configured class instances (`config_name`) | [`CairnBuilder::instance_state`], [`StartOptions::with_instance`], [`state()`] | One function, several configured instances, without classes. |
//! | `DBOS.patch` / `DBOS.deprecate_patch` | [`patch`] / [`deprecate_patch`] | |
//! | `DBOS(config=…)`, `DBOS.launch()`, `DBOS.destroy()` | [`Cairn::builder`] (`.database_url`, `.app_version`, `.executor_id`), [`CairnBuilder::launch`], [`Cairn::shutdown`] | No global `DBOS` object and no YAML file: an application value (cheap to clone) and DBOS's environment variables. Workflow code finds its context without it. |
//! | `DBOS.logger`, OpenTelemetry | `tracing` spans and lines | See [Logs and spans](#logs-and-spans); OTLP export and DBOS's `dbos.otelContext` trace propagation with the `otel` feature (`cairn::otel`). |
//!
//! # Cargo features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `sqlite` | yes | the embedded SQLite system database (bundled SQLite) |
//! | `postgres` | yes | the Postgres system database (tokio-postgres, deadpool, rustls) |
//! | `admin` | no | `cairn::admin`: the admin HTTP server and web dashboard (`CairnBuilder::admin_server`, `admin::serve_dashboard`; axum) |
//! | `sqlx-postgres`, `sqlx-sqlite` | no | transactional steps over sqlx pools (`datasource::SqlxPgDatasource`, `datasource::SqlxSqliteDatasource`); `postgres` and `sqlite` bring `datasource::PostgresDatasource` and `datasource::SqliteDatasource` |
//! | `otel` | no | `cairn::otel`: OpenTelemetry export of the workflow and step spans over OTLP/HTTP, configured from the `OTEL_*` variables; workflows store their caller's W3C trace context (DBOS's `dbos.otelContext` attribute), so their spans join its trace in any process |
//!
//! Either alone builds; a URL for a backend that is not compiled in is a clear
//! [`Error::Config`].

#[cfg(feature = "admin")]
pub mod admin;
mod app;
mod client;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub mod datasource;
mod engine;
mod error;
#[cfg(feature = "otel")]
pub mod otel;
mod serialization;
mod status;
pub(crate) mod store;

pub use app::{APP_VERSION_ENV, Cairn, CairnBuilder, DATABASE_URL_ENV, EXECUTOR_ID_ENV};
pub use client::{ApplicationVersion, EventHistoryEntry, ForkOptions, RetentionPolicy};
pub use client::{Client, ClientOptions, Message, ReadStreamOptions};
pub use client::{MessageInfo, QueueStats, StreamInfo};
pub use client::{
    MigrateReport, check_system_database, migrate_system_database, reset_system_database,
};
pub use engine::comm::{SendOptions, close_stream, get_event, recv, send, set_event, write_stream};
pub use engine::control::{deprecate_patch, patch, wait_all, wait_first};
pub use engine::debounce::Debouncer;
pub use engine::enqueue::{
    DeduplicationPolicy, EnqueueOptions, MAX_PRIORITY, enqueue_workflow, enqueue_workflow_with,
};
pub use engine::queue::{INTERNAL_QUEUE_NAME, Queue, RESERVED_QUEUE_PREFIX, RateLimit};
pub use engine::registry::WorkflowFuture;
pub use engine::schedule::{Schedule, ScheduleOptions, ScheduleStatus};
pub use engine::state::{in_workflow, instance, state, step_attempt, step_id, workflow_id};
pub use engine::step::{StepOptions, run_step, run_step_with};
pub use engine::timer::sleep;
pub use engine::workflow::{
    StartOptions, WorkflowFn, WorkflowHandle, start_child_workflow, start_child_workflow_with,
};
pub use error::{DatabaseErrorKind, DurableError, Error, PortableError, Result};
pub use status::{
    ListStepsOptions, ListWorkflowsOptions, SortOrder, StepInfo, WorkflowState, WorkflowStatus,
};

/// Mark an `async fn` as a durable workflow. See the [crate docs](crate#a-first-workflow).
///
/// Options: `name = "…"` (the stored name; default: the function's name),
/// `max_recovery_attempts = N` (default 100).
pub use cairn_macros::workflow;

/// Mark an `async fn` as a checkpointed step. See the [crate docs](crate#steps).
///
/// Options: `name = "…"`, `max_attempts = N` (default 1), `interval_ms = N` (default 1000),
/// `backoff_rate = F` (default 2.0), `max_interval_ms = N` (default 3,600,000),
/// `timeout_ms = N` (per attempt; default none), `cancellable = true` (default false),
/// `should_retry = path::to::fn` (a `fn(&E) -> bool`; default: retry every error).
pub use cairn_macros::step;

/// The README's examples, compiled as doctests so they never drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// The default recovery attempts before a workflow is dead-lettered.
pub const DEFAULT_MAX_RECOVERY_ATTEMPTS: u32 = 100;

/// Items used by the macros' generated code. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::engine::convert::{ConvertError, NoConversion, ResultParts, ViaFrom};
    pub use crate::engine::registry::{
        RecordedArg, RecoveredArg, WorkflowRegistration, decode_arg, encode_arg, workflow_future,
    };
    pub use crate::engine::step::StepCall;
    pub use crate::engine::workflow::{WorkflowCall, finish};
    pub use futures::future::BoxFuture;
    pub use inventory;
    pub use serde_json::Value;

    /// The `TypeId` of a value's type (a function item's, for the registry).
    pub fn type_id_of_val<T: 'static>(_: &T) -> std::any::TypeId {
        std::any::TypeId::of::<T>()
    }
}
