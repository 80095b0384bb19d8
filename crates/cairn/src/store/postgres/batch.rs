//! Group commit for checkpoints: concurrent `record_step` calls share one statement and one
//! commit.
//!
//! Up to [`IN_FLIGHT`] writes run at once. A checkpoint that finds a slot free is written at
//! once by its own task with the single-row statement, so a sequential workflow pays nothing
//! for batching. The others wait; when a slot frees up, everything waiting goes out as one
//! multi-row `INSERT … SELECT … FROM unnest(…)` that applies the same ownership guard to
//! every row, so under load batches grow while earlier writes are in flight.

use std::collections::HashSet;
use std::sync::Arc;

use deadpool_postgres::Pool;
use std::sync::Mutex;

use tokio::sync::oneshot;

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
    shared: Arc<Shared>,
}

struct Shared {
    pool: Pool,
    sql: Statements,
    state: Mutex<State>,
}

/// Slots in use, and the checkpoints waiting for one.
#[derive(Default)]
struct State {
    in_flight: usize,
    waiting: Vec<Pending>,
}

impl StepBatcher {
    /// A batcher over `pool`. `single` is the one-row statement, `multi` the `unnest` one.
    pub(super) fn new(pool: Pool, single: String, multi: String) -> Self {
        let sql = Statements { single, multi };
        Self {
            shared: Arc::new(Shared {
                pool,
                sql,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Write one checkpoint; returns whether it was written. With a slot free it is written
    /// at once by the caller's own task (no hand-off); otherwise it joins the next batch.
    pub(super) async fn write(&self, record: &StepRecord) -> Result<bool> {
        let answer = {
            let mut state = self.shared.lock();
            if state.in_flight < IN_FLIGHT {
                state.in_flight += 1;
                None
            } else {
                let (reply, answer) = oneshot::channel();
                state.waiting.push(Pending {
                    record: record.clone(),
                    reply,
                });
                Some(answer)
            }
        };
        match answer {
            None => {
                let _slot = Slot(Arc::clone(&self.shared));
                write_one(&self.shared.pool, &self.shared.sql, record).await
            }
            Some(answer) => answer.await.map_err(|_| {
                Error::database(
                    context(record),
                    std::io::Error::other("the checkpoint batch was abandoned"),
                )
            })?,
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A slot in use. Releasing it hands it to the checkpoints that waited, as one batch written
/// by a task of its own (so no caller's cancellation can strand the others).
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        let batch = {
            let mut state = self.0.lock();
            let take = state.waiting.len().min(MAX_BATCH);
            let batch: Vec<Pending> = state.waiting.drain(..take).collect();
            if batch.is_empty() {
                state.in_flight -= 1;
                return;
            }
            batch
        };
        let shared = Arc::clone(&self.0);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _slot = Slot(Arc::clone(&shared));
                    write_batch(&shared.pool, &shared.sql, batch).await;
                });
            }
            // No runtime (the process is tearing down): the waiters learn their batch is gone.
            Err(_) => {
                self.0.lock().in_flight -= 1;
                drop(batch);
            }
        }
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
