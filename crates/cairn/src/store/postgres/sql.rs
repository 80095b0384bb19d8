//! How statements are declared and cached, and the pieces several operations share.
//!
//! An operation's statements sit next to its [`OnPostgres`](super::OnPostgres) impl as
//! `static` [`Sql`] items. Their text names the schema, so each store builds it once, on first
//! use, from the schema's quoted identifier ([`Statements::text`]); after that a statement
//! costs a map lookup, and deadpool's `prepare_cached` prepares it once per connection.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A statement: a function from the schema's quoted identifier (`"dbos"`) to its text.
/// Declare it as a `static`: its address is its key in the per-store cache.
pub(super) struct Sql(pub(super) fn(&str) -> String);

/// The statement texts of one store, built on first use.
pub(super) struct Statements {
    /// The schema's quoted identifier, which every statement names.
    schema: String,
    /// Texts built so far, by the address of their [`Sql`].
    texts: RwLock<HashMap<usize, Arc<str>>>,
}

impl Statements {
    /// An empty cache for the schema whose quoted identifier is `schema`.
    pub(super) fn new(schema: String) -> Self {
        Self {
            schema,
            texts: RwLock::new(HashMap::new()),
        }
    }

    /// The schema's quoted identifier, for a statement assembled at run time (a listing
    /// whose filters vary); its values are still bound parameters.
    pub(super) fn schema(&self) -> &str {
        &self.schema
    }

    /// A statement's text for this schema, built on first use.
    pub(super) fn text(&self, sql: &'static Sql) -> Arc<str> {
        let key = std::ptr::from_ref(sql) as usize;
        let cached = self
            .texts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(text) = cached {
            return text;
        }
        let text: Arc<str> = (sql.0)(&self.schema).into();
        let mut texts = self.texts.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(texts.entry(key).or_insert(text))
    }
}

/// The status-row columns of a [`WorkflowRow`](crate::store::WorkflowRow), in its field
/// order, up to `serialization`.
macro_rules! status_columns {
    () => {
        "s.workflow_uuid, s.status, s.name, s.class_name, s.config_name, s.queue_name, \
         s.executor_id, s.application_version, s.application_name, s.created_at, s.updated_at, \
         s.started_at_epoch_ms, s.completed_at, s.recovery_attempts, s.workflow_timeout_ms, \
         s.workflow_deadline_epoch_ms, s.parent_workflow_id, s.owner_xid, s.deduplication_id, \
         s.priority, s.queue_partition_key, s.forked_from, s.was_forked_from, s.attributes::text, \
         s.delay_until_epoch_ms, s.authenticated_user, s.assumed_role, s.authenticated_roles, \
         s.schedule_name, s.serialization"
    };
}

/// The columns of a [`WorkflowRow`](crate::store::WorkflowRow), in its field order; `s` is the
/// status row, `i` the input row and `o` the output row.
pub(super) const WORKFLOW_COLUMNS: &str =
    concat!(status_columns!(), ", i.inputs, o.output, o.error");

/// [`WORKFLOW_COLUMNS`] up to the joined payloads (inputs, output, error), for a statement
/// that selects those three itself (or NULLs in their place).
pub(super) const STATUS_COLUMNS: &str = status_columns!();

/// The columns of a [`Checkpoint`](crate::store::Checkpoint), in its field order.
pub(super) const CHECKPOINT_COLUMNS: &str = "function_id, function_name, output, error, child_workflow_id, serialization, \
     started_at_epoch_ms, completed_at_epoch_ms";

/// The columns of a new status row, in the order of `workflow_params`' `$1`…`$15`, then
/// `serialization` and `priority`, then `$17` and `$18`.
pub(super) const NEW_STATUS_COLUMNS: &str = "workflow_uuid, status, name, queue_name, executor_id, application_version, \
     application_name, created_at, updated_at, recovery_attempts, workflow_timeout_ms, \
     workflow_deadline_epoch_ms, parent_workflow_id, creator_xid, owner_xid, \
     started_at_epoch_ms, serialization, priority, config_name, attributes";

/// The ownership-guarded checkpoint insert (`$1` workflow, `$2` owner, `$3` function id, `$4`
/// name, `$6` error, `$7` child, `$8` started, `$9` completed, `$10` application name; see
/// `step_params`), with `output` as the output expression (`$5::text` for a plain step).
/// Inserts nothing when the workflow is not `PENDING` under this owner or the checkpoint
/// exists.
pub(super) fn checkpoint_insert(q: &str, output: &str) -> String {
    checkpoint_insert_if(q, output, OWNER_GUARD)
}

/// Who may write a checkpoint: its owner, while the workflow is `PENDING`.
const OWNER_GUARD: &str = "status = 'PENDING' AND owner_xid = $2::text";

/// Who may write a step's checkpoint: its owner while the workflow is `PENDING`, or a step
/// that began (`$8`, its start) before its workflow was cancelled (`updated_at`, the cancel's
/// time, with the owner cleared): its body ran, so its outcome is kept and a resume does not
/// run it again. A step that begins after the cancel is refused.
pub(super) const STEP_GUARD: &str = "(status = 'PENDING' AND owner_xid = $2::text \
     OR status = 'CANCELLED' AND owner_xid IS NULL AND updated_at >= $8::int8)";

/// [`checkpoint_insert`] under another guard on the workflow's row.
pub(super) fn checkpoint_insert_if(q: &str, output: &str, guard: &str) -> String {
    format!(
        "INSERT INTO {q}.operation_outputs (workflow_uuid, function_id, function_name, output, error, \
             child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms, serialization, \
             application_name, retention_timestamp) \
         SELECT $1::text, $3::int4, $4::text, {output}, $6::text, $7::text, $8::int8, $9::int8, \
             'portable_json', $10::text, $9::int8 \
         WHERE EXISTS (SELECT 1 FROM {q}.workflow_status \
             WHERE workflow_uuid = $1::text AND {guard} FOR SHARE) \
         ON CONFLICT (workflow_uuid, function_id) DO NOTHING"
    )
}

/// `$1` workflow, `$2` owner, `$3` function id: why a checkpoint was not written, as one row
/// `(status, owned, checkpoint columns…)` followed by `extra_cols` (from `extra_join`).
pub(super) fn state(q: &str, extra_cols: &str, extra_join: &str) -> String {
    format!(
        "SELECT s.status, (s.status = 'PENDING' AND s.owner_xid = $2::text), \
             c.function_id, c.function_name, c.output, c.error, c.child_workflow_id, \
             c.serialization, c.started_at_epoch_ms, c.completed_at_epoch_ms{extra_cols} \
         FROM (SELECT 1) AS one \
         LEFT JOIN {q}.workflow_status s ON s.workflow_uuid = $1::text \
         LEFT JOIN {q}.operation_outputs c ON c.workflow_uuid = $1::text AND c.function_id = $3::int4\
         {extra_join}"
    )
}

/// See [`state`].
pub(super) static STEP_STATE: Sql = Sql(|q| state(q, "", ""));

/// `$1` workflow: its checkpoints in `function_id` order.
pub(super) static LIST_CHECKPOINTS: Sql = Sql(|q| {
    format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM {q}.operation_outputs WHERE workflow_uuid = $1 ORDER BY function_id"
    )
});

/// `$1` workflow ids (text[]): `(workflow_uuid, checkpoint columns…)`.
pub(super) static CHECKPOINTS_OF: Sql = Sql(|q| {
    format!(
        "SELECT workflow_uuid, {CHECKPOINT_COLUMNS} FROM {q}.operation_outputs \
         WHERE workflow_uuid = ANY($1::text[]) ORDER BY workflow_uuid, function_id"
    )
});

/// The joins that complete a status row `s` into a [`WORKFLOW_COLUMNS`] row.
pub(super) fn workflow_joins(q: &str) -> String {
    format!(
        "LEFT JOIN {q}.workflow_input i ON i.workflow_uuid = s.workflow_uuid \
         LEFT JOIN {q}.workflow_output o ON o.workflow_uuid = s.workflow_uuid"
    )
}
