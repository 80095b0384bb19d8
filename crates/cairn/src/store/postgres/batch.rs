//! Group commit: concurrent writes of one kind (checkpoints, completions, enqueues, `recv`'s
//! consumes) share one statement and one commit; concurrent looks for `recv`'s messages share
//! one read the same way.
//!
//! Up to [`IN_FLIGHT`] writes of a kind run at once. A write that finds a slot free is made at
//! once by its own task with the single-row statement, so a sequential workflow pays nothing
//! for batching. The others wait; when a slot frees up, everything waiting goes out as one
//! multi-row statement over `unnest(…)` arrays that applies the same ownership guard to every
//! row, so under load batches grow while earlier writes are in flight.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use tokio::sync::oneshot;

use super::sql::{Sql, Statements};
use super::workflows::{COMPLETE_WORKFLOW, RECORD_STEP};
use super::{Describe, Param, checkout, col, failed, step_params};
use crate::error::{Error, Result};
use crate::store::{CompleteWorkflow, RecordStep, StepRecord};

/// Batches of one kind written concurrently.
const IN_FLIGHT: usize = 4;
/// The most rows one statement writes.
const MAX_BATCH: usize = 512;

/// [`Grouped`]'s answer items for a kind whose answer is whether its row was written: the
/// single-row statement returned a row, or the multi-row one returned the write's key, read
/// from the returned `row` by the expression given.
macro_rules! answer_is_written {
    (|$row:ident| $key:expr) => {
        type Answer = bool;

        fn answer_of($row: &tokio_postgres::Row) -> $crate::error::Result<(Self::Key, bool)> {
            Ok(($key, true))
        }

        fn absent() -> bool {
            false
        }

        fn answer_one(rows: Vec<tokio_postgres::Row>) -> $crate::error::Result<bool> {
            Ok(!rows.is_empty())
        }
    };
}
pub(super) use answer_is_written;

/// A write that can go out alone or with others of its kind.
pub(super) trait Grouped: Describe + Clone + Send + Sync + 'static {
    /// What identifies a written row in the multi-row statement's result.
    type Key: Eq + Hash + Send;
    /// What a caller learns of its write (for most kinds: whether it was made).
    type Answer: Send + 'static;
    /// The single-row statement: returns a row iff the write was made.
    const SINGLE: &'static Sql;
    /// The multi-row statement: returns the key columns of the rows written.
    const MULTI: &'static Sql;
    /// Whether two writes waiting at once can share a key (one workflow enqueued twice at
    /// once); a batch then writes its repeats alone, after the others. Without repeats, a
    /// batch skips looking for them. Default: `true`.
    const KEYS_MAY_REPEAT: bool = true;
    /// Run the single-row statement `text` for this write on `client`.
    fn write_one<'a>(
        &'a self,
        client: &'a deadpool_postgres::Object,
        text: &'a str,
    ) -> impl Future<Output = std::result::Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>>
    + Send
    + 'a;
    /// This write's key.
    fn key(&self) -> Self::Key;
    /// The key and answer of a row the multi-row statement returned.
    fn answer_of(row: &tokio_postgres::Row) -> Result<(Self::Key, Self::Answer)>;
    /// The answer of a write the multi-row statement returned no row for.
    fn absent() -> Self::Answer;
    /// The answer of the single-row statement's rows.
    fn answer_one(rows: Vec<tokio_postgres::Row>) -> Result<Self::Answer>;
    /// Run the multi-row statement `text` for `batch` on `client`.
    fn write_many<'a>(
        client: &'a deadpool_postgres::Object,
        text: &'a str,
        batch: &'a [&'a Self],
    ) -> impl Future<Output = std::result::Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>>
    + Send
    + 'a;
}

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

/// `COMPLETE_WORKFLOW` for many workflows: its six parameters as arrays; returns the
/// `workflow_uuid`s completed. Rows are locked in id order, so two batches never deadlock.
static COMPLETE_WORKFLOWS: Sql = Sql(|q| {
    format!(
        "WITH input AS ( \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                 $6::int8[]) AS t(workflow_uuid, owner_xid, status, output, error, now_ms)), \
         locked AS ( \
             SELECT s.workflow_uuid FROM {q}.workflow_status s JOIN input i \
                 ON s.workflow_uuid = i.workflow_uuid \
             WHERE s.status = 'PENDING' AND s.owner_xid = i.owner_xid \
             ORDER BY s.workflow_uuid FOR UPDATE OF s), \
         upd AS ( \
             UPDATE {q}.workflow_status s \
             SET status = i.status, owner_xid = NULL, deduplication_id = NULL, \
                 updated_at = i.now_ms, completed_at = i.now_ms \
             FROM input i JOIN locked l ON l.workflow_uuid = i.workflow_uuid \
             WHERE s.workflow_uuid = i.workflow_uuid \
             RETURNING s.workflow_uuid), \
         out AS ( \
             INSERT INTO {q}.workflow_output (workflow_uuid, output, error, retention_timestamp) \
             SELECT i.workflow_uuid, i.output, i.error, i.now_ms FROM input i \
                 JOIN upd u ON u.workflow_uuid = i.workflow_uuid \
             ON CONFLICT (workflow_uuid) DO UPDATE SET output = EXCLUDED.output, \
                 error = EXCLUDED.error, retention_timestamp = EXCLUDED.retention_timestamp) \
         SELECT workflow_uuid FROM upd"
    )
});

/// A workflow's owner writes each of its steps once, so a batch's keys are distinct.
impl Grouped for RecordStep {
    type Key = (String, i32);
    const SINGLE: &'static Sql = &RECORD_STEP;
    const MULTI: &'static Sql = &RECORD_STEPS;
    const KEYS_MAY_REPEAT: bool = false;
    answer_is_written!(|row| (col(row, 0)?, col(row, 1)?));

    async fn write_one(
        &self,
        client: &deadpool_postgres::Object,
        text: &str,
    ) -> std::result::Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let statement = client.prepare_cached(text).await?;
        client.query(&statement, &step_params(&self.0)).await
    }

    fn key(&self) -> Self::Key {
        (self.0.workflow_id.clone(), self.0.function_id)
    }

    async fn write_many(
        client: &deadpool_postgres::Object,
        text: &str,
        batch: &[&Self],
    ) -> std::result::Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let column = |f: fn(&StepRecord) -> Option<String>| {
            batch.iter().map(|p| f(&p.0)).collect::<Vec<_>>()
        };
        let workflow_ids = column(|r| Some(r.workflow_id.clone()));
        let owners = column(|r| Some(r.owner_xid.clone()));
        let names = column(|r| Some(r.function_name.clone()));
        let outputs = column(|r| r.output.clone());
        let errors = column(|r| r.error.clone());
        let children = column(|r| r.child_workflow_id.clone());
        let applications = column(|r| r.application_name.clone());
        let function_ids: Vec<i32> = batch.iter().map(|p| p.0.function_id).collect();
        let started: Vec<i64> = batch.iter().map(|p| p.0.started_at_epoch_ms).collect();
        let completed: Vec<i64> = batch.iter().map(|p| p.0.completed_at_epoch_ms).collect();
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
        let statement = client.prepare_cached(text).await?;
        client.query(&statement, &params).await
    }
}

/// A workflow's owner completes it once, so a batch's keys are distinct.
impl Grouped for CompleteWorkflow {
    type Key = String;
    const SINGLE: &'static Sql = &COMPLETE_WORKFLOW;
    const MULTI: &'static Sql = &COMPLETE_WORKFLOWS;
    const KEYS_MAY_REPEAT: bool = false;
    answer_is_written!(|row| col(row, 0)?);

    async fn write_one(
        &self,
        client: &deadpool_postgres::Object,
        text: &str,
    ) -> std::result::Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let c = &self.0;
        let status = c.status.as_str();
        let params: [Param<'_>; 6] = [
            &c.workflow_id,
            &c.owner_xid,
            &status,
            &c.output,
            &c.error,
            &c.now_ms,
        ];
        let statement = client.prepare_cached(text).await?;
        client.query(&statement, &params).await
    }

    fn key(&self) -> Self::Key {
        self.0.workflow_id.clone()
    }

    async fn write_many(
        client: &deadpool_postgres::Object,
        text: &str,
        batch: &[&Self],
    ) -> std::result::Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let ids: Vec<&str> = batch.iter().map(|p| p.0.workflow_id.as_str()).collect();
        let owners: Vec<&str> = batch.iter().map(|p| p.0.owner_xid.as_str()).collect();
        let statuses: Vec<&str> = batch.iter().map(|p| p.0.status.as_str()).collect();
        let outputs: Vec<Option<&str>> = batch.iter().map(|p| p.0.output.as_deref()).collect();
        let errors: Vec<Option<&str>> = batch.iter().map(|p| p.0.error.as_deref()).collect();
        let now: Vec<i64> = batch.iter().map(|p| p.0.now_ms).collect();
        let params: [Param<'_>; 6] = [&ids, &owners, &statuses, &outputs, &errors, &now];
        let statement = client.prepare_cached(text).await?;
        client.query(&statement, &params).await
    }
}

/// A write waiting for a slot, and where its answer goes.
pub(super) struct Pending<W: Grouped> {
    item: W,
    reply: oneshot::Sender<Result<W::Answer>>,
}

/// The handle the store submits writes of kind `W` through.
pub(super) struct GroupCommit<W: Grouped> {
    shared: Arc<Shared<W>>,
}

struct Shared<W: Grouped> {
    pool: Pool,
    sql: Texts,
    state: Mutex<State<W>>,
}

/// Slots in use, and the writes waiting for one.
struct State<W: Grouped> {
    in_flight: usize,
    waiting: Vec<Pending<W>>,
}

impl<W: Grouped> GroupCommit<W> {
    /// A batcher over `pool`, with its two statements' texts taken from `statements` now, so
    /// a write looks nothing up.
    pub(super) fn new(pool: Pool, statements: &Statements) -> Self {
        let sql = Texts {
            single: statements.text(W::SINGLE),
            multi: statements.text(W::MULTI),
        };
        Self {
            shared: Arc::new(Shared {
                pool,
                sql,
                state: Mutex::new(State {
                    in_flight: 0,
                    waiting: Vec::new(),
                }),
            }),
        }
    }

    /// Make one write; returns its answer. With a slot free it is made at once by the
    /// caller's own task (no hand-off); otherwise it joins the next batch.
    pub(super) async fn write(&self, item: &W) -> Result<W::Answer> {
        let answer = {
            let mut state = self.shared.lock();
            if state.in_flight < IN_FLIGHT {
                state.in_flight += 1;
                None
            } else {
                let (reply, answer) = oneshot::channel();
                state.waiting.push(Pending {
                    item: item.clone(),
                    reply,
                });
                Some(answer)
            }
        };
        match answer {
            None => {
                let _slot = Slot(Arc::clone(&self.shared));
                write_one(&self.shared.pool, &self.shared.sql, item).await
            }
            // The batch's task was dropped unfinished: the runtime is shutting down.
            Some(answer) => answer.await.map_err(|_| Error::Shutdown)?,
        }
    }
}

impl<W: Grouped> Shared<W> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<W>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A slot in use. Releasing it hands it to the writes that waited, as one batch made by a
/// task of its own (so no caller's cancellation can strand the others).
struct Slot<W: Grouped>(Arc<Shared<W>>);

impl<W: Grouped> Drop for Slot<W> {
    fn drop(&mut self) {
        let batch = {
            let mut state = self.0.lock();
            let take = state.waiting.len().min(MAX_BATCH);
            let batch: Vec<Pending<W>> = state.waiting.drain(..take).collect();
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

/// A batcher's two statement texts.
struct Texts {
    /// One row.
    single: Arc<str>,
    /// Many.
    multi: Arc<str>,
}

/// What a failed multi-row write was doing.
struct Batch<'a, W: Grouped>(&'a [Pending<W>]);

impl<W: Grouped> Describe for Batch<'_, W> {
    fn what(&self) -> String {
        match self.0.first() {
            Some(first) => format!("{} (in a batch of {})", first.item.what(), self.0.len()),
            None => "an empty batch".to_owned(),
        }
    }
}

/// Make a batch's writes and answer each of its callers. Where keys may repeat
/// ([`Grouped::KEYS_MAY_REPEAT`]), a key seen twice (one workflow enqueued twice at once) is
/// written after the batch, alone: in one statement both rows would read as written.
async fn write_batch<W: Grouped>(pool: &Pool, sql: &Texts, batch: Vec<Pending<W>>) {
    if !W::KEYS_MAY_REPEAT {
        return write_distinct(pool, sql, batch).await;
    }
    let mut keys = HashSet::with_capacity(batch.len());
    let (batch, repeated): (Vec<_>, Vec<_>) =
        batch.into_iter().partition(|p| keys.insert(p.item.key()));
    write_distinct(pool, sql, batch).await;
    for pending in repeated {
        let written = write_one(pool, sql, &pending.item).await;
        let _ = pending.reply.send(written);
    }
}

/// [`write_batch`] for writes of distinct keys.
async fn write_distinct<W: Grouped>(pool: &Pool, sql: &Texts, batch: Vec<Pending<W>>) {
    if batch.len() == 1 {
        for pending in batch {
            let written = write_one(pool, sql, &pending.item).await;
            let _ = pending.reply.send(written);
        }
        return;
    }
    match write_many(pool, sql, &batch).await {
        Ok(mut answers) => {
            for pending in batch {
                let answer = answers
                    .remove(&pending.item.key())
                    .unwrap_or_else(W::absent);
                let _ = pending.reply.send(Ok(answer));
            }
        }
        // A failed batch (a deadlock with a multi-row cancel, a dropped connection) is
        // retried row by row, so each caller gets its own answer.
        Err(error) => {
            tracing::debug!(%error, size = batch.len(), "batched write failed; writing one by one");
            for pending in batch {
                let written = write_one(pool, sql, &pending.item).await;
                let _ = pending.reply.send(written);
            }
        }
    }
}

/// Make one write; returns its answer.
async fn write_one<W: Grouped>(pool: &Pool, sql: &Texts, item: &W) -> Result<W::Answer> {
    let client = checkout(pool, item).await?;
    let result = item.write_one(&client, &sql.single).await;
    W::answer_one(result.map_err(|e| failed(pool, client, e, item))?)
}

/// Make a batch's writes in one statement; returns the answers of those it returned rows for.
async fn write_many<W: Grouped>(
    pool: &Pool,
    sql: &Texts,
    batch: &[Pending<W>],
) -> Result<HashMap<W::Key, W::Answer>> {
    let op = Batch(batch);
    let client = checkout(pool, &op).await?;
    let items: Vec<&W> = batch.iter().map(|p| &p.item).collect();
    let result = W::write_many(&client, &sql.multi, &items).await;
    let rows = result.map_err(|e| failed(pool, client, e, &op))?;
    rows.iter().map(W::answer_of).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::WorkflowState;
    use crate::store::conformance::{guard, pg, workflow};
    use crate::store::{EnqueueWorkflow, QueuedFields, StoreOptions};

    use super::super::PostgresStore;

    /// An enqueue of `id` by `creator`.
    fn enqueue(id: &str, creator: &str) -> EnqueueWorkflow {
        let mut workflow = workflow(id, WorkflowState::Enqueued);
        workflow.creator_xid = creator.to_owned();
        EnqueueWorkflow {
            workflow,
            queued: QueuedFields::default(),
            parent: None,
        }
    }

    /// One id twice in one batch (two creators enqueueing it at once) is written once, and
    /// only one of the two callers hears that its write was made; the rest of the batch is
    /// written together.
    #[tokio::test]
    async fn an_id_twice_in_a_batch_is_written_once() {
        let name = format!("cairn_batch_{}", uuid::Uuid::new_v4().simple());
        let outcome = guard(async {
            let db = PostgresStore::connect(&pg::url(&name), &StoreOptions::default())
                .await
                .expect("open the store");
            let shared = &db.enqueues.shared;
            let ops = [
                enqueue("twin", "first"),
                enqueue("other", "other"),
                enqueue("twin", "second"),
            ];
            let (batch, answers): (Vec<_>, Vec<_>) = ops
                .into_iter()
                .map(|item| {
                    let (reply, answer) = oneshot::channel();
                    (Pending { item, reply }, answer)
                })
                .unzip();
            write_batch(&shared.pool, &shared.sql, batch).await;
            let mut made = Vec::new();
            for answer in answers {
                made.push(answer.await.expect("answered").expect("written"));
            }
            assert_eq!(made, [true, true, false]);
            db.close().await;
        })
        .await;
        pg::drop_database(&name).await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}
