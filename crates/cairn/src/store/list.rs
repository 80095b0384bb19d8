//! Listing workflows and their steps: the reads behind DBOS's `list_workflows`,
//! `list_queued_workflows` and `list_workflow_steps`.
//!
//! Both backends assemble the listing statement from the filters present (each one a
//! condition on `workflow_status`, every value a bound parameter), so an absent filter costs
//! nothing and the planner sees plain conditions it can match to the schema's indexes
//! (`created_at` for the order, the partial status indexes, the primary key for ids and
//! prefixes).

use super::{Checkpoint, Operation, WorkflowRow};

/// An inclusive range of epoch milliseconds; `None` leaves that side open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MsRange {
    pub min: Option<i64>,
    pub max: Option<i64>,
}

/// The workflows matching every filter given, ordered by `created_at`, as DBOS lists them.
/// A list-valued filter matches any of its values; an empty list is no filter (except
/// `workflow_ids`, see there).
#[derive(Debug, Clone, Default)]
pub(crate) struct ListWorkflows {
    /// `Some(ids)`: only these ids (`Some` of an empty list matches nothing).
    pub workflow_ids: Option<Vec<String>>,
    /// Ids starting with any of these (case-sensitive, no wildcards).
    pub id_prefixes: Vec<String>,
    /// Status strings.
    pub statuses: Vec<String>,
    pub names: Vec<String>,
    pub queue_names: Vec<String>,
    /// Only rows with a queue (`queue_name IS NOT NULL`).
    pub queued_only: bool,
    pub app_versions: Vec<String>,
    pub executor_ids: Vec<String>,
    pub parent_workflow_ids: Vec<String>,
    pub forked_from: Vec<String>,
    pub users: Vec<String>,
    pub schedule_names: Vec<String>,
    /// Rows of these applications and unclaimed rows (NULL); empty: every row.
    pub application_names: Vec<String>,
    pub created: MsRange,
    pub updated: MsRange,
    pub completed: MsRange,
    /// On `started_at_epoch_ms` (when a queued workflow was dequeued).
    pub dequeued: MsRange,
    /// Every key present with a value that contains the given one (Postgres JSONB `@>`).
    pub attributes: Vec<(String, serde_json::Value)>,
    pub was_forked_from: Option<bool>,
    pub is_fork: Option<bool>,
    pub has_parent: Option<bool>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
    pub newest_first: bool,
    /// Join `workflow_input` (else `inputs` is `None`).
    pub load_input: bool,
    /// Join `workflow_output` (else `output` and `error` are `None`).
    pub load_output: bool,
}

impl ListWorkflows {
    /// Whether the answer is empty without asking the database (an empty id list).
    pub(crate) fn matches_nothing(&self) -> bool {
        self.workflow_ids.as_ref().is_some_and(Vec::is_empty)
    }

    /// The attributes filter as one JSON object (for containment).
    #[cfg(feature = "postgres")]
    pub(crate) fn attributes_object(&self) -> serde_json::Value {
        serde_json::Value::Object(self.attributes.iter().cloned().collect())
    }
}

impl Operation for ListWorkflows {
    type Output = Vec<WorkflowRow>;
    fn describe(&self) -> String {
        "listing workflows".to_owned()
    }
}

/// A page of a workflow's recorded operations, in `function_id` order.
#[derive(Debug, Clone)]
pub(crate) struct ListSteps {
    pub workflow_id: String,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
    /// Read `output` and `error` (else both are `None`).
    pub load_output: bool,
}

impl Operation for ListSteps {
    type Output = Vec<Checkpoint>;
    fn describe(&self) -> String {
        format!("listing the steps of workflow {}", self.workflow_id)
    }
}

/// `text` with the wildcards of SQL `LIKE` (`%`, `_`) and its escape (`\`) escaped, followed
/// by `%`: a pattern matching the strings that start with `text`.
#[cfg(feature = "postgres")]
pub(crate) fn like_prefix(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// `text` with the wildcards of SQLite's `GLOB` (`*`, `?`, `[`) bracketed, followed by `*`:
/// a case-sensitive pattern matching the strings that start with `text` (and one SQLite can
/// answer from an index on the column).
#[cfg(feature = "sqlite")]
pub(crate) fn glob_prefix(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        match c {
            '*' | '?' | '[' => {
                pattern.push('[');
                pattern.push(c);
                pattern.push(']');
            }
            _ => pattern.push(c),
        }
    }
    pattern.push('*');
    pattern
}
