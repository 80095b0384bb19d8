//! Test support for the `cairn` binary: a fresh system database per test on each backend,
//! and a way to run the built binary against it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;

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
