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
//! - [Recovery](#recovery)
//! - [Durable timers and deadlines](#durable-timers-and-deadlines)
//! - [Cancellation and resume](#cancellation-and-resume)
//! - [Messages, events and streams](#messages-events-and-streams)
//! - [Changing deployed workflows](#changing-deployed-workflows)
//! - [When the database goes away](#when-the-database-goes-away)
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
//! concurrent starts. [`Cairn::retrieve`] returns a handle to any workflow.
//!
//! # Child workflows and parallel steps
//!
//! Calling a `#[cairn::workflow]` function from inside a workflow starts it as a child (id
//! `<parent id>-<operation id>`), exactly once across replays, and waits for it.
//! [`start_child_workflow`] returns a handle instead. Operation ids are taken when a durable
//! operation is *called*, so steps started in a fixed order and awaited together (`join!`,
//! `futures::future::join_all`) replay correctly.
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
//! # Cancellation and resume
//!
//! [`Cairn::cancel`] (and [`Cairn::cancel_with_descendants`]) makes a workflow `CANCELLED`.
//! In this process it is interrupted at once: its current wait (`sleep`, `recv`,
//! `get_event`, a child's result) or cancellable step (`#[cairn::step(cancellable = true)]`)
//! returns [`Error::Cancelled`]; elsewhere it stops at its next durable operation.
//! [`Cairn::resume`] continues a cancelled or failed workflow from its last checkpoint.
//!
//! # Messages, events and streams
//!
//! - [`send`] / [`recv`]: messages to a workflow by topic, FIFO, each consumed by exactly one
//!   `recv`; `recv` waits up to a durable deadline. From outside, [`Cairn::send`] with an
//!   optional idempotency key.
//! - [`set_event`] / [`get_event`]: a workflow publishes key/value events (latest wins,
//!   history kept); anyone reads them, waiting if needed ([`Cairn::get_event`],
//!   [`Cairn::list_events`]).
//! - [`write_stream`] / [`close_stream`]: an ordered stream of values;
//!   [`Cairn::read_stream`] yields them as they are written.
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
//! # Changing deployed workflows
//!
//! [`patch`] and [`deprecate_patch`] let new code branch old executions (started before a
//! change) from new ones, with DBOS's semantics.
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
//! # Errors
//!
//! Every public call returns [`Result`]. A panicking workflow or step is recorded as that
//! workflow's error (name `Panic`), never a crash of the process. A workflow's or step's own
//! error is recorded with its value and read back as the same value on replay (see
//! [Steps](#steps)); [`Error::application_error`] reads it from a handle's result.
//!
//! # Cargo features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `sqlite` | yes | the embedded SQLite system database (bundled SQLite) |
//! | `postgres` | yes | the Postgres system database (tokio-postgres, deadpool, rustls) |
//!
//! Either alone builds; a URL for a backend that is not compiled in is a clear
//! [`Error::Config`].

mod app;
mod engine;
mod error;
mod serialization;
mod status;
pub(crate) mod store;

pub use app::{APP_VERSION_ENV, Cairn, CairnBuilder, DATABASE_URL_ENV, EXECUTOR_ID_ENV};
pub use engine::comm::{close_stream, get_event, recv, send, set_event, write_stream};
pub use engine::control::{deprecate_patch, patch, wait_all, wait_first};
pub use engine::step::{StepOptions, run_step, run_step_with};
pub use engine::timer::sleep;
pub use engine::workflow::{
    StartOptions, WorkflowFn, WorkflowHandle, start_child_workflow, start_child_workflow_with,
};
pub use error::{DatabaseErrorKind, DurableError, Error, PortableError, Result};
pub use status::{StepInfo, WorkflowState, WorkflowStatus};

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

/// The default recovery attempts before a workflow is dead-lettered.
pub const DEFAULT_MAX_RECOVERY_ATTEMPTS: u32 = 100;

/// Items used by the macros' generated code. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::engine::convert::{ConvertError, NoConversion, ResultParts, ViaFrom};
    pub use crate::engine::registry::WorkflowRegistration;
    pub use crate::engine::step::StepCall;
    pub use crate::engine::workflow::{WorkflowCall, finish};
    pub use crate::serialization::{decode_arg, encode_arg};
    pub use futures::future::BoxFuture;
    pub use inventory;
    pub use serde_json::Value;

    /// The `TypeId` of a value's type (a function item's, for the registry).
    pub fn type_id_of_val<T: 'static>(_: &T) -> std::any::TypeId {
        std::any::TypeId::of::<T>()
    }
}
