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
}

/// Shows the message only, so a replayed error reads exactly as the original did.
impl fmt::Display for PortableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PortableError {}

/// Everything that can go wrong in Cairn.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A workflow or step failed with an application error (recorded, or replayed from the record).
    #[error("{0}")]
    Application(PortableError),

    /// The system database refused or failed an operation.
    #[error("system database error while {context}: {source}")]
    Database {
        /// What Cairn was doing.
        context: String,
        /// The driver's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The configuration is unusable (a malformed URL, an unknown `sslmode`, …).
    #[error("invalid configuration: {0}")]
    Config(String),

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
}

impl Error {
    pub(crate) fn database(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Database {
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// This error in DBOS's portable form, as it is recorded when it ends a workflow or step.
    pub fn to_portable(&self) -> PortableError {
        match self {
            Error::Application(e) => e.clone(),
            other => PortableError::new(other.kind_name(), other.to_string()),
        }
    }

    /// The portable `name` for Cairn's own errors.
    fn kind_name(&self) -> &'static str {
        match self {
            Error::Application(_) => "Error",
            Error::Database { .. } => "DatabaseError",
            Error::Config(_) => "ConfigError",
            Error::SchemaVersion { .. } => "SchemaVersionError",
            Error::Decode { .. } => "DecodeError",
            Error::Serialize { .. } => "SerializeError",
            Error::NonDeterminism { .. } => "DBOSUnexpectedStepError",
            Error::NotFound(_) => "DBOSNonExistentWorkflowError",
            Error::NotRegistered(_) => "DBOSWorkflowFunctionNotFoundError",
            Error::ConflictingWorkflow { .. } => "DBOSConflictingWorkflowError",
            Error::Cancelled(_) => "DBOSWorkflowCancelledError",
            Error::TimedOut(_) => "DBOSAwaitedWorkflowCancelledError",
            Error::StepRetriesExhausted { .. } => "DBOSMaxStepRetriesExceeded",
            Error::StepTimedOut { .. } => "StepTimeoutError",
            Error::MaxRecoveryAttemptsExceeded { .. } => "MaxRecoveryAttemptsExceededError",
            Error::OwnershipLost(_) => "DBOSWorkflowConflictIDError",
            Error::Shutdown => "ShutdownError",
            Error::NotInWorkflow(_) => "NotInWorkflowError",
            Error::InvalidArgument { .. } => "InvalidArgumentError",
        }
    }

    /// Whether this error stops an execution without being recorded as the workflow's outcome
    /// (the workflow's fate is decided elsewhere: cancelled, taken over, or left for recovery).
    pub(crate) fn is_interruption(&self) -> bool {
        matches!(
            self,
            Error::Cancelled(_) | Error::OwnershipLost(_) | Error::Shutdown
        )
    }
}
