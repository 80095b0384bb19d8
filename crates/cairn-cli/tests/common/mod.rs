//! Test support for the `cairn` binary: a fresh system database per test on each backend,
//! a way to run the built binary against it, the workflows the tests populate databases
//! with, and DBOS's Python.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cairn::{Error, PortableError};

/// Which system database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty system database for one test: a SQLite file in a directory of its own, or
/// a Postgres database that does not exist yet (Cairn creates it), dropped afterwards.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    name: String,
    dir: Option<PathBuf>,
}

/// The Postgres server tests use: `$CAIRN_TEST_POSTGRES`, else the local trust-auth server.
pub fn postgres_server() -> String {
    std::env::var("CAIRN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

impl TestDb {
    /// A new database on `backend`.
    pub fn new(backend: Backend) -> Self {
        let name = format!("cairn_cli_{}", uuid::Uuid::new_v4().simple());
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir).expect("create the test directory");
                let file = dir.join("system.sqlite");
                Self {
                    backend,
                    url: format!("sqlite:///{}", file.display()),
                    name,
                    dir: Some(dir),
                }
            }
            Backend::Postgres => Self {
                backend,
                url: format!("{}/{name}", postgres_server()),
                name,
                dir: None,
            },
        }
    }

    /// The test's own directory (SQLite), else the system temp directory: a working
    /// directory for the binary.
    pub fn dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(std::env::temp_dir)
    }

    /// A standalone client on this database.
    pub async fn client(&self) -> cairn::Client {
        cairn::Client::connect(&self.url)
            .await
            .expect("connect a client")
    }

    /// Remove the database.
    pub async fn drop_db(self) {
        match self.backend {
            Backend::Sqlite => {
                if let Some(dir) = &self.dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
            Backend::Postgres => {
                let admin = format!("{}/postgres", postgres_server());
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!(
                            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                            self.name
                        ))
                        .await;
                }
            }
        }
    }

    /// Run one SQL statement on this database outside Cairn (to tamper with it).
    pub async fn execute(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let path = self.url.trim_start_matches("sqlite:///").to_owned();
                let sql = sql.to_owned();
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open(path).expect("open sqlite");
                    conn.execute_batch(&sql).expect("sql");
                })
                .await
                .expect("join");
            }
            Backend::Postgres => {
                let (client, connection) =
                    tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
                        .await
                        .expect("connect to postgres");
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("SET search_path TO dbos; {sql}"))
                    .await
                    .expect("sql");
            }
        }
    }

    /// Run `cairn --db <this database> args…`.
    pub async fn cairn(&self, args: &[&str]) -> Run {
        let mut all = vec!["--db", &self.url];
        all.extend_from_slice(args);
        cairn_in(&self.dir(), &all).await
    }

    /// Run `cairn --db <this database> --json args…` and parse its one JSON document.
    pub async fn cairn_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let run = self.cairn(&all).await;
        run.assert_ok();
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout of {args:?} is not one JSON document ({e}):\n{}",
                run.stdout
            )
        })
    }
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panic unless it exited 0.
    pub fn assert_ok(&self) {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
    }

    /// Assert it exited with `code`.
    pub fn assert_code(&self, code: i32) {
        assert_eq!(self.code, code, "exit code: {self:#?}");
    }

    /// Assert it failed with `code` and one `error: …` line on stderr containing `needle`.
    pub fn assert_fails(&self, code: i32, needle: &str) {
        assert_eq!(self.code, code, "exit code: {self:#?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {self:#?}");
        assert!(lines[0].starts_with("error: "), "{self:#?}");
        assert!(lines[0].contains(needle), "`{needle}` in stderr: {self:#?}");
    }
}

/// Run the built `cairn` in `dir` with `args`, without `DBOS_SYSTEM_DATABASE_URL` and with
/// stdin closed.
pub async fn cairn_in(dir: &std::path::Path, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .current_dir(dir)
        .env_remove("DBOS_SYSTEM_DATABASE_URL")
        .env_remove("CAIRN_DASHBOARD_TOKEN")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run cairn");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Define a test once and run it on both backends: `both_backends!(name)` creates
/// `name::sqlite` and `name::postgres`, each calling `async fn name(db: &TestDb)` on a fresh
/// database that is dropped afterwards.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let db = $crate::common::TestDb::new($crate::common::Backend::Sqlite);
                    super::$name(&db).await;
                    db.drop_db().await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let db = $crate::common::TestDb::new($crate::common::Backend::Postgres);
                    super::$name(&db).await;
                    db.drop_db().await;
                }
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// The workflows tests populate databases with
// ---------------------------------------------------------------------------------------------

/// Doubles `n`.
#[cairn::step]
pub async fn double(n: u32) -> Result<u32, cairn::Error> {
    Ok(n * 2)
}

/// Always declines card `n`.
#[cairn::step]
pub async fn charge(n: u32) -> Result<u32, cairn::Error> {
    Err(Error::Application(PortableError::new(
        "CardDeclined",
        format!("card {n} declined"),
    )))
}

/// Two steps, then success.
#[cairn::workflow]
pub async fn checkout(n: u32) -> Result<u32, cairn::Error> {
    let doubled = double(n).await?;
    double(doubled).await
}

/// One step, then a failing one.
#[cairn::workflow]
pub async fn declined(n: u32) -> Result<u32, cairn::Error> {
    let doubled = double(n).await?;
    charge(doubled).await
}

/// Waits (PENDING) for a message that never comes.
#[cairn::workflow]
pub async fn waiting() -> Result<Option<String>, cairn::Error> {
    cairn::recv("never", Duration::from_secs(600)).await
}

/// Run `ok-1` (`checkout(7)`, which succeeds) and `fail-1` (`declined(3)`, which fails in its
/// second step) on `app`, each to its end.
pub async fn finish_ok_and_fail(app: &cairn::Cairn) {
    let ok = app
        .start_with(cairn::StartOptions::id("ok-1"), checkout, 7)
        .await
        .expect("start ok-1");
    assert_eq!(ok.result().await.expect("ok-1 succeeds"), 28);
    let failed = app
        .start_with(cairn::StartOptions::id("fail-1"), declined, 3)
        .await
        .expect("start fail-1");
    assert!(failed.result().await.is_err());
}

/// Enqueue `paid-1` (`checkout(1)`) on `app`'s served queue `payments` and wait for its
/// success.
pub async fn finish_paid(app: &cairn::Cairn) {
    let paid = app
        .enqueue_with(cairn::EnqueueOptions::id("paid-1"), "payments", checkout, 1)
        .await
        .expect("enqueue paid-1");
    assert_eq!(paid.result().await.expect("paid-1 succeeds"), 4);
}

// ---------------------------------------------------------------------------------------------
// DBOS's Python
// ---------------------------------------------------------------------------------------------

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The Python with dbos 3.4 installed: `$CAIRN_DBOS_PYTHON`, else (outside CI) the venv
/// `scripts/python-venv.sh` makes. Never a silent skip: without DBOS these tests fail.
pub fn dbos_python() -> PathBuf {
    if let Some(python) = std::env::var_os("CAIRN_DBOS_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(python);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "CAIRN_DBOS_PYTHON is not set: in CI the DBOS CLI tests need it (run them through scripts/test.sh, which sets it)"
        );
    }
    let default = repo_root().join("target/dbos-venv/bin/python");
    if !default.exists() {
        panic!(
            "no Python with DBOS 3.4 for the DBOS CLI tests: run scripts/python-venv.sh (it creates {}), \
             or set CAIRN_DBOS_PYTHON to a python that has dbos==3.4.0",
            default.display()
        );
    }
    default
}
