//! Takeover: the `PENDING` workflows of an executor whose process is gone, claimed by a live
//! one without waiting for that executor id to be launched again.
//!
//! An executor is alive while its liveness lock is held (see [`Store::lock_executor`]).
//! [`PendingExecutors`] lists the other executor ids that own `PENDING` workflows of an
//! application version; [`Store::take_over`] tries each one's lock and, only if it is free,
//! moves its workflows to the taker in the same breath. The lock try is the mutual exclusion:
//! of several live executors trying at once, one gets the lock and claims; a process relaunched
//! under the dead id meanwhile either holds the lock first (nothing is taken) or waits for the
//! takeover to end and then finds nothing left to recover.

#[cfg(feature = "sqlite")]
use super::LockAttempt;
use super::{Backend, Operation, Reclaimed, Store};
use crate::error::Result;

/// The executor ids other than `except` that own `PENDING` workflows of version `app_version`
/// (rows whose `application_name` is ours or NULL), each once, sorted. Postgres leaves out the
/// ids whose lock it sees held (one read of `pg_locks`); SQLite cannot see another process's
/// file locks without trying them, so it lists them all. A listed id may still be alive:
/// [`Store::take_over`] decides.
#[derive(Debug, Clone)]
pub(crate) struct PendingExecutors {
    /// The application whose executor locks count (the lock is per application and id);
    /// only Postgres reads locks it does not try.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub app_name: String,
    pub app_version: String,
    pub application_name: Option<String>,
    /// The caller's own executor id, never listed.
    pub except: String,
}

impl Operation for PendingExecutors {
    type Output = Vec<String>;
    fn describe(&self) -> String {
        format!(
            "listing the executors with pending workflows of version {}",
            self.app_version
        )
    }
}

/// Claim the `PENDING` workflows of executor `from` (version `app_version`, rows whose
/// `application_name` is ours or NULL) for executor `to`, as recovery claims its own: each
/// gets `owner_xid = new_owner`, `recovery_attempts + 1` and `updated_at = now_ms`, and also
/// `executor_id = to` — the rows become the taker's, so a later relaunch of `from` or another
/// taker finds nothing to fight over, and the taker's own relaunch recovers them. They come
/// back with their checkpoints, ordered by `created_at` then id.
///
/// Run it with [`Store::take_over`], which claims nothing while `from`'s liveness lock is held.
///
/// Retry safety: a row already `PENDING` under `to` with `owner_xid = new_owner` is this very
/// takeover, committed unseen: it is returned again and not counted as another attempt.
#[derive(Debug, Clone)]
pub(crate) struct TakeOverPending {
    /// The application whose executor lock of `from` is tried.
    pub app_name: String,
    pub from: String,
    pub to: String,
    pub app_version: String,
    pub application_name: Option<String>,
    pub new_owner: String,
    pub now_ms: i64,
}

impl Operation for TakeOverPending {
    type Output = Vec<Reclaimed>;
    fn describe(&self) -> String {
        format!(
            "taking over the pending workflows of executor {} version {}",
            self.from, self.app_version
        )
    }
}

impl Store {
    /// Take over the `PENDING` workflows of a dead executor (see [`TakeOverPending`]): nothing
    /// if its liveness lock is held (it is alive, relaunched, or another executor is taking
    /// it over right now). Postgres tries the lock inside the claiming statement
    /// (`pg_try_advisory_xact_lock` on the key the holder's session lock uses, released at its
    /// commit); SQLite tries the lock file and holds it while the claim commits. Where a
    /// lock cannot be tried (an in-memory database, a file system without file locks),
    /// nothing is taken.
    pub(crate) async fn take_over(&self, op: TakeOverPending) -> Result<Vec<Reclaimed>> {
        match &self.backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => self.run(op).await,
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => {
                let held = match self.try_lock_executor(&op.app_name, &op.from).await? {
                    LockAttempt::Taken(Some(held)) => held,
                    LockAttempt::Taken(None) | LockAttempt::InUse { .. } => {
                        return Ok(Vec::new());
                    }
                };
                let taken = self.run(op).await;
                held.release().await;
                taken
            }
        }
    }
}
