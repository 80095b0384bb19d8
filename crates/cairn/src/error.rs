//! One error type for every public call.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `Result` with Cairn's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error raised by application code (a workflow or a step), in DBOS's portable form.
///
/// This is what is recorded in the system database (`{"name","message","code","data"}`) and
/// what comes back when a recorded failure is replayed or read by another process, whatever
/// language wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortableError {
    /// The error's kind, usually its type name (`"PaymentError"`).
    pub name: String,
    /// The human-readable message (the error's `Display`).
    pub message: String,
    /// An application code, if the error carried one.
    #[serde(default)]
    pub code: Option<serde_json::Value>,
    /// Structured details, if any.
    #[serde(default)]
    pub data: Option<serde_json::Value>,
}

impl PortableError {
    /// A portable error with a name and a message, no code or data.
    pub fn new(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            message: message.into(),
            code: None,
            data: None,
        }
    }

    /// The typed value recorded in `data`, decoded as `E` (`None` without data).
    pub(crate) fn decode_data<E: serde::de::DeserializeOwned>(
        &self,
    ) -> Option<std::result::Result<E, serde_json::Error>> {
        self.data.clone().map(serde_json::from_value)
    }
}

/// The error type of a step or workflow: recorded with its outcome (`Serialize`) and read back
/// as the same value on replay (`DeserializeOwned`), so a workflow that matches on it takes
/// the same branch after a crash. Implemented for every such type, [`Error`] included.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error type of a Cairn step or workflow",
    note = "derive `serde::Serialize` and `serde::Deserialize` for it and implement `Display` (e.g. with thiserror): its value is recorded so that a replay returns the same error"
)]
pub trait DurableError:
    Serialize + serde::de::DeserializeOwned + fmt::Display + Send + 'static
{
}

impl<E> DurableError for E where
    E: Serialize + serde::de::DeserializeOwned + fmt::Display + Send + 'static
{
}

/// Shows the message only, so a replayed error reads exactly as the original did.
impl fmt::Display for PortableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PortableError {}

/// Whether a system database failure can pass by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DatabaseErrorKind {
    /// The database could not serve the request for now: the connection was refused, reset
    /// or closed, the server is starting or shutting down, it has too many connections, a
    /// transaction hit a serialization failure or deadlock, or SQLite's file is locked by
    /// another process. Cairn retries these for as long as the outage lasts.
    Transient,
    /// The database refused the operation itself (a constraint, the schema, a value it cannot
    /// store, a row that does not decode). Retrying would fail the same way.
    Permanent,
}

/// Everything that can go wrong in Cairn.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A workflow or step failed with an application error (recorded, or replayed from the record).
    #[error("{0}")]
    Application(PortableError),

    /// The system database refused or failed an operation. [`Error::is_transient`] says
    /// whether it can pass by itself (Cairn's own durable operations retry those).
    #[error("system database error while {context}: {source}")]
    Database {
        /// What Cairn was doing.
        context: String,
        /// Whether the failure is transient or permanent.
        kind: DatabaseErrorKind,
        /// The driver's error (for Postgres, with the server's SQLSTATE, message and detail).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The configuration is unusable (a malformed URL, an unknown `sslmode`, …).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Another live process (or another application in this one) runs under this executor id
    /// on the same system database, so `launch()` refused to start a second: it would recover
    /// the first one's in-flight workflows and run their current steps again. Give each
    /// process its own id (`DBOS__VMID` or [`CairnBuilder::executor_id`](crate::CairnBuilder::executor_id)).
    #[error(
        "executor id `{executor_id}` is in use by a live process on this system database{}; give each process its own executor id (set DBOS__VMID or CairnBuilder::executor_id)",
        holder.as_deref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    ExecutorIdInUse {
        /// The id that is taken.
        executor_id: String,
        /// Who holds it, when the database can tell (a process id, a server session).
        holder: Option<String>,
    },

    /// The system database's schema is at a version Cairn cannot use.
    #[error("system database schema is at version {found}, Cairn needs {expected}: {hint}")]
    SchemaVersion {
        /// The version recorded in `dbos_migrations`.
        found: i64,
        /// The version Cairn uses.
        expected: i64,
        /// What to do about it.
        hint: String,
    },

    /// A stored value could not be decoded.
    #[error("cannot decode {column} of workflow {workflow_id}: {reason}")]
    Decode {
        /// The workflow whose row it is.
        workflow_id: String,
        /// The table and column (`workflow_output.output`, `operation_outputs.output`, …).
        column: String,
        /// Why: an unknown format (`cannot decode format py_pickle`) or a type mismatch.
        reason: String,
    },

    /// A value could not be serialized to portable JSON.
    #[error("cannot serialize {what} as portable JSON: {source}")]
    Serialize {
        /// What was being serialized (`argument 1 of checkout`, `output of step charge`).
        what: String,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },

    /// A replay met a recorded operation under another name: the workflow's code changed.
    #[error(
        "non-deterministic workflow {workflow_id}: operation {function_id} was recorded as `{recorded}` but the code now calls `{expected}`"
    )]
    NonDeterminism {
        /// The workflow being replayed.
        workflow_id: String,
        /// The operation id.
        function_id: i32,
        /// The name the code calls now.
        expected: String,
        /// The name recorded in `operation_outputs`.
        recorded: String,
    },

    /// No workflow has this id.
    #[error("workflow {0} does not exist")]
    NotFound(String),

    /// No workflow function is registered under this name in this process.
    #[error("no workflow named `{0}` is registered (annotate it with #[cairn::workflow])")]
    NotRegistered(String),

    /// A workflow id is already used by a different workflow function.
    #[error(
        "workflow id {workflow_id} already belongs to workflow `{existing}`, not `{requested}`"
    )]
    ConflictingWorkflow {
        /// The id.
        workflow_id: String,
        /// The function recorded for it.
        existing: String,
        /// The function the caller asked for.
        requested: String,
    },

    /// An enqueue was refused because another unfinished workflow of the queue holds its
    /// deduplication id (DBOS's `DBOSQueueDeduplicatedError`). Nothing was enqueued.
    #[error(
        "workflow {workflow_id} was deduplicated: workflow {existing} in queue {queue} holds deduplication id {deduplication_id}"
    )]
    Deduplicated {
        /// The id the refused enqueue asked for.
        workflow_id: String,
        /// The queue.
        queue: String,
        /// The deduplication id.
        deduplication_id: String,
        /// The workflow holding it.
        existing: String,
    },

    /// The workflow was cancelled.
    #[error("workflow {0} was cancelled")]
    Cancelled(String),

    /// The workflow was cancelled because its deadline (its start options' timeout) passed.
    #[error("workflow {0} timed out")]
    TimedOut(String),

    /// A step failed on every one of its attempts.
    #[error("step `{step}` failed after {attempts} attempts: {last}")]
    StepRetriesExhausted {
        /// The step's name.
        step: String,
        /// How many attempts ran.
        attempts: u32,
        /// The last attempt's error.
        last: Box<PortableError>,
    },

    /// One attempt of a step ran longer than its timeout.
    #[error("step `{step}` timed out after {timeout_ms} ms")]
    StepTimedOut {
        /// The step's name.
        step: String,
        /// The per-attempt timeout, milliseconds.
        timeout_ms: u64,
    },

    /// Reading a stream waited longer than its per-value timeout for the next value
    /// ([`ReadStreamOptions::timeout`](crate::ReadStreamOptions::timeout)).
    #[error(
        "no value at offset {offset} of stream `{key}` of workflow {workflow_id} within {timeout_ms} ms"
    )]
    StreamTimedOut {
        /// The workflow writing the stream.
        workflow_id: String,
        /// The stream's key.
        key: String,
        /// The offset that was awaited.
        offset: u64,
        /// The per-value timeout, milliseconds.
        timeout_ms: u64,
    },

    /// The workflow failed recovery too many times and was moved to the dead-letter status.
    #[error("workflow {workflow_id} exceeded its {max_attempts} recovery attempts")]
    MaxRecoveryAttemptsExceeded {
        /// The workflow.
        workflow_id: String,
        /// Its limit.
        max_attempts: u32,
    },

    /// Another execution now owns this workflow; this one stopped without writing.
    #[error("workflow {0} is now owned by another execution")]
    OwnershipLost(String),

    /// The application is shutting down; the workflow stays `PENDING` for the next launch.
    #[error("Cairn is shutting down")]
    Shutdown,

    /// A durable operation was called where it needs a workflow.
    #[error("{0} can only be called inside a workflow")]
    NotInWorkflow(&'static str),

    /// An argument was rejected.
    #[error("invalid argument `{argument}`: {reason}")]
    InvalidArgument {
        /// The argument's name.
        argument: &'static str,
        /// What was wrong with it.
        reason: String,
    },

    /// Two workflow functions are registered under one name, so recovery could not tell
    /// which one a stored workflow belongs to; `launch()` refuses to start.
    #[error(
        "two workflows are registered under the name `{name}`: `{first}` and `{second}`; give one another name with #[cairn::workflow(name = \"…\")]"
    )]
    DuplicateWorkflowName {
        /// The stored name they share.
        name: &'static str,
        /// One function's Rust path.
        first: &'static str,
        /// The other's.
        second: &'static str,
    },

    /// [`state`](crate::state) found no value of the requested type: none was given to the
    /// builder (for the workflow's instance, nor for the whole application).
    #[error("{}", crate::engine::state::missing_state_message(.type_name, .instance.as_deref()))]
    MissingState {
        /// The type asked for.
        type_name: &'static str,
        /// The instance the workflow runs as ([`StartOptions::with_instance`](crate::StartOptions::with_instance)), if any.
        instance: Option<String>,
    },

    /// The workflow's execution left memory while it waited (see
    /// [`CairnBuilder::evict_after`](crate::CairnBuilder::evict_after)); it runs again from its
    /// checkpoints when woken. Internal: workflow code and callers never see it.
    #[doc(hidden)]
    #[error("workflow {0} was evicted from memory while it waits")]
    Evicted(String),

    /// A transactional step's transaction on an application database failed (see
    /// [`datasource`](crate::datasource)); it was rolled back, so none of its writes happened.
    /// [`Error::is_transient`] says whether it was a serialization failure, a deadlock or a
    /// lost connection, which the step retries by itself.
    #[error("transaction on data source `{datasource}` failed: {source}")]
    Transaction {
        /// The data source's name.
        datasource: String,
        /// Whether the failure is transient (a conflict or an outage) or permanent.
        kind: DatabaseErrorKind,
        /// The driver's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// A permanent database failure (the request itself was refused, or Cairn found a state
    /// it rules out).
    pub(crate) fn database(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::database_of(DatabaseErrorKind::Permanent, context, source)
    }

    /// A database failure of a known kind.
    pub(crate) fn database_of(
        kind: DatabaseErrorKind,
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Database {
            context: context.into(),
            kind,
            source: Box::new(source),
        }
    }

    /// Whether this is a database failure that can pass by itself (see
    /// [`DatabaseErrorKind::Transient`]). Cairn's own operations retry these; a caller of a
    /// public API that returned one may retry it too.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Database {
                kind: DatabaseErrorKind::Transient,
                ..
            } | Error::Transaction {
                kind: DatabaseErrorKind::Transient,
                ..
            }
        )
    }

    /// This error in DBOS's portable form, as it is recorded when it ends a workflow or step.
    /// Cairn's own errors carry their fields in `data` (under `"cairn"`), so that reading the
    /// record back gives the same variant.
    pub fn to_portable(&self) -> PortableError {
        match self {
            Error::Application(e) => e.clone(),
            other => PortableError {
                data: Detail::of(other)
                    .and_then(|detail| serde_json::to_value(detail).ok())
                    .map(|detail| serde_json::json!({ "cairn": detail })),
                ..PortableError::new(other.kind_name(), other.to_string())
            },
        }
    }

    /// The error a portable record describes: one of Cairn's own variants when the record
    /// carries its fields (see [`Error::to_portable`]), else [`Error::Application`].
    pub fn from_portable(portable: PortableError) -> Self {
        let detail = portable
            .data
            .as_ref()
            .and_then(|data| data.get("cairn"))
            .and_then(|detail| serde_json::from_value::<Detail>(detail.clone()).ok());
        match detail {
            Some(detail) => detail.into_error(),
            None => Error::Application(portable),
        }
    }

    /// The application error this error carries, decoded as `E`: the value a workflow or step
    /// returned as its error, recorded with it, and read back (for example from
    /// [`WorkflowHandle::result`](crate::WorkflowHandle::result)) as the same typed value.
    /// `None` if this is not an application error or its recorded value is not an `E`.
    ///
    /// ```
    /// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    /// # enum ShopError { Declined(u64) }
    /// let recorded = cairn::PortableError {
    ///     data: Some(serde_json::json!({ "Declined": 42 })),
    ///     ..cairn::PortableError::new("ShopError", "card declined")
    /// };
    /// let error = cairn::Error::Application(recorded);
    /// assert_eq!(error.application_error::<ShopError>(), Some(ShopError::Declined(42)));
    /// ```
    pub fn application_error<E: serde::de::DeserializeOwned>(&self) -> Option<E> {
        match self {
            Error::Application(portable) => portable.decode_data().and_then(Result::ok),
            _ => None,
        }
    }

    /// The portable `name` for Cairn's own errors.
    fn kind_name(&self) -> &'static str {
        match self {
            Error::Application(_) => "Error",
            Error::Database { .. } => "DatabaseError",
            Error::Config(_) => "ConfigError",
            Error::ExecutorIdInUse { .. } => "DBOSInitializationError",
            Error::SchemaVersion { .. } => "SchemaVersionError",
            Error::Decode { .. } => "DecodeError",
            Error::Serialize { .. } => "SerializeError",
            Error::NonDeterminism { .. } => "DBOSUnexpectedStepError",
            Error::NotFound(_) => "DBOSNonExistentWorkflowError",
            Error::NotRegistered(_) => "DBOSWorkflowFunctionNotFoundError",
            Error::ConflictingWorkflow { .. } => "DBOSConflictingWorkflowError",
            Error::Deduplicated { .. } => "DBOSQueueDeduplicatedError",
            Error::Cancelled(_) => "DBOSWorkflowCancelledError",
            Error::TimedOut(_) => "DBOSAwaitedWorkflowCancelledError",
            Error::StepRetriesExhausted { .. } => "DBOSMaxStepRetriesExceeded",
            Error::StepTimedOut { .. } => "DBOSStepTimeoutError",
            Error::StreamTimedOut { .. } => "DBOSStreamTimeoutError",
            Error::MaxRecoveryAttemptsExceeded { .. } => "MaxRecoveryAttemptsExceededError",
            Error::OwnershipLost(_) => "DBOSWorkflowConflictIDError",
            Error::Shutdown => "ShutdownError",
            Error::NotInWorkflow(_) => "NotInWorkflowError",
            Error::InvalidArgument { .. } => "InvalidArgumentError",
            Error::DuplicateWorkflowName { .. } => "DuplicateWorkflowNameError",
            Error::MissingState { .. } => "MissingStateError",
            Error::Transaction { .. } => "TransactionError",
            Error::Evicted(_) => "EvictedError",
        }
    }

    /// Whether this error stops an execution without being recorded as the workflow's outcome
    /// (the workflow's fate is decided elsewhere: cancelled, taken over, or left for recovery).
    pub(crate) fn is_interruption(&self) -> bool {
        matches!(
            self,
            Error::Cancelled(_) | Error::OwnershipLost(_) | Error::Shutdown | Error::Evicted(_)
        )
    }
}

/// Recorded as its portable form; Cairn's own variants keep their fields (see
/// [`Error::to_portable`]).
impl Serialize for Error {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        self.to_portable().serialize(serializer)
    }
}

/// Read back from its portable form with [`Error::from_portable`].
impl<'de> Deserialize<'de> for Error {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        PortableError::deserialize(deserializer).map(Error::from_portable)
    }
}

/// The fields of Cairn's own error variants, as recorded in a portable error's `data`.
/// Variants holding a driver error or a `&'static str` are recorded by message only.
#[derive(Serialize, Deserialize)]
enum Detail {
    Config(String),
    ExecutorIdInUse {
        executor_id: String,
        holder: Option<String>,
    },
    SchemaVersion {
        found: i64,
        expected: i64,
        hint: String,
    },
    Decode {
        workflow_id: String,
        column: String,
        reason: String,
    },
    NonDeterminism {
        workflow_id: String,
        function_id: i32,
        expected: String,
        recorded: String,
    },
    NotFound(String),
    NotRegistered(String),
    ConflictingWorkflow {
        workflow_id: String,
        existing: String,
        requested: String,
    },
    Deduplicated {
        workflow_id: String,
        queue: String,
        deduplication_id: String,
        existing: String,
    },
    Cancelled(String),
    TimedOut(String),
    StepRetriesExhausted {
        step: String,
        attempts: u32,
        last: Box<PortableError>,
    },
    StepTimedOut {
        step: String,
        timeout_ms: u64,
    },
    StreamTimedOut {
        workflow_id: String,
        key: String,
        offset: u64,
        timeout_ms: u64,
    },
    MaxRecoveryAttemptsExceeded {
        workflow_id: String,
        max_attempts: u32,
    },
    OwnershipLost(String),
    Shutdown,
}

impl Detail {
    fn of(error: &Error) -> Option<Self> {
        Some(match error {
            Error::Config(a) => Detail::Config(a.clone()),
            Error::ExecutorIdInUse {
                executor_id,
                holder,
            } => Detail::ExecutorIdInUse {
                executor_id: executor_id.clone(),
                holder: holder.clone(),
            },
            Error::SchemaVersion {
                found,
                expected,
                hint,
            } => Detail::SchemaVersion {
                found: *found,
                expected: *expected,
                hint: hint.clone(),
            },
            Error::Decode {
                workflow_id,
                column,
                reason,
            } => Detail::Decode {
                workflow_id: workflow_id.clone(),
                column: column.clone(),
                reason: reason.clone(),
            },
            Error::NonDeterminism {
                workflow_id,
                function_id,
                expected,
                recorded,
            } => Detail::NonDeterminism {
                workflow_id: workflow_id.clone(),
                function_id: *function_id,
                expected: expected.clone(),
                recorded: recorded.clone(),
            },
            Error::NotFound(a) => Detail::NotFound(a.clone()),
            Error::NotRegistered(a) => Detail::NotRegistered(a.clone()),
            Error::ConflictingWorkflow {
                workflow_id,
                existing,
                requested,
            } => Detail::ConflictingWorkflow {
                workflow_id: workflow_id.clone(),
                existing: existing.clone(),
                requested: requested.clone(),
            },
            Error::Deduplicated {
                workflow_id,
                queue,
                deduplication_id,
                existing,
            } => Detail::Deduplicated {
                workflow_id: workflow_id.clone(),
                queue: queue.clone(),
                deduplication_id: deduplication_id.clone(),
                existing: existing.clone(),
            },
            Error::Cancelled(a) => Detail::Cancelled(a.clone()),
            Error::TimedOut(a) => Detail::TimedOut(a.clone()),
            Error::StepRetriesExhausted {
                step,
                attempts,
                last,
            } => Detail::StepRetriesExhausted {
                step: step.clone(),
                attempts: *attempts,
                last: last.clone(),
            },
            Error::StepTimedOut { step, timeout_ms } => Detail::StepTimedOut {
                step: step.clone(),
                timeout_ms: *timeout_ms,
            },
            Error::StreamTimedOut {
                workflow_id,
                key,
                offset,
                timeout_ms,
            } => Detail::StreamTimedOut {
                workflow_id: workflow_id.clone(),
                key: key.clone(),
                offset: *offset,
                timeout_ms: *timeout_ms,
            },
            Error::MaxRecoveryAttemptsExceeded {
                workflow_id,
                max_attempts,
            } => Detail::MaxRecoveryAttemptsExceeded {
                workflow_id: workflow_id.clone(),
                max_attempts: *max_attempts,
            },
            Error::OwnershipLost(a) => Detail::OwnershipLost(a.clone()),
            Error::Shutdown => Detail::Shutdown,
            Error::Application(_)
            | Error::Database { .. }
            | Error::Serialize { .. }
            | Error::NotInWorkflow(_)
            | Error::InvalidArgument { .. }
            | Error::DuplicateWorkflowName { .. }
            | Error::MissingState { .. }
            | Error::Transaction { .. }
            | Error::Evicted(_) => return None,
        })
    }

    fn into_error(self) -> Error {
        match self {
            Detail::Config(a) => Error::Config(a),
            Detail::ExecutorIdInUse {
                executor_id,
                holder,
            } => Error::ExecutorIdInUse {
                executor_id,
                holder,
            },
            Detail::SchemaVersion {
                found,
                expected,
                hint,
            } => Error::SchemaVersion {
                found,
                expected,
                hint,
            },
            Detail::Decode {
                workflow_id,
                column,
                reason,
            } => Error::Decode {
                workflow_id,
                column,
                reason,
            },
            Detail::NonDeterminism {
                workflow_id,
                function_id,
                expected,
                recorded,
            } => Error::NonDeterminism {
                workflow_id,
                function_id,
                expected,
                recorded,
            },
            Detail::NotFound(a) => Error::NotFound(a),
            Detail::NotRegistered(a) => Error::NotRegistered(a),
            Detail::Deduplicated {
                workflow_id,
                queue,
                deduplication_id,
                existing,
            } => Error::Deduplicated {
                workflow_id,
                queue,
                deduplication_id,
                existing,
            },
            Detail::ConflictingWorkflow {
                workflow_id,
                existing,
                requested,
            } => Error::ConflictingWorkflow {
                workflow_id,
                existing,
                requested,
            },
            Detail::Cancelled(a) => Error::Cancelled(a),
            Detail::TimedOut(a) => Error::TimedOut(a),
            Detail::StepRetriesExhausted {
                step,
                attempts,
                last,
            } => Error::StepRetriesExhausted {
                step,
                attempts,
                last,
            },
            Detail::StepTimedOut { step, timeout_ms } => Error::StepTimedOut { step, timeout_ms },
            Detail::StreamTimedOut {
                workflow_id,
                key,
                offset,
                timeout_ms,
            } => Error::StreamTimedOut {
                workflow_id,
                key,
                offset,
                timeout_ms,
            },
            Detail::MaxRecoveryAttemptsExceeded {
                workflow_id,
                max_attempts,
            } => Error::MaxRecoveryAttemptsExceeded {
                workflow_id,
                max_attempts,
            },
            Detail::OwnershipLost(a) => Error::OwnershipLost(a),
            Detail::Shutdown => Error::Shutdown,
        }
    }
}

impl Error {
    /// A copy of this error if it holds only plain data (not a driver error).
    pub(crate) fn clone_data(&self) -> Option<Self> {
        match self {
            Error::Application(p) => Some(Error::Application(p.clone())),
            Error::NotInWorkflow(a) => Some(Error::NotInWorkflow(a)),
            Error::DuplicateWorkflowName {
                name,
                first,
                second,
            } => Some(Error::DuplicateWorkflowName {
                name,
                first,
                second,
            }),
            Error::MissingState {
                type_name,
                instance,
            } => Some(Error::MissingState {
                type_name,
                instance: instance.clone(),
            }),
            Error::InvalidArgument { argument, reason } => Some(Error::InvalidArgument {
                argument,
                reason: reason.clone(),
            }),
            other => Detail::of(other).map(Detail::into_error),
        }
    }
}
