//! Test support: every behaviour test runs once per backend, each on a fresh database.
#![allow(dead_code)]

#[cfg(all(feature = "sqlite", feature = "postgres"))]
pub mod appdb;
pub mod browser;
pub mod dbos;
pub mod pg_server;
pub mod proxy;
pub mod side_log;
pub mod ts;
pub mod worker;

use std::path::PathBuf;

/// Which system database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty system database for one test.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    name: String,
    file: Option<PathBuf>,
}

/// The Postgres server tests use: `$CAIRN_TEST_POSTGRES`, else the local trust-auth server.
pub fn postgres_server() -> String {
    std::env::var("CAIRN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

impl TestDb {
    /// A new database on `backend`. Postgres databases are created by Cairn itself at launch.
    pub fn new(backend: Backend) -> Self {
        let name = format!("cairn_t_{}", uuid::Uuid::new_v4().simple());
        match backend {
            Backend::Sqlite => {
                let file = std::env::temp_dir().join(format!("{name}.sqlite"));
                Self {
                    backend,
                    url: format!("sqlite:///{}", file.display()),
                    name,
                    file: Some(file),
                }
            }
            Backend::Postgres => Self {
                backend,
                url: format!("{}/{name}", postgres_server()),
                name,
                file: None,
            },
        }
    }

    /// A handle on an existing test database (for another thread or process of the same test).
    pub fn with_url(backend: Backend, url: String) -> Self {
        let file = url.strip_prefix("sqlite:///").map(PathBuf::from);
        Self {
            backend,
            url,
            name: String::new(),
            file,
        }
    }

    /// A builder for an application on this database.
    pub fn builder(&self, app_name: &str) -> cairn::CairnBuilder {
        cairn::Cairn::builder(app_name).database_url(&self.url)
    }

    /// Launch an application on this database.
    pub async fn launch(&self) -> cairn::Cairn {
        self.builder("cairn-test").launch().await.expect("launch")
    }

    /// Run one SQL statement on this database outside Cairn (to inspect or tamper with rows).
    pub async fn execute(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let path = self.file.clone().expect("sqlite file");
                let sql = sql.to_owned();
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite_open(&path);
                    conn.execute_batch(&sql).expect("sql");
                })
                .await
                .expect("join");
            }
            Backend::Postgres => {
                let client = pg_client(&self.url).await;
                client
                    .batch_execute(&format!("SET search_path TO dbos; {sql}"))
                    .await
                    .expect("sql");
            }
        }
    }

    /// Read one text value with a SQL query (first column of the first row).
    pub async fn query_text(&self, sql: &str) -> Option<String> {
        match self.backend {
            Backend::Sqlite => {
                let path = self.file.clone().expect("sqlite file");
                let sql = sql.to_owned();
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite_open(&path);
                    conn.query_row(&sql, [], |row| row.get::<_, Option<String>>(0))
                        .ok()
                        .flatten()
                })
                .await
                .expect("join")
            }
            Backend::Postgres => {
                let client = pg_client(&self.url).await;
                client
                    .batch_execute("SET search_path TO dbos")
                    .await
                    .expect("search_path");
                let rows = client.query(sql, &[]).await.expect("query");
                rows.first().and_then(|r| r.get::<_, Option<String>>(0))
            }
        }
    }

    /// Remove the database.
    pub async fn drop_db(self) {
        match self.backend {
            Backend::Sqlite => {
                if let Some(file) = &self.file {
                    for suffix in ["", "-wal", "-shm"] {
                        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
                    }
                    remove_executor_lock_files(file);
                }
            }
            Backend::Postgres => {
                let client = pg_client(&format!("{}/postgres", postgres_server())).await;
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

/// Remove the executor lock files Cairn leaves beside a SQLite database
/// (`<file>.executor-<id>-<hash>.lock`).
pub fn remove_executor_lock_files(file: &std::path::Path) {
    let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
        return;
    };
    let prefix = format!("{}.executor-", name.to_string_lossy());
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn rusqlite_open(path: &std::path::Path) -> sqlite::Connection {
    let conn = sqlite::Connection::open(path).expect("open sqlite");
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout");
    conn
}

pub use rusqlite as sqlite;

pub async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to postgres");
    tokio::spawn(connection);
    client
}

/// Define a behaviour test once and run it on both backends:
/// `both_backends!(async_fn_name)` creates `async_fn_name::sqlite` and `async_fn_name::postgres`,
/// each calling `async fn async_fn_name(db: &TestDb)` on a fresh database.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[cfg(feature = "sqlite")]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let db = $crate::common::TestDb::new($crate::common::Backend::Sqlite);
                    super::$name(&db).await;
                    db.drop_db().await;
                }

                #[cfg(feature = "postgres")]
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

/// Count events by key, process-wide (tests in one binary run concurrently, so each test
/// uses its own keys).
pub fn count(key: &str) -> usize {
    let mut counts = COUNTS.lock().unwrap();
    let n = counts.entry(key.to_owned()).or_insert(0);
    *n += 1;
    *n
}

/// How many times `count(key)` was called.
pub fn counted(key: &str) -> usize {
    COUNTS.lock().unwrap().get(key).copied().unwrap_or(0)
}

static COUNTS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, usize>>> =
    std::sync::LazyLock::new(Default::default);

/// A named gate a step can wait at: `reached` announces arrival, `release` opens it.
struct Gate {
    arrivals: tokio::sync::Semaphore,
    released: tokio::sync::watch::Sender<bool>,
}

static GATES: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Gate>>>,
> = std::sync::LazyLock::new(Default::default);

fn gate(key: &str) -> std::sync::Arc<Gate> {
    GATES
        .lock()
        .unwrap()
        .entry(key.to_owned())
        .or_insert_with(|| {
            std::sync::Arc::new(Gate {
                arrivals: tokio::sync::Semaphore::new(0),
                released: tokio::sync::watch::channel(false).0,
            })
        })
        .clone()
}

/// Announce that execution reached the gate `key`.
pub fn reached(key: &str) {
    gate(key).arrivals.add_permits(1);
}

/// Wait for one announcement at the gate `key` (fails the test after 60 s).
pub async fn wait_reached(key: &str) {
    let gate = gate(key);
    let permit = tokio::time::timeout(std::time::Duration::from_secs(60), gate.arrivals.acquire())
        .await
        .unwrap_or_else(|_| panic!("nothing reached gate {key}"))
        .expect("semaphore open");
    permit.forget();
}

/// Open the gate `key` for good.
pub fn release(key: &str) {
    gate(key).released.send_replace(true);
}

/// Wait until the gate `key` is opened.
pub async fn until_released(key: &str) {
    let mut receiver = gate(key).released.subscribe();
    let _ = receiver.wait_for(|open| *open).await;
}
