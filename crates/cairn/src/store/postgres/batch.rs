//! Group commit for checkpoints: concurrent `record_step` calls share one statement and one
//! commit.
//!
//! Up to [`IN_FLIGHT`] writes run at once. A checkpoint that finds a slot free is written at
//! once by its own task with the single-row statement, so a sequential workflow pays nothing
//! for batching. The others wait; when a slot frees up, everything waiting goes out as one
//! multi-row `INSERT … SELECT … FROM unnest(…)` that applies the same ownership guard to
//! every row, so under load batches grow while earlier writes are in flight.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use tokio::sync::oneshot;

use super::sql::{Sql, Statements};
use super::workflows::RECORD_STEP;
use super::{Describe, Param, checkout, col, failed, step_params};
use crate::error::{Error, Result};
use crate::store::{RecordStep, StepRecord};

/// Batches written concurrently.
const IN_FLIGHT: usize = 4;
/// The most checkpoints one statement writes.
const MAX_BATCH: usize = 512;

/// `RECORD_STEP` for many rows: its ten parameters as arrays, in the same order; returns the
/// `(workflow_uuid, function_id)`s written.
static RECORD_STEPS: Sql = Sql(|q| {
    format!(
        "WITH input AS ( \
             SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], \
                 $6::text[], $7::text[], $8::int8[], $9::int8[], $10::text[]) \
             AS t(workflow_uuid, owner_xid, function_id, function_name, output, error, \
                 child_workflow_id, started_at, completed_at, application_name)), \
         owned AS ( \
             SELECT i.* FROM input i JOIN {q}.workflow_status s ON s.workflow_uuid = i.workflow_uuid \
             WHERE (s.status = 'PENDING' AND s.owner_xid = i.owner_xid \
                 OR s.status = 'CANCELLED' AND s.owner_xid IS NULL AND s.updated_at >= i.started_at) \
             FOR SHARE OF s) \
         INSERT INTO {q}.operation_outputs (workflow_uuid, function_id, function_name, output, error, \
             child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms, serialization, \
             application_name, retention_timestamp) \
         SELECT workflow_uuid, function_id, function_name, output, error, child_workflow_id, \
             started_at, completed_at, 'portable_json', application_name, completed_at FROM owned \
         ON CONFLICT (workflow_uuid, function_id) DO NOTHING \
         RETURNING workflow_uuid, function_id"
    )
});

/// A checkpoint waiting to be written, and where its result goes: whether it was written
/// (`false`: refused by the ownership guard or already there; the caller finds out which).
struct Pending {
    step: RecordStep,
    reply: oneshot::Sender<Result<bool>>,
}

/// The handle the store submits checkpoints through.
pub(super) struct StepBatcher {
    shared: Arc<Shared>,
}

struct Shared {
    pool: Pool,
    sql: Texts,
    state: Mutex<State>,
}

/// Slots in use, and the checkpoints waiting for one.
#[derive(Default)]
struct State {
    in_flight: usize,
    waiting: Vec<Pending>,
}

impl StepBatcher {
    /// A batcher over `pool`, with its two statements' texts taken from `statements` now, so
    /// a checkpoint looks nothing up.
    pub(super) fn new(pool: Pool, statements: &Statements) -> Self {
        let sql = Texts {
            single: statements.text(&RECORD_STEP),
            multi: statements.text(&RECORD_STEPS),
        };
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
    pub(super) async fn write(&self, step: &RecordStep) -> Result<bool> {
        let answer = {
            let mut state = self.shared.lock();
            if state.in_flight < IN_FLIGHT {
                state.in_flight += 1;
                None
            } else {
                let (reply, answer) = oneshot::channel();
                state.waiting.push(Pending {
                    step: step.clone(),
                    reply,
                });
                Some(answer)
            }
        };
        match answer {
            None => {
                let _slot = Slot(Arc::clone(&self.shared));
                write_one(&self.shared.pool, &self.shared.sql, step).await
            }
            // The batch's task was dropped unfinished: the runtime is shutting down.
            Some(answer) => answer.await.map_err(|_| Error::Shutdown)?,
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

/// The batcher's two statement texts.
struct Texts {
    /// `RECORD_STEP`: one checkpoint.
    single: Arc<str>,
    /// `RECORD_STEPS`: many.
    multi: Arc<str>,
}

/// What a failed multi-row write was doing.
struct Batch(usize);

impl Describe for Batch {
    fn what(&self) -> String {
        format!("recording a batch of {} steps", self.0)
    }
}

/// Write a batch and answer each of its callers.
async fn write_batch(pool: &Pool, sql: &Texts, batch: Vec<Pending>) {
    if batch.len() == 1 {
        for pending in batch {
            let written = write_one(pool, sql, &pending.step).await;
            let _ = pending.reply.send(written);
        }
        return;
    }
    match write_many(pool, sql, &batch).await {
        Ok(written) => {
            for pending in batch {
                let record = &pending.step.0;
                let key = (record.workflow_id.clone(), record.function_id);
                let _ = pending.reply.send(Ok(written.contains(&key)));
            }
        }
        // A failed batch (a deadlock with a multi-row cancel, a dropped connection) is retried
        // row by row, so each caller gets its own answer.
        Err(error) => {
            tracing::debug!(%error, size = batch.len(), "batched checkpoint write failed; writing one by one");
            for pending in batch {
                let written = write_one(pool, sql, &pending.step).await;
                let _ = pending.reply.send(written);
            }
        }
    }
}

/// Write one checkpoint; returns whether it was written.
async fn write_one(pool: &Pool, sql: &Texts, step: &RecordStep) -> Result<bool> {
    let client = checkout(pool, step).await?;
    let params = step_params(&step.0);
    let result = match client.prepare_cached(&sql.single).await {
        Ok(statement) => client.query(&statement, &params).await,
        Err(e) => Err(e),
    };
    result
        .map(|rows| !rows.is_empty())
        .map_err(|e| failed(pool, client, e, step))
}

/// Write a batch in one statement; returns the `(workflow, function id)`s written.
async fn write_many(pool: &Pool, sql: &Texts, batch: &[Pending]) -> Result<HashSet<(String, i32)>> {
    let op = Batch(batch.len());
    let column = |f: fn(&StepRecord) -> Option<String>| {
        batch.iter().map(|p| f(&p.step.0)).collect::<Vec<_>>()
    };
    let workflow_ids = column(|r| Some(r.workflow_id.clone()));
    let owners = column(|r| Some(r.owner_xid.clone()));
    let names = column(|r| Some(r.function_name.clone()));
    let outputs = column(|r| r.output.clone());
    let errors = column(|r| r.error.clone());
    let children = column(|r| r.child_workflow_id.clone());
    let applications = column(|r| r.application_name.clone());
    let function_ids: Vec<i32> = batch.iter().map(|p| p.step.0.function_id).collect();
    let started: Vec<i64> = batch.iter().map(|p| p.step.0.started_at_epoch_ms).collect();
    let completed: Vec<i64> = batch
        .iter()
        .map(|p| p.step.0.completed_at_epoch_ms)
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
    let client = checkout(pool, &op).await?;
    let result = match client.prepare_cached(&sql.multi).await {
        Ok(statement) => client.query(&statement, &params).await,
        Err(e) => Err(e),
    };
    let rows = result.map_err(|e| failed(pool, client, e, &op))?;
    rows.iter()
        .map(|row| Ok((col(row, 0)?, col(row, 1)?)))
        .collect()
}
