//! Liveness on Postgres: which process holds an executor id, and what became of the workflows
//! executing here.
//!
//! An executor id is held with a session-level advisory lock keyed by the schema, the
//! application and the id, on a connection of its own (not from the pool, whose sessions come
//! and go). The server releases it when that session ends: at shutdown, or when the holder
//! dies (its socket closes; a vanished host is noticed by TCP keepalives). A connection
//! pooler in transaction mode cannot hold session locks; the system database must be reached
//! directly, as LISTEN already requires.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::connect::Target;
use super::error::{failure, words};
use super::sql::Sql;
use super::{OnPostgres, PostgresStore, col, state_at};
use crate::error::Result;
use crate::store::{ExecutionState, ExecutionStates, LockAttempt};

/// `$1` workflow ids (text[]): `(workflow_uuid, status, owner_xid)` of those that exist.
static EXECUTION_STATES: Sql = Sql(|q| {
    format!(
        "SELECT workflow_uuid, status, owner_xid FROM {q}.workflow_status \
         WHERE workflow_uuid = ANY($1::text[])"
    )
});

impl OnPostgres for ExecutionStates {
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<ExecutionState>> {
        if self.workflow_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = db
            .query(&EXECUTION_STATES, &[&self.workflow_ids], self)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ExecutionState {
                    workflow_id: col(row, 0)?,
                    status: state_at(row, 1)?,
                    owner_xid: col(row, 2)?,
                })
            })
            .collect()
    }
}

/// `$1` lock name: whether this session took the lock (it may hold it already: re-entrant).
const TRY_LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))";

/// `$1` lock name: who holds it, as far as this role may see (`pg_stat_activity` hides other
/// roles' details without `pg_read_all_stats`). A 64-bit advisory lock shows in `pg_locks`
/// as its high and low halves (`classid`, `objid`) with `objsubid = 1`.
const HOLDER: &str = "WITH k AS (SELECT hashtextextended($1, 0) AS key) \
     SELECT a.pid, a.application_name, host(a.client_addr) \
     FROM k, pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND l.classid = ((k.key >> 32) & 4294967295)::oid \
         AND l.objid = (k.key & 4294967295)::oid";

/// The first wait before re-taking a lock whose session was lost; it doubles up to
/// [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between two attempts at re-taking a lost lock.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How often a lost lock that another process took meanwhile is tried again (it is free
/// again only once that process ends).
const TAKEN_RECHECK: Duration = Duration::from_secs(30);

/// How long a release waits for the holding session to end before abandoning it.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where lock sessions connect: the pool's server, TLS mode and schema.
#[derive(Clone)]
pub(super) struct Liveness {
    config: Config,
    tls: MakeRustlsConnect,
    /// The schema's name, part of every lock's name (two schemas are two system databases).
    schema: String,
}

impl Liveness {
    /// Lock sessions for `schema` on the server `target` names (after `bootstrap` settled
    /// the TLS mode). They announce themselves as `cairn executor <pid>`, so the holder of
    /// an id can be found in `pg_stat_activity`.
    pub(super) fn new(target: &Target, schema: &str) -> Self {
        let mut config = target.config.clone();
        config.application_name(Self::session_name());
        Self {
            config,
            tls: target.tls.clone(),
            schema: schema.to_owned(),
        }
    }

    /// The `application_name` of this process's lock sessions.
    fn session_name() -> String {
        format!("cairn executor {}", std::process::id())
    }

    /// The advisory lock's name for an executor id of an application.
    pub(super) fn lock_name(&self, app_name: &str, executor_id: &str) -> String {
        format!("cairn.executor.{}.{app_name}.{executor_id}", self.schema)
    }

    /// A new session, its connection driven on a task that ends when the session does.
    async fn connect(&self, context: &str) -> Result<Session> {
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| failure(e, context.to_owned()))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %words(&e), "the executor lock session ended");
            }
        });
        Ok(Session { client, driver })
    }

    /// Open a session and try the lock on it: the session if it took the lock, else who
    /// holds it (when visible).
    async fn try_once(&self, name: &str, context: &str) -> Result<Result<Session, Option<String>>> {
        let session = self.connect(context).await?;
        let taken: bool = session
            .client
            .query_one(TRY_LOCK, &[&name])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| failure(e, context.to_owned()))?;
        if taken {
            return Ok(Ok(session));
        }
        let holder = match session.client.query_opt(HOLDER, &[&name]).await {
            Ok(Some(row)) => describe_holder(&row),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %words(&e), "could not read who holds an executor lock");
                None
            }
        };
        Ok(Err(holder))
    }
}

/// A holder as `pg_stat_activity` shows it: backend pid, then what else is visible.
fn describe_holder(row: &tokio_postgres::Row) -> Option<String> {
    let pid: i32 = row.try_get(0).ok()?;
    let application: Option<String> = row.try_get(1).ok().flatten();
    let client: Option<String> = row.try_get(2).ok().flatten();
    let mut holder = format!("the session of server process {pid}");
    if let Some(application) = application.filter(|a| !a.is_empty()) {
        holder.push_str(&format!(" ({application})"));
    }
    if let Some(client) = client {
        holder.push_str(&format!(" from {client}"));
    }
    Some(holder)
}

/// A connection holding (or about to hold) an executor lock.
struct Session {
    client: Client,
    /// Drives the connection; it ends when the session does.
    driver: JoinHandle<()>,
}

impl PostgresStore {
    /// Try once to take the lock of `executor_id` of application `app_name` (see the module
    /// doc). Once taken, a task of its own keeps the session, and if the session is lost
    /// (a server restart, a network failure) re-takes the lock when the server is back.
    pub(crate) async fn try_lock_executor(
        &self,
        app_name: &str,
        executor_id: &str,
    ) -> Result<LockAttempt<LockSession>> {
        let name = self.liveness.lock_name(app_name, executor_id);
        let context = format!("taking the lock of executor id {executor_id}");
        let session = match self.liveness.try_once(&name, &context).await? {
            Ok(session) => session,
            Err(holder) => return Ok(LockAttempt::InUse { holder }),
        };
        let (stop, stopped) = watch::channel(false);
        let keeper = Keeper {
            liveness: (*self.liveness).clone(),
            name,
            executor_id: executor_id.to_owned(),
            context,
        };
        let task = tokio::spawn(keeper.hold(session, stopped));
        Ok(LockAttempt::Taken(LockSession {
            stop,
            task: Some(task),
        }))
    }
}

/// A held executor lock: the task keeping its session. Release it with
/// [`LockSession::release`]; dropping it ends the session too, less politely.
#[derive(Debug)]
pub(crate) struct LockSession {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl LockSession {
    /// End the session (the server releases the lock) and wait for it to close.
    pub(crate) async fn release(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(RELEASE_TIMEOUT, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for LockSession {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            // Its client goes with the task, and the connection then closes.
            task.abort();
        }
    }
}

/// What the keeper task needs: where to reconnect and which lock to re-take.
struct Keeper {
    liveness: Liveness,
    name: String,
    executor_id: String,
    context: String,
}

impl Keeper {
    /// Keep the session until released; after a loss, re-take the lock until it is held again.
    ///
    /// While the lock is lost this process keeps running: stopping it would turn every
    /// database blip into an outage of the application. What is at stake is narrower: another
    /// process launched with this id meanwhile is not refused, and its recovery claims this
    /// process's unfinished workflows. Ownership tokens still protect them (every checkpoint
    /// is guarded by its execution's token, and the engine stops executions whose workflow
    /// is no longer theirs), so the cost is the step bodies running at that moment running
    /// once more, as after a crash; a finished step never runs again.
    async fn hold(self, mut session: Session, mut stopped: watch::Receiver<bool>) {
        loop {
            let released = tokio::select! {
                _ = &mut session.driver => false,
                _ = stopped.wait_for(|s| *s) => true,
            };
            if released {
                // Unlocked explicitly first: once that answers, the lock is free. The server
                // also frees it when the session ends, but it ends the session after the
                // client has gone, so a process taking the id right after a release could
                // still find it held. Dropping the client then ends the session politely.
                let unlock = session
                    .client
                    .execute("SELECT pg_advisory_unlock_all()", &[]);
                let _ = tokio::time::timeout(RELEASE_TIMEOUT, unlock).await;
                drop(session.client);
                let _ = session.driver.await;
                return;
            }
            drop(session);
            tracing::error!(
                executor_id = %self.executor_id,
                "lost the database session holding this process's executor id; until it is taken again, a process launched with the same id is not refused and could recover this process's workflows. Taking it again once the database answers"
            );
            match self.retake(&mut stopped).await {
                Some(again) => session = again,
                None => return,
            }
        }
    }

    /// Re-take the lock with backoff until it is held again (`None` once released).
    async fn retake(&self, stopped: &mut watch::Receiver<bool>) -> Option<Session> {
        let mut backoff = MIN_BACKOFF;
        let mut taken_elsewhere = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stopped.wait_for(|s| *s) => return None,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match self.liveness.try_once(&self.name, &self.context).await {
                Ok(Ok(session)) => {
                    tracing::info!(executor_id = %self.executor_id, "holding this process's executor id again");
                    return Some(session);
                }
                // The server may not have noticed yet that the lost session is gone (a
                // network failure rather than a restart): the lock is still this process's.
                Ok(Err(Some(holder)))
                    if holder.contains(&format!("({})", Liveness::session_name())) =>
                {
                    tracing::debug!(executor_id = %self.executor_id, holder, "the server still holds this process's previous executor lock session");
                }
                Ok(Err(holder)) if !taken_elsewhere => {
                    taken_elsewhere = true;
                    backoff = TAKEN_RECHECK;
                    tracing::error!(
                        executor_id = %self.executor_id,
                        holder = holder.as_deref().unwrap_or("unknown"),
                        "another process took this process's executor id while its lock was lost: two live processes now run under one id. Give each process its own id (DBOS__VMID or CairnBuilder::executor_id) and restart one of them"
                    );
                }
                Ok(Err(_)) => backoff = TAKEN_RECHECK,
                Err(error) => {
                    tracing::debug!(%error, "could not take the executor lock again yet");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::store::LockAttempt;
    use crate::store::conformance::{Backend, TestStore, guard};

    /// A lock whose session the server ended (a restart, `pg_terminate_backend`) is taken
    /// again on a new session, and then refuses another holder as before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_lock_session_is_taken_again() {
        let db = TestStore::open(Backend::Postgres).await;
        let outcome = guard(async {
            let lock = || {
                db.store
                    .lock_executor("shop", "one", Duration::ZERO, Duration::from_secs(10))
            };
            assert!(matches!(lock().await.unwrap(), LockAttempt::Taken(())));
            let sessions = format!(
                "SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted \
                     AND a.application_name = 'cairn executor {}' \
                     AND a.datname = current_database()",
                std::process::id()
            );
            let holders = db.rows(&sessions).await;
            let [first] = holders.as_slice() else {
                panic!("one session holds the lock: {holders:?}");
            };
            let first = first[0].clone().expect("pid");
            db.execute(&format!("SELECT pg_terminate_backend({first})"))
                .await;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let holders = db.rows(&sessions).await;
                if holders.len() == 1 && holders[0][0].as_deref() != Some(first.as_str()) {
                    break;
                }
                assert!(Instant::now() < deadline, "the lock was not taken again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(matches!(
                lock().await.unwrap(),
                LockAttempt::InUse { holder: Some(_) }
            ));
        })
        .await;
        db.finish(outcome).await;
    }
}
