//! Which workflows and steps to list: the options of [`Client::list_workflows`],
//! [`Client::list_queued_workflows`] and [`Client::list_workflow_steps`], with DBOS's filters.

use std::ops::{Bound, RangeBounds};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::WorkflowState;
use crate::store::{ListSteps, ListWorkflows, MsRange};
#[cfg(doc)]
use crate::{Client, WorkflowStatus};

/// The order workflows are listed in, by creation time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SortOrder {
    /// Oldest first (DBOS's default).
    #[default]
    OldestFirst,
    /// Newest first (what `dbos workflow list` shows).
    NewestFirst,
}

/// Which applications' workflows a listing sees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Applications {
    /// The caller's application (and unclaimed workflows), unless the listing names ids;
    /// every application for a client without an application name.
    #[default]
    Caller,
    /// Every application.
    Any,
    /// These applications, and unclaimed workflows.
    Named(Vec<String>),
}

/// Which workflows [`Client::list_workflows`] returns, in what order, and with what. Every
/// filter given must match (a filter given several values matches any of them); with none,
/// every workflow of the caller's application is listed, oldest first, with inputs and
/// outputs. The filters are DBOS's `list_workflows` parameters.
///
/// ```
/// use cairn::{ListWorkflowsOptions, SortOrder, WorkflowState};
///
/// let failed_checkouts = ListWorkflowsOptions::new()
///     .name("checkout")
///     .status(WorkflowState::Error)
///     .status(WorkflowState::MaxRecoveryAttemptsExceeded)
///     .order(SortOrder::NewestFirst)
///     .limit(50)
///     .load_input(false);
/// ```
#[derive(Debug, Clone)]
#[must_use = "options do nothing until passed to Client::list_workflows"]
pub struct ListWorkflowsOptions {
    workflow_ids: Option<Vec<String>>,
    id_prefixes: Vec<String>,
    statuses: Vec<String>,
    names: Vec<String>,
    queue_names: Vec<String>,
    app_versions: Vec<String>,
    executor_ids: Vec<String>,
    parent_workflow_ids: Vec<String>,
    forked_from: Vec<String>,
    users: Vec<String>,
    schedule_names: Vec<String>,
    applications: Applications,
    created: MsRange,
    updated: MsRange,
    completed: MsRange,
    dequeued: MsRange,
    attributes: Vec<(String, Value)>,
    was_forked_from: Option<bool>,
    is_fork: Option<bool>,
    has_parent: Option<bool>,
    limit: Option<i64>,
    offset: Option<i64>,
    order: SortOrder,
    load_input: bool,
    load_output: bool,
}

impl Default for ListWorkflowsOptions {
    fn default() -> Self {
        Self {
            workflow_ids: None,
            id_prefixes: Vec::new(),
            statuses: Vec::new(),
            names: Vec::new(),
            queue_names: Vec::new(),
            app_versions: Vec::new(),
            executor_ids: Vec::new(),
            parent_workflow_ids: Vec::new(),
            forked_from: Vec::new(),
            users: Vec::new(),
            schedule_names: Vec::new(),
            applications: Applications::Caller,
            created: MsRange::default(),
            updated: MsRange::default(),
            completed: MsRange::default(),
            dequeued: MsRange::default(),
            attributes: Vec::new(),
            was_forked_from: None,
            is_fork: None,
            has_parent: None,
            limit: None,
            offset: None,
            order: SortOrder::OldestFirst,
            load_input: true,
            load_output: true,
        }
    }
}

impl ListWorkflowsOptions {
    /// No filters: every workflow of the caller's application, oldest first.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only these workflow ids (added to any given before). An empty list matches nothing.
    /// Naming ids lifts the default scope to the caller's application (an id names one
    /// workflow wherever it belongs). Default: any id.
    pub fn workflow_ids<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.workflow_ids
            .get_or_insert_with(Vec::new)
            .extend(ids.into_iter().map(Into::into));
        self
    }

    /// Only ids starting with `prefix` (case-sensitive; `%`, `_` and `*` are plain
    /// characters). Several prefixes match any of them. Default: any id.
    pub fn workflow_id_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.id_prefixes.push(prefix.into());
        self
    }

    /// Only workflows in `state`; call it again to add states. Default: any state.
    pub fn status(mut self, state: WorkflowState) -> Self {
        self.statuses.push(state.as_str().to_owned());
        self
    }

    /// Only workflows in any of `states` (added to any given before). Default: any state.
    pub fn statuses(mut self, states: impl IntoIterator<Item = WorkflowState>) -> Self {
        self.statuses
            .extend(states.into_iter().map(|s| s.as_str().to_owned()));
        self
    }

    /// Only workflows of the function registered as `name`; call it again to add names.
    /// Default: any.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.names.push(name.into());
        self
    }

    /// Only workflows enqueued on `queue`; call it again to add queues. Default: any (and
    /// workflows on no queue).
    pub fn queue_name(mut self, queue: impl Into<String>) -> Self {
        self.queue_names.push(queue.into());
        self
    }

    /// Only workflows of application version `version`; call it again to add versions.
    /// Default: any.
    pub fn app_version(mut self, version: impl Into<String>) -> Self {
        self.app_versions.push(version.into());
        self
    }

    /// Only workflows run (last) by executor `executor_id`; call it again to add executors.
    /// Default: any.
    pub fn executor_id(mut self, executor_id: impl Into<String>) -> Self {
        self.executor_ids.push(executor_id.into());
        self
    }

    /// Only children of workflow `parent_id`; call it again to add parents. Default: any.
    pub fn parent_workflow_id(mut self, parent_id: impl Into<String>) -> Self {
        self.parent_workflow_ids.push(parent_id.into());
        self
    }

    /// Only forks of workflow `original_id`; call it again to add originals. Default: any.
    pub fn forked_from(mut self, original_id: impl Into<String>) -> Self {
        self.forked_from.push(original_id.into());
        self
    }

    /// Only workflows started by `user` (`authenticated_user`); call it again to add users.
    /// Default: any.
    pub fn authenticated_user(mut self, user: impl Into<String>) -> Self {
        self.users.push(user.into());
        self
    }

    /// Only workflows started by schedule `schedule`; call it again to add schedules.
    /// Default: any.
    pub fn schedule_name(mut self, schedule: impl Into<String>) -> Self {
        self.schedule_names.push(schedule.into());
        self
    }

    /// Only workflows of application `name` (and unclaimed ones, which any application may
    /// run); call it again to add applications. Default: the caller's application — a
    /// launched app's name, or a client's
    /// [`ClientOptions::application_name`](crate::ClientOptions::application_name) — and
    /// unclaimed workflows; every application for a client without a name, or when ids are
    /// given (as DBOS).
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        match &mut self.applications {
            Applications::Named(names) => names.push(name.into()),
            other => *other = Applications::Named(vec![name.into()]),
        }
        self
    }

    /// Workflows of every application, whatever the caller's. Default: see
    /// [`ListWorkflowsOptions::application_name`].
    pub fn any_application(mut self) -> Self {
        self.applications = Applications::Any;
        self
    }

    /// Only workflows created within `range` (`t0..t1`, `t0..=t1`, `t0..`, `..t1`).
    /// Default: any time.
    pub fn created_in(mut self, range: impl RangeBounds<DateTime<Utc>>) -> Self {
        self.created = ms_range(range);
        self
    }

    /// Only workflows whose status row was last updated within `range`. Default: any time.
    pub fn updated_in(mut self, range: impl RangeBounds<DateTime<Utc>>) -> Self {
        self.updated = ms_range(range);
        self
    }

    /// Only workflows that finished within `range` (unfinished ones never match). Default:
    /// any time.
    pub fn completed_in(mut self, range: impl RangeBounds<DateTime<Utc>>) -> Self {
        self.completed = ms_range(range);
        self
    }

    /// Only workflows that started running (a queued one: were dequeued) within `range`.
    /// Default: any time.
    pub fn dequeued_in(mut self, range: impl RangeBounds<DateTime<Utc>>) -> Self {
        self.dequeued = ms_range(range);
        self
    }

    /// Only workflows whose attributes hold `key` with `value` (call it again to require
    /// more keys). On Postgres the match is JSONB containment (`@>`, served by the schema's
    /// GIN index), so an object or array value matches one that contains it; on SQLite the
    /// value must be a scalar (string, number, boolean, null) and equal, and an object or
    /// array is [`Error::InvalidArgument`](crate::Error::InvalidArgument) (as DBOS, SQLite
    /// has no containment). Default: any attributes.
    pub fn attribute(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attributes.push((key.into(), value.into()));
        self
    }

    /// Only workflows that another was (`true`) or was not (`false`) forked from.
    /// Default: either.
    pub fn was_forked_from(mut self, forked: bool) -> Self {
        self.was_forked_from = Some(forked);
        self
    }

    /// Only forks (`true`) or only workflows that are not forks (`false`). Default: either.
    pub fn is_fork(mut self, fork: bool) -> Self {
        self.is_fork = Some(fork);
        self
    }

    /// Only children (`true`) or only top-level workflows (`false`). Default: either.
    pub fn has_parent(mut self, child: bool) -> Self {
        self.has_parent = Some(child);
        self
    }

    /// At most `n` workflows. Default: no limit.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(i64::try_from(n).unwrap_or(i64::MAX));
        self
    }

    /// Skip the first `n` matching workflows (with [`ListWorkflowsOptions::limit`], a page).
    /// Default: 0.
    pub fn offset(mut self, n: usize) -> Self {
        self.offset = Some(i64::try_from(n).unwrap_or(i64::MAX));
        self
    }

    /// The order, by creation time. Default: [`SortOrder::OldestFirst`] (as DBOS).
    pub fn order(mut self, order: SortOrder) -> Self {
        self.order = order;
        self
    }

    /// Whether to read each workflow's inputs ([`WorkflowStatus::raw_input`]); `false`
    /// skips the read of `workflow_input` altogether. Default: `true`.
    pub fn load_input(mut self, load: bool) -> Self {
        self.load_input = load;
        self
    }

    /// Whether to read each workflow's output and error ([`WorkflowStatus::raw_output`],
    /// [`WorkflowStatus::raw_error`]); `false` skips the read of `workflow_output`
    /// altogether. Default: `true`.
    pub fn load_output(mut self, load: bool) -> Self {
        self.load_output = load;
        self
    }

    /// Whether a status filter was given (a queued listing's default depends on it).
    pub(crate) fn has_status(&self) -> bool {
        !self.statuses.is_empty()
    }

    /// The store's listing for a caller of application `caller` (`""`: none), restricted to
    /// workflows on a queue when `queued_only`.
    pub(crate) fn into_op(self, caller: &str, queued_only: bool) -> ListWorkflows {
        let application_names = match self.applications {
            Applications::Caller if self.workflow_ids.is_none() && !caller.is_empty() => {
                vec![caller.to_owned()]
            }
            Applications::Caller | Applications::Any => Vec::new(),
            Applications::Named(names) => names,
        };
        ListWorkflows {
            workflow_ids: self.workflow_ids,
            id_prefixes: self.id_prefixes,
            statuses: self.statuses,
            names: self.names,
            queue_names: self.queue_names,
            queued_only,
            app_versions: self.app_versions,
            executor_ids: self.executor_ids,
            parent_workflow_ids: self.parent_workflow_ids,
            forked_from: self.forked_from,
            users: self.users,
            schedule_names: self.schedule_names,
            application_names,
            created: self.created,
            updated: self.updated,
            completed: self.completed,
            dequeued: self.dequeued,
            attributes: self.attributes,
            was_forked_from: self.was_forked_from,
            is_fork: self.is_fork,
            has_parent: self.has_parent,
            limit: self.limit,
            offset: self.offset,
            newest_first: self.order == SortOrder::NewestFirst,
            load_input: self.load_input,
            load_output: self.load_output,
        }
    }
}

/// A range of instants as inclusive epoch milliseconds (stored times are whole
/// milliseconds: a bound between two is rounded inwards).
fn ms_range(range: impl RangeBounds<DateTime<Utc>>) -> MsRange {
    let exact = |t: &DateTime<Utc>| t.timestamp_subsec_nanos().is_multiple_of(1_000_000);
    let min = match range.start_bound() {
        Bound::Included(t) if exact(t) => Some(t.timestamp_millis()),
        Bound::Included(t) | Bound::Excluded(t) => Some(t.timestamp_millis().saturating_add(1)),
        Bound::Unbounded => None,
    };
    let max = match range.end_bound() {
        Bound::Excluded(t) if exact(t) => Some(t.timestamp_millis().saturating_sub(1)),
        Bound::Included(t) | Bound::Excluded(t) => Some(t.timestamp_millis()),
        Bound::Unbounded => None,
    };
    MsRange { min, max }
}

/// Which of a workflow's recorded operations [`Client::list_workflow_steps`] returns, in
/// `function_id` order.
#[derive(Debug, Clone)]
#[must_use = "options do nothing until passed to Client::list_workflow_steps"]
pub struct ListStepsOptions {
    limit: Option<i64>,
    offset: Option<i64>,
    load_output: bool,
}

impl Default for ListStepsOptions {
    fn default() -> Self {
        Self {
            limit: None,
            offset: None,
            load_output: true,
        }
    }
}

impl ListStepsOptions {
    /// Every step, with outputs.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `n` steps. Default: no limit.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(i64::try_from(n).unwrap_or(i64::MAX));
        self
    }

    /// Skip the first `n` steps. Default: 0.
    pub fn offset(mut self, n: usize) -> Self {
        self.offset = Some(i64::try_from(n).unwrap_or(i64::MAX));
        self
    }

    /// Whether to read each step's output and error; `false` leaves
    /// [`StepInfo::raw_output`](crate::StepInfo::raw_output) and `raw_error` empty (for a
    /// workflow with large outputs). Default: `true`.
    pub fn load_output(mut self, load: bool) -> Self {
        self.load_output = load;
        self
    }

    /// The store's listing for workflow `workflow_id`.
    pub(crate) fn into_op(self, workflow_id: &str) -> ListSteps {
        ListSteps {
            workflow_id: workflow_id.to_owned(),
            limit: self.limit,
            offset: self.offset,
            load_output: self.load_output,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64, extra_nanos: u32) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).expect("in range")
            + chrono::Duration::nanoseconds(i64::from(extra_nanos))
    }

    /// Bounds become inclusive whole milliseconds, rounded inwards, whatever their kind.
    #[test]
    fn time_ranges_become_inclusive_milliseconds() {
        let cases = [
            (ms_range(at(10, 0)..at(20, 0)), (Some(10), Some(19))),
            (ms_range(at(10, 0)..=at(20, 0)), (Some(10), Some(20))),
            (ms_range(at(10, 500)..=at(20, 500)), (Some(11), Some(20))),
            (ms_range(at(10, 500)..at(20, 500)), (Some(11), Some(20))),
            (ms_range(at(10, 0)..), (Some(10), None)),
            (ms_range(..at(20, 0)), (None, Some(19))),
            (ms_range(..), (None, None)),
        ];
        for (range, (min, max)) in cases {
            assert_eq!((range.min, range.max), (min, max));
        }
        let exclusive_start = (Bound::Excluded(at(10, 0)), Bound::Unbounded);
        assert_eq!(ms_range(exclusive_start).min, Some(11));
    }

    /// Ids lift the default scope to the caller's application; an explicit one stays.
    #[test]
    fn the_default_scope_is_the_callers_application_unless_ids_are_named() {
        assert_eq!(
            ListWorkflowsOptions::new()
                .into_op("shop", false)
                .application_names,
            ["shop"]
        );
        assert!(
            ListWorkflowsOptions::new()
                .into_op("", false)
                .application_names
                .is_empty()
        );
        let by_id = ListWorkflowsOptions::new()
            .workflow_ids(["a"])
            .into_op("shop", false);
        assert!(by_id.application_names.is_empty());
        let named = ListWorkflowsOptions::new()
            .application_name("a")
            .application_name("b")
            .into_op("shop", false);
        assert_eq!(named.application_names, ["a", "b"]);
        let any = ListWorkflowsOptions::new()
            .any_application()
            .into_op("shop", false);
        assert!(any.application_names.is_empty());
    }
}
