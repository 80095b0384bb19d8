//! What a workflow looks like from outside: its status row.

mod list;

pub use list::{ListStepsOptions, ListWorkflowsOptions, SortOrder};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{PortableError, Result};
use crate::serialization;
use crate::store::WorkflowRow;

/// The lifecycle state of a workflow (`workflow_status.status`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(from = "String", into = "String")]
#[non_exhaustive]
pub enum WorkflowState {
    /// Running, or waiting to be recovered.
    Pending,
    /// Waiting in a queue.
    Enqueued,
    /// Waiting in a queue until a delay passes.
    Delayed,
    /// Finished with an output.
    Success,
    /// Finished with an error.
    Error,
    /// Cancelled.
    Cancelled,
    /// Dead-lettered after too many recovery attempts.
    MaxRecoveryAttemptsExceeded,
    /// A status string Cairn does not know (written by a newer DBOS).
    Other(String),
}

impl WorkflowState {
    /// Parse a stored status string.
    pub fn parse(text: &str) -> Self {
        match text {
            "PENDING" => Self::Pending,
            "ENQUEUED" => Self::Enqueued,
            "DELAYED" => Self::Delayed,
            "SUCCESS" => Self::Success,
            "ERROR" => Self::Error,
            "CANCELLED" => Self::Cancelled,
            "MAX_RECOVERY_ATTEMPTS_EXCEEDED" => Self::MaxRecoveryAttemptsExceeded,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The stored status string.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Pending => "PENDING",
            Self::Enqueued => "ENQUEUED",
            Self::Delayed => "DELAYED",
            Self::Success => "SUCCESS",
            Self::Error => "ERROR",
            Self::Cancelled => "CANCELLED",
            Self::MaxRecoveryAttemptsExceeded => "MAX_RECOVERY_ATTEMPTS_EXCEEDED",
            Self::Other(other) => other,
        }
    }

    /// Whether the workflow has finished (successfully or not) and will not run again by itself.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Success | Self::Error | Self::Cancelled | Self::MaxRecoveryAttemptsExceeded
        )
    }
}

impl From<String> for WorkflowState {
    fn from(text: String) -> Self {
        Self::parse(&text)
    }
}

impl From<WorkflowState> for String {
    fn from(state: WorkflowState) -> Self {
        state.as_str().to_owned()
    }
}

impl std::fmt::Display for WorkflowState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A workflow's status row, as DBOS tools show it. Stored values are kept as raw text and
/// decoded on request, so a row written in a format Cairn cannot read is still listed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct WorkflowStatus {
    /// The workflow's id.
    pub workflow_id: String,
    /// Its state.
    pub state: WorkflowState,
    /// The workflow function's name.
    pub name: String,
    /// The queue it was enqueued on, if any.
    pub queue_name: Option<String>,
    /// The executor that runs (or ran) it.
    pub executor_id: Option<String>,
    /// The application version it runs under.
    pub app_version: Option<String>,
    /// The application that owns it (`None`: unclaimed).
    pub application_name: Option<String>,
    /// Creation time, epoch milliseconds.
    pub created_at_ms: i64,
    /// Last update, epoch milliseconds.
    pub updated_at_ms: i64,
    /// When execution started (for a queued workflow: when it was dequeued), epoch milliseconds.
    pub started_at_ms: Option<i64>,
    /// When it finished, epoch milliseconds.
    pub completed_at_ms: Option<i64>,
    /// How many times it was dispatched (1 for a first run; recoveries add one each).
    pub recovery_attempts: i64,
    /// The parent workflow, for a child.
    pub parent_workflow_id: Option<String>,
    /// The configured instance it runs as ([`StartOptions::with_instance`](crate::StartOptions::with_instance);
    /// DBOS's `config_name`), if any.
    pub instance: Option<String>,
    /// The value format of its stored inputs and outputs (`portable_json` for Cairn's).
    pub serialization: Option<String>,
    /// The workflow's timeout (start to finish), milliseconds, if it has one.
    pub timeout_ms: Option<i64>,
    /// When the timeout runs out, epoch milliseconds (set when the workflow starts running;
    /// a child inherits its parent's).
    pub deadline_ms: Option<i64>,
    /// Its deduplication id on its queue, while it is queued or running.
    pub deduplication_id: Option<String>,
    /// Its priority on its queue (lower runs first; 0, the default, is the highest).
    pub priority: i32,
    /// Its partition of a partitioned queue, if any.
    pub queue_partition_key: Option<String>,
    /// The workflow it was forked from, for a fork.
    pub forked_from: Option<String>,
    /// Whether another workflow was forked from this one.
    pub was_forked_from: bool,
    /// Its key/value attributes, searchable with [`ListWorkflowsOptions::attribute`](crate::ListWorkflowsOptions::attribute).
    /// A stored value that is not JSON is shown as a JSON string holding its text.
    pub attributes: Option<Value>,
    /// For a `DELAYED` workflow: when it becomes `ENQUEUED`, epoch milliseconds.
    pub delay_until_ms: Option<i64>,
    /// The user who started it, if the starter said (DBOS's `authenticated_user`).
    pub authenticated_user: Option<String>,
    /// The role it runs with, if any.
    pub assumed_role: Option<String>,
    /// Every role the user could assume (empty if none were recorded).
    pub authenticated_roles: Vec<String>,
    /// The schedule that started it, for a scheduled workflow.
    pub schedule_name: Option<String>,
    /// The class of the workflow function (DBOS Python's class-based workflows), if any.
    pub class_name: Option<String>,
    /// The stored inputs, raw (`None` when listed without inputs).
    pub raw_input: Option<String>,
    /// The stored output, raw (`None` when listed without outputs).
    pub raw_output: Option<String>,
    /// The stored error, raw (`None` when listed without outputs).
    pub raw_error: Option<String>,
}

impl WorkflowStatus {
    pub(crate) fn from_row(row: WorkflowRow) -> Self {
        Self {
            state: row
                .status
                .unwrap_or_else(|| WorkflowState::Other(String::new())),
            name: row.name.unwrap_or_default(),
            workflow_id: row.workflow_id,
            queue_name: row.queue_name,
            executor_id: row.executor_id,
            app_version: row.application_version,
            application_name: row.application_name,
            created_at_ms: row.created_at,
            updated_at_ms: row.updated_at,
            started_at_ms: row.started_at_epoch_ms,
            completed_at_ms: row.completed_at,
            recovery_attempts: row.recovery_attempts.unwrap_or(0),
            parent_workflow_id: row.parent_workflow_id,
            instance: row.config_name,
            timeout_ms: row.workflow_timeout_ms,
            deadline_ms: row.workflow_deadline_epoch_ms,
            deduplication_id: row.deduplication_id,
            priority: row.priority,
            queue_partition_key: row.queue_partition_key,
            forked_from: row.forked_from,
            was_forked_from: row.was_forked_from,
            attributes: row
                .attributes
                .map(|text| serde_json::from_str(&text).unwrap_or(Value::String(text))),
            delay_until_ms: row.delay_until_epoch_ms,
            authenticated_user: row.authenticated_user,
            assumed_role: row.assumed_role,
            authenticated_roles: row
                .authenticated_roles
                .map(|text| roles(&text))
                .unwrap_or_default(),
            schedule_name: row.schedule_name,
            class_name: row.class_name,
            serialization: row.serialization,
            raw_input: row.inputs,
            raw_output: row.output,
            raw_error: row.error,
        }
    }

    /// The positional arguments the workflow was started with.
    pub fn input(&self) -> Result<Vec<Value>> {
        serialization::decode_inputs(
            self.raw_input.as_deref(),
            self.serialization.as_deref(),
            &self.workflow_id,
        )
    }

    /// The output, decoded as `T` (`None` until the workflow succeeds).
    pub fn output<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        self.raw_output
            .as_deref()
            .map(|text| {
                serialization::decode(
                    text,
                    self.serialization.as_deref(),
                    &self.workflow_id,
                    "workflow_output.output",
                )
            })
            .transpose()
    }

    /// The error, if the workflow failed.
    pub fn error(&self) -> Result<Option<PortableError>> {
        self.raw_error
            .as_deref()
            .map(|text| {
                serialization::decode_error(
                    text,
                    self.serialization.as_deref(),
                    &self.workflow_id,
                    "workflow_output.error",
                )
            })
            .transpose()
    }
}

/// The roles stored in `authenticated_roles` (a JSON list of strings, as DBOS writes it). A
/// value in another shape is kept whole as one role, so nothing stored is hidden.
fn roles(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|_| vec![text.to_owned()])
}

/// One recorded operation of a workflow (a step, a child start, a durable wait…).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct StepInfo {
    /// The operation id within its workflow (the first is 1).
    pub function_id: i32,
    /// The step's name, or an internal name such as `DBOS.getResult`.
    pub name: String,
    /// The recorded output, raw.
    pub raw_output: Option<String>,
    /// The recorded error, raw.
    pub raw_error: Option<String>,
    /// The child workflow this operation started or waited on.
    pub child_workflow_id: Option<String>,
    /// When the operation started, epoch milliseconds.
    pub started_at_ms: Option<i64>,
    /// When its outcome was recorded, epoch milliseconds.
    pub completed_at_ms: Option<i64>,
}

impl StepInfo {
    pub(crate) fn from_checkpoint(checkpoint: crate::store::Checkpoint) -> Self {
        Self {
            function_id: checkpoint.function_id,
            name: checkpoint.function_name,
            raw_output: checkpoint.output,
            raw_error: checkpoint.error,
            child_workflow_id: checkpoint.child_workflow_id,
            started_at_ms: checkpoint.started_at_epoch_ms,
            completed_at_ms: checkpoint.completed_at_epoch_ms,
        }
    }
}
