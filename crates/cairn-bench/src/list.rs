//! `list`: `Client::list_workflows` over a system database of 100,000 workflows, with a
//! status filter and a limit of 100, through a standalone client: the latency an operator's
//! `list` sees on a database that has been busy for a while.
//!
//! The rows are written in bulk with SQL (one statement per table), as DBOS's schema holds
//! them: a mix of statuses (70 % `SUCCESS`, 10 % `ERROR`, 10 % `ENQUEUED`, 5 % `PENDING`,
//! 5 % `CANCELLED`), three workflow names, two queues, inputs for every workflow and outputs
//! for the finished ones. Each measured call asks for the next status of that mix in turn,
//! oldest first (DBOS's default order), with inputs and outputs.

use std::time::Duration;

use cairn::{Cairn, Client, ListWorkflowsOptions, WorkflowState};

use crate::cli::{Options, Workload};
use crate::database::{self, BenchDatabase};
use crate::error::{BenchError, Context};
use crate::floor;
use crate::report::{self, Report};

/// Workflow rows in the database.
pub const ROWS: i64 = 100_000;

/// The most rows each call returns.
const LIMIT: usize = 100;

/// The statuses the calls filter on, in turn.
const FILTERS: [WorkflowState; 5] = [
    WorkflowState::Success,
    WorkflowState::Error,
    WorkflowState::Enqueued,
    WorkflowState::Pending,
    WorkflowState::Cancelled,
];

/// The application the rows belong to (the client lists every application's).
pub const APP: &str = "cairn-bench";

/// Creation time of the first row (epoch ms); each next row is 10 ms later.
const T0: i64 = 1_750_000_000_000;

/// The SQL expressions of a generated row's columns, `i` being its number (0-based): the
/// same text on both databases (`||`, `%` and `CASE` read alike).
mod columns {
    /// `SUCCESS` for 14 rows of 20, then 2 `ERROR`, 2 `ENQUEUED`, 1 `PENDING`, 1 `CANCELLED`.
    pub const STATUS: &str = "CASE WHEN i % 20 < 14 THEN 'SUCCESS' WHEN i % 20 < 16 THEN 'ERROR' \
         WHEN i % 20 < 18 THEN 'ENQUEUED' WHEN i % 20 < 19 THEN 'PENDING' ELSE 'CANCELLED' END";
    /// Three workflow functions.
    pub const NAME: &str =
        "CASE i % 3 WHEN 0 THEN 'checkout' WHEN 1 THEN 'refund' ELSE 'nightly_report' END";
    /// Half the workflows were enqueued, on one of two queues.
    pub const QUEUE: &str =
        "CASE WHEN i % 2 = 0 THEN NULL WHEN i % 4 = 1 THEN 'orders' ELSE 'emails' END";
}

/// Fill a fresh database with [`ROWS`] workflows, then time `options.n` listings through a
/// standalone client.
pub async fn run(options: &Options, database: &BenchDatabase) -> Result<Report, BenchError> {
    let floor = prepare(options, database).await?;
    let client = Client::connect(&database.url())
        .await
        .context("connecting the client")?;
    let measured =
        report::time_calls(options.workload.warm_up(), options.n, |k| list(&client, k)).await;
    client.close().await;
    let measurement = measured?;
    Ok(Report::new(
        Workload::List,
        database.backend(),
        &measurement,
        floor,
    ))
}

/// Create the schema in a fresh database and fill it with [`ROWS`] workflows; returns the
/// database's commit floor.
pub async fn prepare(options: &Options, database: &BenchDatabase) -> Result<Duration, BenchError> {
    create_schema(options, database).await?;
    fill(database).await?;
    floor::commit_latency(database).await
}

/// Create the schema in a fresh database by launching Cairn once, as an application would.
pub async fn create_schema(options: &Options, database: &BenchDatabase) -> Result<(), BenchError> {
    let app = Cairn::builder(APP)
        .database_url(database.url())
        .pool_size(options.workload.pool_size())
        .launch()
        .await
        .context("launching Cairn to create the schema")?;
    app.shutdown().await.context("shutting Cairn down")
}

/// Call `k`: the next status in turn, at most [`LIMIT`] rows, which must all be there.
async fn list(client: &Client, k: usize) -> Result<(), BenchError> {
    let state = FILTERS[k % FILTERS.len()].clone();
    let listed = client
        .list_workflows(
            ListWorkflowsOptions::new()
                .status(state.clone())
                .limit(LIMIT),
        )
        .await
        .context(format!("listing {state} workflows"))?;
    if listed.len() != LIMIT || listed.iter().any(|w| w.state != state) {
        return Err(BenchError::new(
            format!("listing {state} workflows"),
            format!("expected {LIMIT} {state} rows, got {}", listed.len()),
        ));
    }
    Ok(())
}

/// The three bulk inserts (status, input, output rows) over a row-number source `source`
/// yielding `i`.
fn inserts(source: &str) -> [String; 3] {
    let status = columns::STATUS;
    let name = columns::NAME;
    let queue = columns::QUEUE;
    [
        format!(
            "INSERT INTO workflow_status (workflow_uuid, status, name, queue_name, executor_id, \
                 application_version, application_name, created_at, updated_at, \
                 started_at_epoch_ms, completed_at, recovery_attempts, serialization, priority) \
             SELECT 'wf-' || i, {status}, {name}, {queue}, 'local', 'v1', '{APP}', \
                 {T0} + i * 10, {T0} + i * 10 + 5, {T0} + i * 10 + 1, \
                 CASE WHEN i % 20 < 16 OR i % 20 = 19 THEN {T0} + i * 10 + 5 END, \
                 1, 'portable_json', 0 FROM {source}"
        ),
        format!(
            "INSERT INTO workflow_input (workflow_uuid, inputs) \
             SELECT 'wf-' || i, '{{\"positionalArgs\":[' || i || '],\"namedArgs\":{{}}}}' \
             FROM {source}"
        ),
        format!(
            "INSERT INTO workflow_output (workflow_uuid, output, error) \
             SELECT 'wf-' || i, CASE WHEN i % 20 < 14 THEN '\"done\"' END, \
                 CASE WHEN i % 20 >= 14 AND i % 20 < 16 \
                     THEN '{{\"name\":\"PaymentError\",\"message\":\"declined\",\"code\":null,\"data\":null}}' END \
             FROM {source} WHERE i % 20 < 16"
        ),
    ]
}

/// Write the rows: one statement per table, in one transaction.
pub async fn fill(database: &BenchDatabase) -> Result<(), BenchError> {
    match database {
        BenchDatabase::Sqlite { path, .. } => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                let mut conn = rusqlite::Connection::open(&path).context("opening the file")?;
                let tx = conn.transaction().context("beginning the fill")?;
                let source = format!(
                    "(WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {ROWS}) SELECT i FROM n)"
                );
                for statement in inserts(&source) {
                    tx.execute(&statement, []).context("filling workflow rows")?;
                }
                tx.commit().context("committing the fill")
            })
            .await
            .context("filling the SQLite database")?
        }
        BenchDatabase::Postgres { .. } => {
            let client = database::connect(&database.url()).await?;
            let source = format!("generate_series(0, {}) AS g(i)", ROWS - 1);
            let [status, input, output] = inserts(&source);
            client
                .batch_execute(&format!(
                    "SET search_path TO dbos; BEGIN; {status}; {input}; {output}; COMMIT; \
                     ANALYZE workflow_status; ANALYZE workflow_input; ANALYZE workflow_output"
                ))
                .await
                .context("filling the Postgres database")
        }
    }
}
