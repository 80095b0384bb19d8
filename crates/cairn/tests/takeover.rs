//! Takeover of a dead executor's work with real processes: three worker processes, each under
//! its own executor id, run workflows that checkpoint a step and then wait for a message. The
//! test SIGKILLs one of them and, without restarting it, checks that the other two take its
//! workflows over (each by exactly one of them, within a few takeover intervals), that every
//! workflow then completes, and that no step body ran twice.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn::{Client, StartOptions};
use common::TestDb;

/// The workers' executor ids; the first is killed.
const EXECUTORS: [&str; 3] = ["tk-a", "tk-b", "tk-c"];
/// Workflows each worker starts.
const PER_WORKER: usize = 4;
/// How often the workers look for dead executors' work.
const INTERVAL: Duration = Duration::from_millis(500);
/// How long the killed worker's workflows may take to move: twenty intervals, generous for a
/// loaded machine (on Postgres the server must also notice the closed connection); about one
/// interval is the norm.
const TAKEOVER_BOUND: Duration = Duration::from_secs(10);

/// Append one line to the side file (one `write` call, so lines never interleave).
fn log_line(line: String) {
    common::side_log::append("CAIRN_TAKEOVER_LOG", &line);
}

/// This worker's executor id.
fn me() -> String {
    std::env::var("CAIRN_TAKEOVER_EXECUTOR").unwrap_or_default()
}

/// A step that logs its execution and answers the executor that ran it.
#[cairn::step]
async fn work(id: String, step: u32) -> Result<String, cairn::Error> {
    log_line(format!("exec {id} {step} {}", me()));
    Ok(me())
}

/// A step, then a wait for `go` (where the killed worker's workflows are when it dies),
/// then another step; answers who ran each step and the message.
#[cairn::workflow]
async fn blocked(id: String) -> Result<String, cairn::Error> {
    let first = work(id.clone(), 1).await?;
    log_line(format!("checkpointed {id} {}", me()));
    let go: Option<String> = cairn::recv("go", Duration::from_secs(600)).await?;
    let second = work(id, 2).await?;
    Ok(format!("{first} {second} {}", go.unwrap_or_default()))
}

/// The worker process: launch under its executor id with a short takeover interval, start its
/// workflows, then run (its own workflows and any taken over) until its stdin closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the worker process of the takeover test, started by it"]
async fn takeover_worker() {
    let url = std::env::var("CAIRN_TAKEOVER_URL").expect("CAIRN_TAKEOVER_URL");
    let app = cairn::Cairn::builder("takeover-test")
        .database_url(url)
        .executor_id(me())
        .app_version("v1")
        .takeover_interval(INTERVAL)
        .launch()
        .await
        .expect("launch");
    for n in 0..PER_WORKER {
        let id = format!("{}-{n}", me());
        app.start_with(StartOptions::id(id.clone()), blocked, id)
            .await
            .expect("start");
    }
    tokio::task::spawn_blocking(|| {
        let mut rest = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut rest);
    })
    .await
    .expect("stdin");
    app.shutdown().await.expect("shutdown");
}

fn spawn_worker(db: &TestDb, log: &Path, executor_id: &str) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "takeover_worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("CAIRN_TAKEOVER_URL", &db.url)
        .env("CAIRN_TAKEOVER_LOG", log)
        .env("CAIRN_TAKEOVER_EXECUTOR", executor_id)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn worker")
}

/// Poll `check` (every 20 ms) until it holds, failing with `what` after `limit`.
async fn eventually<F: AsyncFnMut() -> bool>(limit: Duration, what: &str, mut check: F) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An integer a query answers (cast to text, which both databases read alike).
async fn number(db: &TestDb, sql: &str) -> i64 {
    db.query_text(sql)
        .await
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{sql} answered no number"))
}

/// A killed worker's waiting workflows are taken over by the two live workers without
/// restarting it — each by exactly one of them, within a bounded time — and every workflow
/// completes with each step body run exactly once.
async fn a_killed_workers_workflows_complete_on_the_others_without_a_restart(db: &TestDb) {
    let log = std::env::temp_dir().join(format!(
        "cairn-takeover-{}.log",
        uuid::Uuid::new_v4().simple()
    ));
    let mut workers: Vec<Child> = EXECUTORS
        .iter()
        .map(|id| spawn_worker(db, &log, id))
        .collect();
    let total = EXECUTORS.len() * PER_WORKER;
    let checkpointed = || {
        common::side_log::read(&log)
            .iter()
            .filter(|l| l.starts_with("checkpointed "))
            .count()
    };
    eventually(
        Duration::from_secs(120),
        "every workflow checkpoints its first step",
        async || checkpointed() == total,
    )
    .await;

    let victim = EXECUTORS[0];
    let mut killed = workers.remove(0);
    killed.kill().expect("SIGKILL the worker");
    killed.wait().expect("reap the worker");
    let killed_at = Instant::now();
    let victims_left = format!(
        "SELECT CAST(count(*) AS TEXT) FROM workflow_status WHERE executor_id = '{victim}'"
    );
    eventually(
        TAKEOVER_BOUND,
        "the killed worker's workflows move to a live worker",
        async || number(db, &victims_left).await == 0,
    )
    .await;
    eprintln!(
        "taken over {:?} after the kill (interval {INTERVAL:?})",
        killed_at.elapsed()
    );

    let client = Client::connect(&db.url).await.expect("client");
    for executor in EXECUTORS {
        for n in 0..PER_WORKER {
            client
                .send(&format!("{executor}-{n}"), "go", &"go")
                .await
                .expect("send go");
        }
    }
    let succeeded =
        "SELECT CAST(count(*) AS TEXT) FROM workflow_status WHERE status = 'SUCCESS'".to_owned();
    eventually(
        Duration::from_secs(120),
        "every workflow succeeds",
        async || number(db, &succeeded).await == total as i64,
    )
    .await;

    for n in 0..PER_WORKER {
        let id = format!("{victim}-{n}");
        let output: String = client
            .retrieve::<String>(&id)
            .await
            .expect("retrieve")
            .result()
            .await
            .expect("result");
        let [first, second, go] = output.split(' ').collect::<Vec<_>>()[..] else {
            panic!("output of {id}: {output}");
        };
        assert_eq!(go, "go", "{id} received its message");
        assert_eq!(first, victim, "the first step of {id} ran before the kill");
        assert!(
            EXECUTORS[1..].contains(&second),
            "{id} finished on {second}"
        );
        let row = db
            .query_text(&format!(
                "SELECT executor_id || ' ' || CAST(recovery_attempts AS TEXT) \
                 FROM workflow_status WHERE workflow_uuid = '{id}'"
            ))
            .await
            .expect("row");
        // One start and one takeover: a second taker would have counted another attempt.
        assert_eq!(row, format!("{second} 2"), "executor and attempts of {id}");
    }
    for executor in &EXECUTORS[1..] {
        let own = format!(
            "SELECT CAST(count(*) AS TEXT) FROM workflow_status \
             WHERE executor_id = '{executor}' AND workflow_uuid LIKE '{executor}-%' \
             AND recovery_attempts = 1"
        );
        assert_eq!(number(db, &own).await, PER_WORKER as i64);
    }
    client.close().await;

    for mut worker in workers {
        drop(worker.stdin.take());
        let status = worker.wait().expect("worker exit");
        assert!(status.success(), "a live worker failed: {status}");
    }
    let lines = common::side_log::read(&log);
    let _ = std::fs::remove_file(&log);
    let mut runs: HashMap<(String, String), Vec<String>> = HashMap::new();
    for line in lines.iter().filter(|l| l.starts_with("exec ")) {
        let parts: Vec<&str> = line.split(' ').collect();
        runs.entry((parts[1].to_owned(), parts[2].to_owned()))
            .or_default()
            .push(parts[3].to_owned());
    }
    for executor in EXECUTORS {
        for n in 0..PER_WORKER {
            for step in ["1", "2"] {
                let key = (format!("{executor}-{n}"), step.to_owned());
                let ran = runs.get(&key).map(Vec::len).unwrap_or(0);
                assert_eq!(
                    ran, 1,
                    "step {step} of {executor}-{n} ran {ran} times: {runs:?}"
                );
            }
        }
    }
    assert_eq!(runs.len(), total * 2, "{runs:?}");
}

both_backends!(a_killed_workers_workflows_complete_on_the_others_without_a_restart);
