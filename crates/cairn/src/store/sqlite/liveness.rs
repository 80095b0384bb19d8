//! Liveness on SQLite: which process holds an executor id, and what became of the workflows
//! executing here.
//!
//! An executor id is held with an OS advisory lock on a small file beside the database
//! (`<database>.executor-<id>-<hash>.lock`), taken with `flock`-style semantics: the kernel
//! releases it when the holder's file is closed or its process dies, however it dies, so a
//! lock that is refused always has a live holder. The file stays in place (removing a lock
//! file races with the next process opening it); it holds the holder's process id, for the
//! message of a refused launch.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use super::{OnSqlite, SqliteStore, failed};
use crate::error::{Error, Result};
use crate::status::WorkflowState;
use crate::store::{ExecutionState, ExecutionStates, LockAttempt};

impl OnSqlite for ExecutionStates {
    const WRITES: bool = false;

    /// One statement: the ids go in as one JSON array, expanded by `json_each`.
    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<ExecutionState>> {
        if self.workflow_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::to_string(&self.workflow_ids).map_err(|source| Error::Serialize {
            what: "the workflow ids of a status check".to_owned(),
            source,
        })?;
        let fail = failed(self);
        let mut statement = conn
            .prepare_cached(
                "SELECT workflow_uuid, status, owner_xid FROM workflow_status \
                 WHERE workflow_uuid IN (SELECT value FROM json_each(?1))",
            )
            .map_err(&fail)?;
        let rows = statement
            .query_map([ids], |row| {
                Ok(ExecutionState {
                    workflow_id: row.get(0)?,
                    status: row
                        .get::<_, Option<String>>(1)?
                        .map(|s| WorkflowState::parse(&s)),
                    owner_xid: row.get(2)?,
                })
            })
            .map_err(&fail)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(&fail)
    }
}

/// A held executor lock: the open, locked file. Dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct LockFile {
    /// Kept open: closing it releases the lock.
    _file: File,
}

impl SqliteStore {
    /// Try once to take the lock of `executor_id` of application `app_name` (see the module
    /// doc). An in-memory database is private to this store: nothing to take. A file system
    /// that cannot lock files is logged and treated as taken, since refusing to launch there
    /// would make Cairn unusable on it.
    pub(crate) async fn try_lock_executor(
        &self,
        app_name: &str,
        executor_id: &str,
    ) -> Result<LockAttempt<Option<LockFile>>> {
        let Some(pool) = &self.readers else {
            return Ok(LockAttempt::Taken(None));
        };
        let path = lock_path(&pool.path, app_name, executor_id);
        tokio::task::spawn_blocking(move || try_lock(&path))
            .await
            .map_err(|e| Error::database("taking the executor lock file", e))?
    }
}

/// The lock file of `executor_id` of `app_name` beside the database file `db`: readable (the
/// id, made safe for a file name) and exact (a hash of both names, so no two ids share it).
fn lock_path(db: &Path, app_name: &str, executor_id: &str) -> PathBuf {
    let readable: String = executor_id
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let digest = Sha256::digest(format!("{app_name}\0{executor_id}").as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".executor-{readable}-{hash}.lock"));
    db.with_file_name(name)
}

/// Open (creating) the lock file and try to lock it without waiting.
fn try_lock(path: &Path) -> Result<LockAttempt<Option<LockFile>>> {
    let context = || format!("taking the executor lock file {}", path.display());
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::database(context(), e))?;
    match file.try_lock() {
        Ok(()) => {
            // For the message of a launch this lock refuses; the lock itself is what counts.
            let written = file
                .set_len(0)
                .and_then(|()| writeln!(file, "process {}", std::process::id()));
            if let Err(error) = written {
                tracing::debug!(path = %path.display(), %error, "could not note this process in the executor lock file");
            }
            Ok(LockAttempt::Taken(Some(LockFile { _file: file })))
        }
        Err(TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(path)
                .ok()
                .map(|text| text.trim().to_owned())
                .filter(|text| !text.is_empty())
                .map(|text| format!("{text}, holding {}", path.display()));
            Ok(LockAttempt::InUse { holder })
        }
        Err(TryLockError::Error(error)) if error.kind() == std::io::ErrorKind::Unsupported => {
            tracing::warn!(path = %path.display(), %error, "this file system cannot lock files: a second process launched with the same executor id will not be detected");
            Ok(LockAttempt::Taken(None))
        }
        Err(TryLockError::Error(error)) => Err(Error::database(context(), error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lock files name the executor id readably, and distinct ids (or applications) never
    /// share one, even when their readable parts are the same.
    #[test]
    fn lock_files_are_named_after_the_executor_id() {
        let db = Path::new("/data/shop.sqlite");
        let local = lock_path(db, "shop", "local");
        assert_eq!(local.parent(), Some(Path::new("/data")));
        let name = local.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("shop.sqlite.executor-local-"), "{name}");
        assert!(name.ends_with(".lock"), "{name}");
        assert_ne!(lock_path(db, "shop", "a/b"), lock_path(db, "shop", "a_b"));
        assert_ne!(
            lock_path(db, "shop", "local"),
            lock_path(db, "shop2", "local")
        );
        assert_eq!(local, lock_path(db, "shop", "local"));
    }

    /// A held lock file refuses a second holder (even in the same process) and names the
    /// holder; closing it frees the id.
    #[test]
    fn a_lock_file_has_one_holder_at_a_time() {
        let path = std::env::temp_dir().join(format!("cairn-lock-{}.lock", uuid::Uuid::new_v4()));
        let first = match try_lock(&path).unwrap() {
            LockAttempt::Taken(Some(file)) => file,
            other => panic!("the first lock was not taken: {other:?}"),
        };
        match try_lock(&path).unwrap() {
            LockAttempt::InUse { holder } => {
                let holder = holder.expect("the holder is named");
                assert!(
                    holder.contains(&format!("process {}", std::process::id())),
                    "{holder}"
                );
            }
            other => panic!("a second holder was let in: {other:?}"),
        }
        drop(first);
        assert!(matches!(
            try_lock(&path).unwrap(),
            LockAttempt::Taken(Some(_))
        ));
        let _ = std::fs::remove_file(&path);
    }
}
