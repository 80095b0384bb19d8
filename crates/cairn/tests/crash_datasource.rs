//! Exactly-once transactions across a SIGKILL: a worker process runs a transactional step,
//! its transaction commits on the application database, and the process is killed before
//! the step's checkpoint reaches the system database (the test holds a lock there so that it
//! cannot). A new process recovers the workflow: the step returns the output recorded in the
//! transaction, its body does not run again, and the row exists once.

#![cfg(all(feature = "sqlite", feature = "postgres"))]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn::StartOptions;
use common::appdb::AppDb;
use common::{Backend, TestDb};

const WORKFLOW_ID: &str = "datasource-crash";

fn log_line(line: String) {
    common::side_log::append("CAIRN_DS_LOG", &line);
}

/// In the first worker: say the body is about to write, then wait for the test's go-ahead
/// (a line on stdin), given once the test holds the system database's lock.
fn wait_for_go() {
    log_line("exec".to_owned());
    if std::env::var_os("CAIRN_DS_GATE").is_none() {
        return;
    }
    let wait = || {
        println!("entered");
        std::io::stdout().flush().expect("flush stdout");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).expect("read go");
    };
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::task::block_in_place(wait),
        Err(_) => wait(),
    }
}

#[cairn::step]
async fn ship(id: i64) -> Result<i64, cairn::Error> {
    log_line(format!("ship {id}"));
    Ok(id)
}

#[cairn::workflow]
async fn order_then_ship(item: String) -> Result<i64, cairn::Error> {
    let orders = cairn::state::<AppDb>()?;
    let id = orders.insert_with(&item, false, wait_for_go).await?;
    ship(id).await
}

/// The worker process: recover, start the workflow (idempotent by id), log its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the worker process of the datasource crash test, started by it"]
async fn datasource_worker() {
    let url = std::env::var("CAIRN_DS_URL").expect("CAIRN_DS_URL");
    let orders = AppDb::at(&std::env::var("CAIRN_DS_APP").expect("CAIRN_DS_APP")).await;
    let app = cairn::Cairn::builder("datasource-crash")
        .database_url(url)
        .state(orders)
        .launch()
        .await
        .expect("launch");
    let item = std::env::var("CAIRN_DS_ITEM").expect("CAIRN_DS_ITEM");
    let handle = app
        .start_with(StartOptions::id(WORKFLOW_ID), order_then_ship, item)
        .await
        .expect("start");
    let id = handle.result().await.expect("result");
    log_line(format!("result {id}"));
    app.shutdown().await.expect("shutdown");
}

fn spawn_worker(db: &TestDb, orders: &AppDb, item: &str, log: &Path, gate: bool) -> Child {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([
            "datasource_worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("CAIRN_DS_URL", &db.url)
        .env("CAIRN_DS_APP", orders.location())
        .env("CAIRN_DS_ITEM", item)
        .env("CAIRN_DS_LOG", log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if gate {
        command.env("CAIRN_DS_GATE", "1");
    }
    command.spawn().expect("spawn worker")
}

/// A lock the test holds on the system database so that no checkpoint can be written.
enum CheckpointLock {
    Sqlite(common::sqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl CheckpointLock {
    async fn take(db: &TestDb) -> Self {
        match db.backend {
            Backend::Sqlite => {
                let path = db.url.strip_prefix("sqlite:///").expect("sqlite url");
                let conn = common::sqlite::Connection::open(path).expect("open");
                conn.execute_batch("BEGIN IMMEDIATE")
                    .expect("take the write lock");
                CheckpointLock::Sqlite(conn)
            }
            Backend::Postgres => {
                let client = common::pg_client(&db.url).await;
                client
                    .batch_execute("BEGIN; LOCK TABLE dbos.operation_outputs IN EXCLUSIVE MODE")
                    .await
                    .expect("lock operation_outputs");
                CheckpointLock::Postgres(client)
            }
        }
    }

    /// How many checkpoints the workflow has, seen from inside the lock's transaction.
    async fn checkpoints(&self) -> i64 {
        let sql = format!(
            "SELECT count(*) FROM {}operation_outputs WHERE workflow_uuid = '{WORKFLOW_ID}'",
            match self {
                CheckpointLock::Sqlite(_) => "",
                CheckpointLock::Postgres(_) => "dbos.",
            }
        );
        match self {
            CheckpointLock::Sqlite(conn) => conn.query_row(&sql, [], |r| r.get(0)).expect("count"),
            CheckpointLock::Postgres(client) => {
                client.query_one(&sql, &[]).await.expect("count").get(0)
            }
        }
    }

    async fn release(self) {
        match self {
            CheckpointLock::Sqlite(conn) => conn.execute_batch("ROLLBACK").expect("release"),
            CheckpointLock::Postgres(client) => {
                client.batch_execute("ROLLBACK").await.expect("release")
            }
        }
    }
}

/// Read the worker's stdout until it says `entered` (the test harness prints lines too).
fn wait_entered(worker: &mut Child) {
    let stdout = worker.stdout.take().expect("worker stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            // The harness may print `test … ` on the same line first.
            Some(Ok(line)) if line.trim_end().ends_with("entered") => break,
            Some(Ok(_)) => {}
            other => panic!("the worker ended before its transaction began: {other:?}"),
        }
    }
    // Keep draining so the worker never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
}

/// The transaction committed (its row is visible) while the checkpoint could not be
/// written; the worker is killed there, and the next one neither loses nor repeats it.
async fn a_transaction_committed_before_a_sigkill_is_not_run_again(db: &TestDb) {
    let orders = AppDb::fresh(db.backend).await;
    let log = std::env::temp_dir().join(format!("cairn-ds-{}.log", uuid::Uuid::new_v4().simple()));
    let item = format!("item-{}", uuid::Uuid::new_v4().simple());
    let rows = format!("SELECT count(*) FROM orders WHERE item = '{item}'");

    let mut worker = spawn_worker(db, &orders, &item, &log, true);
    let worker_entered = tokio::task::spawn_blocking(move || {
        wait_entered(&mut worker);
        worker
    });
    let mut worker = worker_entered.await.expect("join");
    let lock = CheckpointLock::take(db).await;
    worker
        .stdin
        .take()
        .expect("worker stdin")
        .write_all(b"go\n")
        .expect("go-ahead");

    let deadline = Instant::now() + Duration::from_secs(60);
    while orders.count(&rows).await == 0 {
        assert!(
            worker.try_wait().expect("worker status").is_none(),
            "the worker exited before it was killed"
        );
        assert!(Instant::now() < deadline, "the transaction never committed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        lock.checkpoints().await,
        0,
        "the checkpoint could not have been written yet"
    );
    worker.kill().expect("SIGKILL the worker");
    worker.wait().expect("reap the worker");
    lock.release().await;

    let mut second = spawn_worker(db, &orders, &item, &log, false);
    let status = tokio::task::spawn_blocking(move || second.wait())
        .await
        .expect("join")
        .expect("second worker");
    assert!(status.success(), "the recovering worker failed: {status}");

    let lines = common::side_log::read(&log);
    let _ = std::fs::remove_file(&log);
    assert_eq!(
        lines.iter().filter(|l| *l == "exec").count(),
        1,
        "the committed transaction's body ran again: {lines:?}"
    );
    assert_eq!(orders.count(&rows).await, 1, "the row exists exactly once");
    let id = orders
        .count(&format!("SELECT id FROM orders WHERE item = '{item}'"))
        .await;
    assert!(
        lines.contains(&format!("result {id}")),
        "the workflow returned the recorded id {id}: {lines:?}"
    );
    assert_eq!(
        orders.completion_output(WORKFLOW_ID, 1).await.as_deref(),
        Some(id.to_string().as_str())
    );
    orders.drop_db().await;
}

both_backends!(a_transaction_committed_before_a_sigkill_is_not_run_again);
