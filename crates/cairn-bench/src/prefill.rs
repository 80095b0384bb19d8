//! `--prefill M`: fill a fresh system database with `M` finished workflows of ten steps each
//! before w1 or w2 measures, so their figures can be compared with an empty database's.
//!
//! The rows are written with SQL, as Cairn writes a finished [`ten_steps`] workflow: its
//! status row (`SUCCESS`), input, output and ten step outputs, in chunks of
//! [`CHUNK`] workflows per statement (`generate_series` on Postgres, a recursive CTE on
//! SQLite, where the whole fill is one transaction). Workflow ids are `pf-` and an 8-digit
//! number, so each table's primary key grows in order.
//!
//! [`ten_steps`]: crate::workloads

use crate::database::{self, BenchDatabase};
use crate::error::{BenchError, Context};

/// Workflows per INSERT statement.
const CHUNK: u64 = 100_000;

/// Steps per prefilled workflow.
const STEPS: u64 = 10;

/// The application the rows belong to (the bench's own).
const APP: &str = "cairn-bench";

/// The SQL a backend spells differently.
struct Dialect {
    /// The rows `i` in `[lo, hi)`, as a FROM source.
    workflows: fn(u64, u64) -> String,
    /// The rows `(i, f)`, `i` in `[lo, hi)` and `f` in `[0, STEPS)`, as a FROM source.
    steps: fn(u64, u64) -> String,
    /// The workflow id of row `i`.
    id: &'static str,
    /// The tables' schema prefix.
    schema: &'static str,
}

/// SQLite: recursive CTEs, `printf`, no schema.
static SQLITE: Dialect = Dialect {
    workflows: |lo, hi| {
        format!(
            "(WITH RECURSIVE n(i) AS (SELECT {lo} UNION ALL SELECT i + 1 FROM n \
             WHERE i + 1 < {hi}) SELECT i FROM n)"
        )
    },
    steps: |lo, hi| {
        format!(
            "(WITH RECURSIVE n(i) AS (SELECT {lo} UNION ALL SELECT i + 1 FROM n \
             WHERE i + 1 < {hi}), s(f) AS (SELECT 0 UNION ALL SELECT f + 1 FROM s \
             WHERE f + 1 < {STEPS}) SELECT i, f FROM n, s ORDER BY i, f)"
        )
    },
    id: "printf('pf-%08d', i)",
    schema: "",
};

/// Postgres: `generate_series`, `lpad`, DBOS's schema.
static POSTGRES: Dialect = Dialect {
    workflows: |lo, hi| format!("generate_series({lo}, {}) AS n(i)", hi - 1),
    steps: |lo, hi| {
        format!(
            "generate_series({lo}, {}) AS n(i) CROSS JOIN generate_series(0, {}) AS s(f)",
            hi - 1,
            STEPS - 1
        )
    },
    id: "'pf-' || lpad(i::text, 8, '0')",
    schema: "dbos.",
};

/// The INSERTs for workflows `[lo, hi)`, created from `t0` (epoch ms) on, 10 ms apart.
fn inserts(dialect: &Dialect, lo: u64, hi: u64, t0: i64) -> [String; 4] {
    let (id, schema) = (dialect.id, dialect.schema);
    let workflows = (dialect.workflows)(lo, hi);
    let steps = (dialect.steps)(lo, hi);
    [
        format!(
            "INSERT INTO {schema}workflow_status (workflow_uuid, status, name, executor_id, \
                 application_version, application_name, created_at, updated_at, \
                 started_at_epoch_ms, completed_at, recovery_attempts, serialization, priority) \
             SELECT {id}, 'SUCCESS', 'ten_steps', 'local', 'prefill', '{APP}', \
                 {t0} + i * 10, {t0} + i * 10 + 5, {t0} + i * 10, {t0} + i * 10 + 5, \
                 1, 'portable_json', 0 FROM {workflows}"
        ),
        format!(
            "INSERT INTO {schema}workflow_input (workflow_uuid, inputs, retention_timestamp) \
             SELECT {id}, '{{\"positionalArgs\":[' || i || '],\"namedArgs\":{{}}}}', \
                 {t0} + i * 10 FROM {workflows}"
        ),
        format!(
            "INSERT INTO {schema}workflow_output (workflow_uuid, output, retention_timestamp) \
             SELECT {id}, '' || (i + {last}), {t0} + i * 10 + 5 FROM {workflows}",
            last = STEPS - 1
        ),
        format!(
            "INSERT INTO {schema}operation_outputs (workflow_uuid, function_id, function_name, \
                 output, started_at_epoch_ms, completed_at_epoch_ms, serialization, \
                 application_name, retention_timestamp) \
             SELECT {id}, f + 1, 'noop', '' || (i + f), {t0} + i * 10, {t0} + i * 10, \
                 'portable_json', '{APP}', {t0} + i * 10 FROM {steps}"
        ),
    ]
}

/// Write `count` finished workflows into `database`, whose schema exists.
pub async fn fill(database: &BenchDatabase, count: u64) -> Result<(), BenchError> {
    // In the past, 10 ms apart: a history as long as the prefill.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let t0 = now_ms - count as i64 * 10 - 60_000;
    let chunks: Vec<(u64, u64)> = (0..count.div_ceil(CHUNK))
        .map(|k| (k * CHUNK, ((k + 1) * CHUNK).min(count)))
        .collect();
    match database {
        BenchDatabase::Sqlite { path, .. } => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                let mut conn = rusqlite::Connection::open(&path).context("opening the file")?;
                let tx = conn.transaction().context("beginning the prefill")?;
                for (lo, hi) in chunks {
                    for statement in inserts(&SQLITE, lo, hi, t0) {
                        tx.execute(&statement, []).context("prefilling workflows")?;
                    }
                }
                tx.commit().context("committing the prefill")?;
                // As a long-lived database would be: its history in the file, not the WAL,
                // and on disk, so the fill's writeback is not charged to the measure.
                conn.execute_batch("ANALYZE; PRAGMA wal_checkpoint(TRUNCATE)")
                    .context("analyzing the prefill")?;
                drop(conn);
                std::fs::File::open(&path)
                    .and_then(|file| file.sync_all())
                    .context("syncing the prefilled file")
            })
            .await
            .context("prefilling the SQLite database")?
        }
        BenchDatabase::Postgres { .. } => {
            let client = database::connect(&database.url()).await?;
            client
                .batch_execute("SET synchronous_commit = off")
                .await
                .context("configuring the prefill connection")?;
            for (lo, hi) in chunks {
                let statements = inserts(&POSTGRES, lo, hi, t0).join("; ");
                client
                    .batch_execute(&format!("BEGIN; {statements}; COMMIT"))
                    .await
                    .context("prefilling workflows")?;
            }
            client
                .batch_execute(
                    "ANALYZE dbos.workflow_status; ANALYZE dbos.workflow_input; \
                     ANALYZE dbos.workflow_output; ANALYZE dbos.operation_outputs; \
                     CHECKPOINT",
                )
                .await
                .context("analyzing and checkpointing the prefill")
        }
    }
}
