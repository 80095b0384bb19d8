//! The statements, built once per schema name. Each is one round trip.

/// The columns of a [`WorkflowRow`](crate::store::WorkflowRow), in its field order; `s` is the
/// status row, `i` the input row and `o` the output row.
const WORKFLOW_COLUMNS: &str = "s.workflow_uuid, s.status, s.name, s.class_name, s.config_name, s.queue_name, \
     s.executor_id, s.application_version, s.application_name, s.created_at, s.updated_at, \
     s.started_at_epoch_ms, s.completed_at, s.recovery_attempts, s.workflow_timeout_ms, \
     s.workflow_deadline_epoch_ms, s.parent_workflow_id, s.owner_xid, s.serialization, \
     i.inputs, o.output, o.error";

/// The columns of a [`Checkpoint`](crate::store::Checkpoint), in its field order.
const CHECKPOINT_COLUMNS: &str = "function_id, function_name, output, error, child_workflow_id, serialization, \
     started_at_epoch_ms, completed_at_epoch_ms";

/// Every statement the store runs, with the schema name substituted.
#[derive(Debug)]
pub(super) struct Statements {
    /// `$1` id … `$16` inputs (see `insert_workflow`): inserts status and input, or reads the
    /// existing row's name and status. Rows: `(inserted bool, name, status)`.
    pub insert_workflow: String,
    /// `$1` workflow, `$2` owner, `$3` function id … `$10` application name. One row when written.
    pub record_step: String,
    /// `record_step` for many rows: ten arrays in the same order; returns the
    /// `(workflow_uuid, function_id)`s written.
    pub record_steps: String,
    /// `$1` workflow, `$2` owner, `$3` function id: `(status, owned, checkpoint columns…)`.
    pub step_state: String,
    /// `record_step`'s parameters then the child's `$11`…`$26`: the parent's checkpoint, and the
    /// child's rows only if that checkpoint was written. Row: `(recorded, inserted, name, status)`.
    pub insert_child: String,
    /// `step_state` plus `$4` child id: `(…, child name, child status)`.
    pub child_state: String,
    /// `$1` workflow: the workflow's name and status.
    pub workflow_name_status: String,
    /// `$1` workflow, `$2` function id.
    pub get_checkpoint: String,
    /// `$1` workflow.
    pub list_checkpoints: String,
    /// `$1` workflow ids (text[]): `(workflow_uuid, checkpoint columns…)`.
    pub checkpoints_of: String,
    /// `$1` workflow, `$2` owner, `$3` status, `$4` output, `$5` error, `$6` now: one row, the
    /// number of status rows updated.
    pub complete_workflow: String,
    /// `$1` workflow.
    pub get_workflow: String,
    /// `$1` executor, `$2` version, `$3` application name or NULL, `$4` new owner, `$5` now.
    pub reclaim_pending: String,
    /// `$1` workflow, `$2` owner, `$3` now.
    pub dead_letter: String,
    /// `$1` version, `$2` now, `$3` application name.
    pub register_app_version: String,
}

impl Statements {
    /// The statements for a schema; `q` is its quoted identifier.
    pub(super) fn new(q: &str) -> Self {
        let new_status_columns = "workflow_uuid, status, name, queue_name, executor_id, application_version, \
             application_name, created_at, updated_at, recovery_attempts, workflow_timeout_ms, \
             workflow_deadline_epoch_ms, parent_workflow_id, creator_xid, owner_xid, \
             started_at_epoch_ms, serialization, priority";
        let checkpoint_insert = format!(
            "INSERT INTO {q}.operation_outputs (workflow_uuid, function_id, function_name, output, error, \
                 child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms, serialization, \
                 application_name, retention_timestamp) \
             SELECT $1::text, $3::int4, $4::text, $5::text, $6::text, $7::text, $8::int8, $9::int8, \
                 'portable_json', $10::text, $9::int8 \
             WHERE EXISTS (SELECT 1 FROM {q}.workflow_status \
                 WHERE workflow_uuid = $1::text AND status = 'PENDING' AND owner_xid = $2::text FOR SHARE) \
             ON CONFLICT (workflow_uuid, function_id) DO NOTHING"
        );
        let state = |extra_cols: &str, extra_join: &str| {
            format!(
                "SELECT s.status, (s.status = 'PENDING' AND s.owner_xid = $2::text), \
                     c.function_id, c.function_name, c.output, c.error, c.child_workflow_id, \
                     c.serialization, c.started_at_epoch_ms, c.completed_at_epoch_ms{extra_cols} \
                 FROM (SELECT 1) AS one \
                 LEFT JOIN {q}.workflow_status s ON s.workflow_uuid = $1::text \
                 LEFT JOIN {q}.operation_outputs c ON c.workflow_uuid = $1::text AND c.function_id = $3::int4\
                 {extra_join}"
            )
        };
        Self {
            insert_workflow: format!(
                "WITH ins AS ( \
                     INSERT INTO {q}.workflow_status ({new_status_columns}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11, $12, $13, $14, $15, \
                         'portable_json', 0) \
                     ON CONFLICT (workflow_uuid) DO NOTHING \
                     RETURNING workflow_uuid), \
                 inp AS ( \
                     INSERT INTO {q}.workflow_input (workflow_uuid, inputs, retention_timestamp) \
                     SELECT workflow_uuid, $16::text, $8::int8 FROM ins \
                     ON CONFLICT (workflow_uuid) DO NOTHING) \
                 SELECT true, NULL::text, NULL::text FROM ins \
                 UNION ALL \
                 SELECT false, name, status FROM {q}.workflow_status \
                 WHERE workflow_uuid = $1 AND NOT EXISTS (SELECT 1 FROM ins)"
            ),
            record_step: format!("{checkpoint_insert} RETURNING 1"),
            record_steps: format!(
                "WITH input AS ( \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], \
                         $6::text[], $7::text[], $8::int8[], $9::int8[], $10::text[]) \
                     AS t(workflow_uuid, owner_xid, function_id, function_name, output, error, \
                         child_workflow_id, started_at, completed_at, application_name)), \
                 owned AS ( \
                     SELECT i.* FROM input i JOIN {q}.workflow_status s ON s.workflow_uuid = i.workflow_uuid \
                     WHERE s.status = 'PENDING' AND s.owner_xid = i.owner_xid \
                     FOR SHARE OF s) \
                 INSERT INTO {q}.operation_outputs (workflow_uuid, function_id, function_name, output, error, \
                     child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms, serialization, \
                     application_name, retention_timestamp) \
                 SELECT workflow_uuid, function_id, function_name, output, error, child_workflow_id, \
                     started_at, completed_at, 'portable_json', application_name, completed_at FROM owned \
                 ON CONFLICT (workflow_uuid, function_id) DO NOTHING \
                 RETURNING workflow_uuid, function_id"
            ),
            step_state: state("", ""),
            insert_child: format!(
                "WITH cp AS ({checkpoint_insert} RETURNING 1), \
                 ins AS ( \
                     INSERT INTO {q}.workflow_status ({new_status_columns}) \
                     SELECT $11::text, $12::text, $13::text, $14::text, $15::text, $16::text, $17::text, \
                         $18::int8, $18::int8, $19::int8, $20::int8, $21::int8, $22::text, $23::text, \
                         $24::text, $25::int8, 'portable_json', 0 \
                     FROM cp \
                     ON CONFLICT (workflow_uuid) DO NOTHING \
                     RETURNING workflow_uuid), \
                 inp AS ( \
                     INSERT INTO {q}.workflow_input (workflow_uuid, inputs, retention_timestamp) \
                     SELECT workflow_uuid, $26::text, $18::int8 FROM ins \
                     ON CONFLICT (workflow_uuid) DO NOTHING) \
                 SELECT EXISTS (SELECT 1 FROM cp), EXISTS (SELECT 1 FROM ins), w.name, w.status \
                 FROM (SELECT 1) AS one \
                 LEFT JOIN {q}.workflow_status w ON w.workflow_uuid = $11::text"
            ),
            child_state: state(
                ", w.name, w.status",
                &format!(" LEFT JOIN {q}.workflow_status w ON w.workflow_uuid = $4::text"),
            ),
            workflow_name_status: format!(
                "SELECT name, status FROM {q}.workflow_status WHERE workflow_uuid = $1"
            ),
            get_checkpoint: format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM {q}.operation_outputs WHERE workflow_uuid = $1 AND function_id = $2"
            ),
            list_checkpoints: format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM {q}.operation_outputs WHERE workflow_uuid = $1 ORDER BY function_id"
            ),
            checkpoints_of: format!(
                "SELECT workflow_uuid, {CHECKPOINT_COLUMNS} FROM {q}.operation_outputs \
                 WHERE workflow_uuid = ANY($1::text[]) ORDER BY workflow_uuid, function_id"
            ),
            complete_workflow: format!(
                "WITH upd AS ( \
                     UPDATE {q}.workflow_status \
                     SET status = $3, owner_xid = NULL, deduplication_id = NULL, updated_at = $6, completed_at = $6 \
                     WHERE workflow_uuid = $1 AND status = 'PENDING' AND owner_xid = $2 \
                     RETURNING workflow_uuid), \
                 out AS ( \
                     INSERT INTO {q}.workflow_output (workflow_uuid, output, error, retention_timestamp) \
                     SELECT workflow_uuid, $4::text, $5::text, $6::int8 FROM upd \
                     ON CONFLICT (workflow_uuid) DO UPDATE SET output = EXCLUDED.output, \
                         error = EXCLUDED.error, retention_timestamp = EXCLUDED.retention_timestamp) \
                 SELECT count(*) FROM upd"
            ),
            get_workflow: format!(
                "SELECT {WORKFLOW_COLUMNS} FROM {q}.workflow_status s \
                 LEFT JOIN {q}.workflow_input i ON i.workflow_uuid = s.workflow_uuid \
                 LEFT JOIN {q}.workflow_output o ON o.workflow_uuid = s.workflow_uuid \
                 WHERE s.workflow_uuid = $1"
            ),
            reclaim_pending: format!(
                "WITH s AS ( \
                     UPDATE {q}.workflow_status \
                     SET owner_xid = $4, recovery_attempts = recovery_attempts + 1, updated_at = $5 \
                     WHERE status = 'PENDING' AND executor_id = $1 AND application_version = $2 \
                         AND ($3::text IS NULL OR application_name = $3::text OR application_name IS NULL) \
                     RETURNING *) \
                 SELECT {WORKFLOW_COLUMNS} FROM s \
                 LEFT JOIN {q}.workflow_input i ON i.workflow_uuid = s.workflow_uuid \
                 LEFT JOIN {q}.workflow_output o ON o.workflow_uuid = s.workflow_uuid \
                 ORDER BY s.created_at, s.workflow_uuid"
            ),
            dead_letter: format!(
                "UPDATE {q}.workflow_status \
                 SET status = 'MAX_RECOVERY_ATTEMPTS_EXCEEDED', owner_xid = NULL, deduplication_id = NULL, \
                     started_at_epoch_ms = NULL, queue_name = NULL, updated_at = $3, completed_at = $3 \
                 WHERE workflow_uuid = $1 AND status = 'PENDING' AND owner_xid = $2"
            ),
            register_app_version: format!(
                "INSERT INTO {q}.application_versions \
                     (version_id, version_name, version_timestamp, created_at, application_name) \
                 VALUES (gen_random_uuid()::text, $1, $2, $2, $3) ON CONFLICT DO NOTHING"
            ),
        }
    }
}
