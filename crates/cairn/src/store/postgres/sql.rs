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
    /// `$1` queue, `$2` names (text[]), `$3` application name or NULL, `$4` version,
    /// `$5` new owner, `$6` now, `$7` limit, `$8` executor.
    pub claim_enqueued: String,
    /// `$1` queue: whether anything waits on it (a read, before the locking claim).
    pub any_enqueued: String,
    /// `$1` workflow, `$2` owner, `$3` now.
    pub dead_letter: String,
    /// `$1` version, `$2` now, `$3` application name.
    pub register_app_version: String,
    /// Comms, events, streams, cancellation and resume (see [`CommStatements`]).
    pub comm: CommStatements,
}

impl Statements {
    /// The statements for a schema; `q` is its quoted identifier.
    pub(super) fn new(q: &str) -> Self {
        let new_status_columns = "workflow_uuid, status, name, queue_name, executor_id, application_version, \
             application_name, created_at, updated_at, recovery_attempts, workflow_timeout_ms, \
             workflow_deadline_epoch_ms, parent_workflow_id, creator_xid, owner_xid, \
             started_at_epoch_ms, serialization, priority";
        let checkpoint_insert = checkpoint_insert(q, "$5::text");
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
            any_enqueued: format!(
                "SELECT EXISTS (SELECT 1 FROM {q}.workflow_status \
                 WHERE status = 'ENQUEUED' AND queue_name = $1::text)"
            ),
            claim_enqueued: format!(
                "WITH picked AS ( \
                     SELECT workflow_uuid FROM {q}.workflow_status \
                     WHERE status = 'ENQUEUED' AND queue_name = $1::text AND name = ANY($2::text[]) \
                         AND ($3::text IS NULL OR application_name = $3::text OR application_name IS NULL) \
                         AND (application_version IS NULL OR application_version = $4::text) \
                     ORDER BY priority, created_at LIMIT $7::int8 \
                     FOR UPDATE SKIP LOCKED), \
                 s AS ( \
                     UPDATE {q}.workflow_status w SET status = 'PENDING', owner_xid = $5::text, \
                         executor_id = $8::text, application_version = $4::text, \
                         application_name = COALESCE($3::text, w.application_name), \
                         started_at_epoch_ms = $6::int8, recovery_attempts = w.recovery_attempts + 1, \
                         updated_at = $6::int8, \
                         workflow_deadline_epoch_ms = CASE \
                             WHEN w.workflow_timeout_ms IS NOT NULL AND w.workflow_deadline_epoch_ms IS NULL \
                             THEN $6::int8 + w.workflow_timeout_ms ELSE w.workflow_deadline_epoch_ms END \
                     FROM picked WHERE w.workflow_uuid = picked.workflow_uuid \
                     RETURNING w.*) \
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
            comm: CommStatements::new(q),
        }
    }
}

/// The ownership-guarded checkpoint insert of `record_step` (`$1` workflow, `$2` owner, `$3`
/// function id, `$4` name, `$6` error, `$7` child, `$8` started, `$9` completed, `$10`
/// application name), with `output` as the output expression (`$5::text` for `record_step`).
/// Inserts nothing when the workflow is not `PENDING` under this owner or the checkpoint exists.
fn checkpoint_insert(q: &str, output: &str) -> String {
    format!(
        "INSERT INTO {q}.operation_outputs (workflow_uuid, function_id, function_name, output, error, \
             child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms, serialization, \
             application_name, retention_timestamp) \
         SELECT $1::text, $3::int4, $4::text, {output}, $6::text, $7::text, $8::int8, $9::int8, \
             'portable_json', $10::text, $9::int8 \
         WHERE EXISTS (SELECT 1 FROM {q}.workflow_status \
             WHERE workflow_uuid = $1::text AND status = 'PENDING' AND owner_xid = $2::text FOR SHARE) \
         ON CONFLICT (workflow_uuid, function_id) DO NOTHING"
    )
}

/// The statements of messages, events, streams, cancellation and resume.
///
/// A statement that writes a checkpoint takes `record_step`'s ten parameters first (`$1`…`$10`,
/// see [`checkpoint_insert`]) and returns one row whose first column says whether the
/// checkpoint, and with it the effect, was written: the effect is inserted `FROM cp`, so it
/// lands only with the checkpoint, in the same autocommit statement.
#[derive(Debug)]
pub(super) struct CommStatements {
    /// `$1` destination, `$2` topic, `$3` message, `$4` message uuid.
    pub send: String,
    /// The sender's checkpoint, then the message `$11` destination, `$12` topic, `$13` message,
    /// `$14` message uuid. Row: `(recorded)`.
    pub send_step: String,
    /// The `DBOS.recv` checkpoint with `$5` the topic (not the output: the output is the
    /// message consumed, or `null`). Row: `(recorded, message consumed)`.
    pub consume: String,
    /// `$1` workflow, `$2` topic: one row, whether an unconsumed message is there.
    pub has_message: String,
    /// The checkpoint, then `$11` key, `$12` value; announces `workflow::key`. Row: `(recorded, _)`.
    pub set_event: String,
    /// `$1` workflow, `$2` key.
    pub get_event: String,
    /// `$1` workflow: `(key, value)` by key.
    pub list_events: String,
    /// `$1` workflow, `$2` key: the transaction-level lock serializing a stream's writers.
    pub stream_lock: String,
    /// The checkpoint, then `$11` key, `$12` value at the next offset; announces
    /// `workflow::key`. Run after `stream_lock` in the same transaction. Row: `(recorded, _)`.
    pub write_stream: String,
    /// `$1` workflow, `$2` key, `$3` first offset: `(offset, value)` by offset.
    pub read_stream: String,
    /// `$1` ids (text[]), `$2` now: the ids cancelled.
    pub cancel: String,
    /// `$1` workflow: every descendant's id.
    pub descendants: String,
    /// `$1` workflow, `$2` executor, `$3` version, `$4` new owner, `$5` now: the resumed row.
    pub resume: String,
}

impl CommStatements {
    /// The statements for a schema; `q` is its quoted identifier.
    fn new(q: &str) -> Self {
        let checkpoint = checkpoint_insert(q, "$5::text");
        let unfinished = "('PENDING', 'ENQUEUED', 'DELAYED')";
        Self {
            send: format!(
                "INSERT INTO {q}.notifications (destination_uuid, topic, message, message_uuid, serialization) \
                 VALUES ($1, $2, $3, $4, 'portable_json') ON CONFLICT (message_uuid) DO NOTHING"
            ),
            send_step: format!(
                "WITH cp AS ({checkpoint} RETURNING 1), \
                 msg AS ( \
                     INSERT INTO {q}.notifications (destination_uuid, topic, message, message_uuid, serialization) \
                     SELECT $11::text, $12::text, $13::text, $14::text, 'portable_json' FROM cp \
                     ON CONFLICT (message_uuid) DO NOTHING) \
                 SELECT EXISTS (SELECT 1 FROM cp)"
            ),
            consume: format!(
                "WITH m AS ( \
                     SELECT message_uuid, message, serialization FROM {q}.notifications \
                     WHERE destination_uuid = $1::text AND topic = $5::text AND NOT consumed \
                         AND EXISTS (SELECT 1 FROM {q}.workflow_status \
                             WHERE workflow_uuid = $1::text AND status = 'PENDING' AND owner_xid = $2::text) \
                     ORDER BY created_at_epoch_ms, ctid \
                     LIMIT 1 \
                     FOR UPDATE SKIP LOCKED), \
                 cp AS ({} RETURNING 1), \
                 upd AS ( \
                     UPDATE {q}.notifications n SET consumed = true, consumed_by_function_id = $3::int4 \
                     FROM m WHERE n.message_uuid = m.message_uuid AND EXISTS (SELECT 1 FROM cp) \
                     RETURNING n.message, n.serialization) \
                 SELECT EXISTS (SELECT 1 FROM cp), (SELECT message FROM upd), \
                     (SELECT serialization FROM upd)",
                // The checkpoint holds the message as stored, so it says the message's format.
                checkpoint_insert(q, "COALESCE((SELECT message FROM m), 'null')").replacen(
                    "'portable_json'",
                    "COALESCE((SELECT serialization FROM m), 'portable_json')",
                    1
                )
            ),
            has_message: format!(
                "SELECT EXISTS (SELECT 1 FROM {q}.notifications \
                     WHERE destination_uuid = $1 AND topic = $2 AND NOT consumed)"
            ),
            set_event: format!(
                "WITH cp AS ({checkpoint} RETURNING 1), \
                 ev AS ( \
                     INSERT INTO {q}.workflow_events (workflow_uuid, key, value, serialization) \
                     SELECT $1::text, $11::text, $12::text, 'portable_json' FROM cp \
                     ON CONFLICT (workflow_uuid, key) \
                     DO UPDATE SET value = EXCLUDED.value, serialization = EXCLUDED.serialization), \
                 hist AS ( \
                     INSERT INTO {q}.workflow_events_history (workflow_uuid, function_id, key, value, serialization) \
                     SELECT $1::text, $3::int4, $11::text, $12::text, 'portable_json' FROM cp \
                     ON CONFLICT (workflow_uuid, function_id, key) \
                     DO UPDATE SET value = EXCLUDED.value, serialization = EXCLUDED.serialization), \
                 n AS (SELECT pg_notify('dbos_workflow_events_channel', $1::text || '::' || $11::text) FROM cp) \
                 SELECT EXISTS (SELECT 1 FROM cp), (SELECT count(*) FROM n)"
            ),
            get_event: format!(
                "SELECT value, serialization FROM {q}.workflow_events WHERE workflow_uuid = $1 AND key = $2"
            ),
            list_events: format!(
                "SELECT key, value, serialization FROM {q}.workflow_events WHERE workflow_uuid = $1 ORDER BY key"
            ),
            stream_lock:
                "SELECT pg_advisory_xact_lock(hashtextextended($1::text || '::' || $2::text, 0))"
                    .to_owned(),
            write_stream: format!(
                "WITH cp AS ({checkpoint} RETURNING 1), \
                 st AS ( \
                     INSERT INTO {q}.streams (workflow_uuid, key, value, \"offset\", function_id, serialization) \
                     SELECT $1::text, $11::text, $12::text, \
                         (SELECT COALESCE(MAX(\"offset\") + 1, 0) FROM {q}.streams \
                          WHERE workflow_uuid = $1::text AND key = $11::text), \
                         $3::int4, 'portable_json' FROM cp \
                     RETURNING 1), \
                 n AS (SELECT pg_notify('dbos_streams_channel', $1::text || '::' || $11::text) FROM st) \
                 SELECT EXISTS (SELECT 1 FROM cp), (SELECT count(*) FROM n)"
            ),
            read_stream: format!(
                "SELECT \"offset\", value, serialization FROM {q}.streams \
                 WHERE workflow_uuid = $1 AND key = $2 AND \"offset\" >= $3 ORDER BY \"offset\""
            ),
            // The rows are locked in id order first, so two overlapping cancels cannot deadlock.
            cancel: format!(
                "UPDATE {q}.workflow_status \
                 SET status = 'CANCELLED', owner_xid = NULL, queue_name = NULL, deduplication_id = NULL, \
                     started_at_epoch_ms = NULL, updated_at = $2 \
                 WHERE workflow_uuid IN ( \
                         SELECT workflow_uuid FROM {q}.workflow_status \
                         WHERE workflow_uuid = ANY($1::text[]) AND status IN {unfinished} \
                         ORDER BY workflow_uuid FOR UPDATE) \
                     AND status IN {unfinished} \
                 RETURNING workflow_uuid"
            ),
            descendants: format!(
                "WITH RECURSIVE d(id) AS ( \
                     SELECT workflow_uuid FROM {q}.workflow_status WHERE parent_workflow_id = $1 \
                     UNION \
                     SELECT s.workflow_uuid FROM {q}.workflow_status s JOIN d ON s.parent_workflow_id = d.id) \
                 SELECT id FROM d WHERE id <> $1"
            ),
            resume: format!(
                "WITH s AS ( \
                     UPDATE {q}.workflow_status \
                     SET status = 'PENDING', owner_xid = $4, executor_id = $2, application_version = $3, \
                         recovery_attempts = 1, started_at_epoch_ms = $5::int8, queue_name = NULL, \
                         workflow_deadline_epoch_ms = $5::int8 + workflow_timeout_ms, completed_at = NULL, \
                         updated_at = $5 \
                     WHERE workflow_uuid = $1 \
                         AND status IN ('CANCELLED', 'ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED', 'ENQUEUED') \
                     RETURNING *) \
                 SELECT {WORKFLOW_COLUMNS} FROM s \
                 LEFT JOIN {q}.workflow_input i ON i.workflow_uuid = s.workflow_uuid \
                 LEFT JOIN {q}.workflow_output o ON o.workflow_uuid = s.workflow_uuid"
            ),
        }
    }
}
