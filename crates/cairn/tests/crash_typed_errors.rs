//! Replays return exactly what the first run returned: a step's error comes back after a
//! SIGKILL and recovery as the same typed value, so a workflow that matches on it takes the
//! same branch; a workflow's own error reads back through a handle as the same value.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn::StartOptions;
use common::TestDb;

/// A domain error with data in its variants, and no `From<cairn::Error>`.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum PaymentError {
    #[error("card declined: {reason}")]
    Declined { reason: String, retry_after_s: u32 },
    #[error("suspected fraud on order {0}")]
    Fraud(u64),
}

fn log_line(line: &str) {
    common::side_log::append("CAIRN_TYPED_LOG", line);
}

/// Fails with a typed error; its body must run only once across the crash.
#[cairn::step]
async fn charge(order: u64) -> Result<String, PaymentError> {
    log_line(&format!("charge {order}"));
    Err(PaymentError::Declined {
        reason: "insufficient funds".to_owned(),
        retry_after_s: 30,
    })
}

/// Announces it was reached, then waits long enough to be killed inside it.
#[cairn::step]
async fn park(order: u64) -> Result<(), PaymentError> {
    log_line(&format!("parked {order}"));
    if std::env::var("CAIRN_TYPED_PARK").is_ok() {
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
    Ok(())
}

/// Branches on the variant of a step's error, then fails with a typed error of its own.
#[cairn::workflow]
async fn pay(order: u64) -> Result<String, PaymentError> {
    let branch = match charge(order).await {
        Ok(receipt) => receipt,
        Err(PaymentError::Declined {
            reason,
            retry_after_s,
        }) => format!("declined/{reason}/{retry_after_s}"),
        Err(PaymentError::Fraud(_)) => "fraud".to_owned(),
    };
    log_line(&format!("branch {order} {branch}"));
    park(order).await?;
    Err(PaymentError::Fraud(order))
}

/// The worker process: launch (recovering unfinished workflows), start the workflow by id,
/// and log how its error reads back through the handle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the worker process of the typed-error crash test, started by it"]
async fn typed_error_worker() {
    let url = std::env::var("CAIRN_TYPED_URL").expect("CAIRN_TYPED_URL");
    let app = cairn::Cairn::builder("typed-errors")
        .database_url(url)
        .launch()
        .await
        .expect("launch");
    let handle = app
        .start_with(StartOptions::id("typed-7"), pay, 7)
        .await
        .expect("start");
    let error = handle.result().await.expect_err("the workflow fails");
    let typed = error.application_error::<PaymentError>();
    log_line(&format!("result {typed:?}"));
    app.shutdown().await.expect("shutdown");
}

fn spawn_worker(db: &TestDb, log: &Path, park: bool) -> Child {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([
            "typed_error_worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("CAIRN_TYPED_URL", &db.url)
        .env("CAIRN_TYPED_LOG", log)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if park {
        command.env("CAIRN_TYPED_PARK", "1");
    }
    command.spawn().expect("spawn worker")
}

fn lines(log: &Path) -> Vec<String> {
    common::side_log::read(log)
}

/// A step's typed error replays as the same variant after SIGKILL and recovery (the
/// workflow takes the same branch, the step body is not run again), and the workflow's own
/// typed error reads back through its handle.
async fn a_recorded_error_replays_as_the_same_variant_after_a_kill(db: &TestDb) {
    let log: PathBuf =
        std::env::temp_dir().join(format!("cairn-typed-{}.log", uuid::Uuid::new_v4().simple()));
    let url = db.url.clone();
    let backend = db.backend;
    let log_for_thread = log.clone();
    tokio::task::spawn_blocking(move || {
        let db = TestDb::with_url(backend, url);
        // First run: the error is recorded, the branch taken, then the worker parks in a step.
        let mut worker = spawn_worker(&db, &log_for_thread, true);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !lines(&log_for_thread).iter().any(|l| l == "parked 7") {
            assert!(
                Instant::now() < deadline,
                "the worker never reached the park step"
            );
            assert!(
                worker.try_wait().expect("worker status").is_none(),
                "the worker exited early"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        worker.kill().expect("SIGKILL the worker");
        worker.wait().expect("reap the worker");
        // Second run: recovery replays `charge` from its record and finishes the workflow.
        let mut worker = spawn_worker(&db, &log_for_thread, false);
        let status = worker.wait().expect("second worker");
        assert!(status.success(), "the second worker failed: {status}");
    })
    .await
    .expect("crash driver");

    let lines = lines(&log);
    let _ = std::fs::remove_file(&log);
    let count = |prefix: &str| lines.iter().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(count("charge 7"), 1, "the failed step ran once: {lines:?}");
    let branches: Vec<&String> = lines.iter().filter(|l| l.starts_with("branch")).collect();
    assert_eq!(
        branches,
        vec![
            "branch 7 declined/insufficient funds/30",
            "branch 7 declined/insufficient funds/30"
        ],
        "both runs took the same branch: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("result {:?}", Some(PaymentError::Fraud(7)))),
        "the workflow's typed error read back: {lines:?}"
    );
}

both_backends!(a_recorded_error_replays_as_the_same_variant_after_a_kill);
