//! Group commit for checkpoints: concurrent `record_step` calls share one statement and one
//! commit.
//!
//! A background task takes whatever checkpoints are waiting when a slot frees up and writes
//! them with one multi-row `INSERT … SELECT … FROM unnest(…)` that applies the same ownership
//! guard to every row. A lone checkpoint goes out as the plain single-row statement, so a
//! sequential workflow pays no batching delay; under load, batches grow while earlier ones
//! are in flight. Up to [`IN_FLIGHT`] batches run at once.

use std::collections::HashSet;
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Param, failed, step_params};
use crate::error::{Error, Result};
use crate::store::StepRecord;

/// Batches written concurrently.
const IN_FLIGHT: usize = 4;
/// The most checkpoints one statement writes.
const MAX_BATCH: usize = 512;

/// A checkpoint waiting to be written, and where its result goes: whether it was written
/// (`false`: refused by the ownership guard or already there; the caller finds out which).
struct Pending {
    record: StepRecord,
    reply: oneshot::Sender<Result<bool>>,
}

/// The handle the store submits checkpoints through.
pub(super) struct StepBatcher {
    queue: mpsc::UnboundedSender<Pending>,
}

impl StepBatcher {
    /// Start the batching task. `single` is the one-row statement, `multi` the `unnest` one.
    pub(super) fn start(pool: Pool, single: String, multi: String) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, Arc::new(Statements { single, multi }), receiver));
        Self { queue }
    }

    /// Write one checkpoint; returns whether it was written.
    pub(super) async fn write(&self, record: &StepRecord) -> Result<bool> {
        let (reply, answer) = oneshot::channel();
        let closed = || {
            Error::database(
                context(record),
                std::io::Error::other("the checkpoint writer has stopped"),
            )
        };
        self.queue
            .send(Pending {
                record: record.clone(),
                reply,
            })
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

struct Statements {
    single: String,
    multi: String,
}

fn context(record: &StepRecord) -> String {
    format!(
        "recording step {} of workflow {}",
        record.function_id, record.workflow_id
    )
}

async fn run(pool: Pool, sql: Arc<Statements>, mut receiver: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // Take a slot first: while every slot is busy, checkpoints pile up into the next batch.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = receiver.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        let sql = Arc::clone(&sql);
        tokio::spawn(async move {
            write_batch(&pool, &sql, batch).await;
            drop(slot);
        });
    }
}

async fn write_batch(pool: &Pool, sql: &Statements, batch: Vec<Pending>) {
    if batch.len() == 1 {
        for pending in batch {
            let written = write_one(pool, sql, &pending.record).await;
            let _ = pending.reply.send(written);
        }
        return;
    }
    match write_many(pool, sql, &batch).await {
        Ok(written) => {
            for pending in batch {
                let key = (
                    pending.record.workflow_id.clone(),
                    pending.record.function_id,
                );
                let _ = pending.reply.send(Ok(written.contains(&key)));
            }
        }
        // A failed batch (a deadlock with a multi-row cancel, a dropped connection) is retried
        // row by row, so each caller gets its own answer.
        Err(error) => {
            tracing::debug!(%error, size = batch.len(), "batched checkpoint write failed; writing one by one");
            for pending in batch {
                let written = write_one(pool, sql, &pending.record).await;
                let _ = pending.reply.send(written);
            }
        }
    }
}

async fn write_one(pool: &Pool, sql: &Statements, record: &StepRecord) -> Result<bool> {
    let context = || context(record);
    let client = pool
        .get()
        .await
        .map_err(|e| Error::database(context(), e))?;
    let params = step_params(record);
    let result = match client.prepare_cached(&sql.single).await {
        Ok(statement) => client.query(&statement, &params).await,
        Err(e) => Err(e),
    };
    result
        .map(|rows| !rows.is_empty())
        .map_err(|e| failed(client, e, &context))
}

/// Write a batch in one statement; returns the `(workflow, function id)`s written.
async fn write_many(
    pool: &Pool,
    sql: &Statements,
    batch: &[Pending],
) -> Result<HashSet<(String, i32)>> {
    let context = || format!("recording a batch of {} steps", batch.len());
    let column = |f: fn(&StepRecord) -> Option<String>| {
        batch.iter().map(|p| f(&p.record)).collect::<Vec<_>>()
    };
    let workflow_ids = column(|r| Some(r.workflow_id.clone()));
    let owners = column(|r| Some(r.owner_xid.clone()));
    let names = column(|r| Some(r.function_name.clone()));
    let outputs = column(|r| r.output.clone());
    let errors = column(|r| r.error.clone());
    let children = column(|r| r.child_workflow_id.clone());
    let applications = column(|r| r.application_name.clone());
    let function_ids: Vec<i32> = batch.iter().map(|p| p.record.function_id).collect();
    let started: Vec<i64> = batch.iter().map(|p| p.record.started_at_epoch_ms).collect();
    let completed: Vec<i64> = batch
        .iter()
        .map(|p| p.record.completed_at_epoch_ms)
        .collect();
    let params: [Param<'_>; 10] = [
        &workflow_ids,
        &owners,
        &function_ids,
        &names,
        &outputs,
        &errors,
        &children,
        &started,
        &completed,
        &applications,
    ];
    let client = pool
        .get()
        .await
        .map_err(|e| Error::database(context(), e))?;
    let result = match client.prepare_cached(&sql.multi).await {
        Ok(statement) => client.query(&statement, &params).await,
        Err(e) => Err(e),
    };
    let rows = result.map_err(|e| failed(client, e, &context))?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get(0).map_err(|e| Error::database(context(), e))?,
                row.try_get(1).map_err(|e| Error::database(context(), e))?,
            ))
        })
        .collect()
}
