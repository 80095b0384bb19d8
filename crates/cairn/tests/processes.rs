//! Many processes on one system database: an executor id has one live process at a time, so
//! no step runs twice because two processes recovered the same workflows; and a workflow
//! waiting here stops when another process cancels, resumes or finishes it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn::{Error, StartOptions};
use common::{TestDb, counted};

const APP: &str = "processes-test";

/// How many workflows the first worker process leaves in flight.
const WORKFLOWS: u64 = 5;

// ---- Worker processes ---------------------------------------------------------------------

/// Append one line to the side file the test reads.
fn log_line(line: String) {
    common::side_log::append("CAIRN_PROC_LOG", &line);
}

/// Which worker process this is (1, 2, …), as the test numbered it.
fn incarnation() -> String {
    std::env::var("CAIRN_PROC_RUN").unwrap_or_default()
}

#[cairn::step]
async fn first_step(workflow: u64) -> Result<u64, Error> {
    log_line(format!("first {workflow} {}", incarnation()));
    Ok(workflow)
}

#[cairn::step]
async fn second_step(workflow: u64) -> Result<u64, Error> {
    log_line(format!("second {workflow} {}", incarnation()));
    if incarnation() == "1" {
        // The first process stays inside this step (in flight) until it is killed.
        std::future::pending::<()>().await;
    }
    Ok(workflow * 10)
}

#[cairn::workflow]
async fn two_steps(workflow: u64) -> Result<u64, Error> {
    let value = first_step(workflow).await?;
    second_step(value).await
}

/// A worker process. `CAIRN_PROC_MODE`: `start` starts the workflows and stays (until
/// killed); `finish` waits for them (which recovery at launch resumes) and logs their
/// results; `launch` only launches. Every process logs under which executor id it launched,
/// or that its launch was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a worker process of the multi-process tests, started by them"]
async fn processes_worker() {
    let url = std::env::var("CAIRN_PROC_URL").expect("CAIRN_PROC_URL");
    let mode = std::env::var("CAIRN_PROC_MODE").expect("CAIRN_PROC_MODE");
    let unique = std::env::var("CAIRN_PROC_UNIQUE").is_ok();
    let launched = cairn::Cairn::builder(APP)
        .database_url(url)
        .unique_executor_id_if_in_use(unique)
        .launch()
        .await;
    let app = match launched {
        Ok(app) => app,
        Err(Error::ExecutorIdInUse { executor_id, .. }) => {
            log_line(format!("refused {executor_id} {}", incarnation()));
            return;
        }
        Err(error) => panic!("launch: {error}"),
    };
    log_line(format!("launched {} {}", app.executor_id(), incarnation()));
    match mode.as_str() {
        "start" => {
            for workflow in 0..WORKFLOWS {
                let options = StartOptions::id(format!("proc-{workflow}"));
                app.start_with(options, two_steps, workflow)
                    .await
                    .expect("start");
            }
            std::future::pending::<()>().await;
        }
        "finish" => {
            for workflow in 0..WORKFLOWS {
                let handle = app
                    .retrieve::<u64>(&format!("proc-{workflow}"))
                    .await
                    .expect("retrieve");
                let output = handle.result().await.expect("result");
                log_line(format!("result {workflow} {output}"));
            }
        }
        "launch" => {}
        other => panic!("unknown mode {other}"),
    }
    app.shutdown().await.expect("shutdown");
}

/// Start worker process number `run` in `mode` (with the default executor id: the test's own
/// environment is not passed on).
fn spawn_worker(url: &str, log: &Path, run: usize, mode: &str, unique: bool) -> Child {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([
            "processes_worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env_remove("DBOS__VMID")
        .env("CAIRN_PROC_URL", url)
        .env("CAIRN_PROC_LOG", log)
        .env("CAIRN_PROC_RUN", run.to_string())
        .env("CAIRN_PROC_MODE", mode)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if unique {
        command.env("CAIRN_PROC_UNIQUE", "1");
    }
    command.spawn().expect("spawn a worker")
}

/// Wait (up to a generous limit) for a worker to exit, and check it succeeded.
fn wait_exit(mut worker: Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = worker.try_wait().expect("worker status") {
            assert!(status.success(), "{what} failed: {status}");
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until the side file has a line satisfying `done`, while `worker` stays alive.
fn wait_for_lines(log: &Path, worker: &mut Child, done: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done(&common::side_log::read(log)) {
        assert!(
            worker.try_wait().expect("worker status").is_none(),
            "the first worker exited"
        );
        assert!(
            Instant::now() < deadline,
            "the first worker made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The side file's lines whose words start with `words`, without those words.
fn lines_after(lines: &[String], words: &str) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(&format!("{words} ")))
        .map(str::to_owned)
        .collect()
}

/// While a process runs as the default executor id, a second one launched without an id is
/// refused (so it cannot recover the first one's in-flight workflows and run their current
/// steps again), and one allowed a fresh id runs under that id and recovers nothing. Once
/// the first process is SIGKILLed the id is free at once: the next process launches under
/// it, recovers the workflows, and every step that had finished ran exactly once.
async fn a_second_process_with_the_same_executor_id_is_refused_until_the_first_dies(db: &TestDb) {
    let log: PathBuf =
        std::env::temp_dir().join(format!("cairn-proc-{}.log", uuid::Uuid::new_v4().simple()));
    let url = db.url.clone();
    let side = log.clone();
    tokio::task::spawn_blocking(move || {
        let mut first = spawn_worker(&url, &side, 1, "start", false);
        wait_for_lines(&side, &mut first, |lines| {
            lines_after(lines, "second").len() == WORKFLOWS as usize
        });

        wait_exit(
            spawn_worker(&url, &side, 2, "finish", false),
            "the second worker",
        );
        wait_exit(
            spawn_worker(&url, &side, 3, "launch", true),
            "the third worker",
        );
        assert!(
            first.try_wait().expect("worker status").is_none(),
            "the first worker is still alive"
        );

        first.kill().expect("SIGKILL the first worker");
        first.wait().expect("reap the first worker");
        wait_exit(
            spawn_worker(&url, &side, 4, "finish", false),
            "the fourth worker",
        );
    })
    .await
    .expect("the process driver");

    let lines = common::side_log::read(&log);
    let _ = std::fs::remove_file(&log);
    eprintln!("{lines:#?}");
    assert_eq!(
        lines_after(&lines, "launched local"),
        ["1", "4"],
        "{lines:?}"
    );
    assert_eq!(lines_after(&lines, "refused local"), ["2"], "{lines:?}");
    let fresh: Vec<String> = lines_after(&lines, "launched")
        .into_iter()
        .filter(|l| l.ends_with(" 3"))
        .collect();
    assert_eq!(fresh.len(), 1, "{lines:?}");
    assert!(
        fresh[0].starts_with("local-"),
        "the third process runs under a fresh id: {fresh:?}"
    );
    for workflow in 0..WORKFLOWS {
        let first_runs: Vec<String> = lines_after(&lines, &format!("first {workflow}"));
        assert_eq!(first_runs, ["1"], "step 1 of workflow {workflow} ran once");
        let second_runs: Vec<String> = lines_after(&lines, &format!("second {workflow}"));
        assert_eq!(
            second_runs,
            ["1", "4"],
            "step 2 of workflow {workflow} ran in the first process and, after it died, in its successor only"
        );
        assert_eq!(
            lines_after(&lines, &format!("result {workflow}")),
            [(workflow * 10).to_string()]
        );
    }
}

// ---- Several applications in the test process ---------------------------------------------

/// A per-test key for gates and counters (tests of one binary run concurrently).
fn key(db: &TestDb, what: &str) -> String {
    format!("{what}@{}", db.url)
}

/// Announces `<key>/unwound` if dropped while armed: the workflow's body was dropped there.
struct Unwound {
    key: String,
    armed: bool,
}

impl Drop for Unwound {
    fn drop(&mut self) {
        if self.armed {
            common::reached(&format!("{}/unwound", self.key));
        }
    }
}

/// Waits for a message for an hour; counts the times the wait returned into it.
#[cairn::workflow]
async fn parked_in_recv(key: String) -> Result<Option<String>, Error> {
    let mut unwound = Unwound {
        key: key.clone(),
        armed: true,
    };
    common::reached(&format!("{key}/parked"));
    let message = cairn::recv::<String>("wake", Duration::from_secs(3600)).await?;
    common::count(&format!("{key}/returned"));
    unwound.armed = false;
    Ok(message)
}

/// Two applications on the test database as two processes would be: `here` runs the
/// workflow, `elsewhere` acts on it.
async fn two_applications(db: &TestDb) -> (cairn::Cairn, cairn::Cairn) {
    let here = db
        .builder(APP)
        .executor_id("here")
        .launch()
        .await
        .expect("launch here");
    let elsewhere = db
        .builder(APP)
        .executor_id("elsewhere")
        .launch()
        .await
        .expect("launch elsewhere");
    (here, elsewhere)
}

/// A workflow parked in `recv(…, 1 hour)` here stops soon after another application cancels
/// it: its body is dropped at the wait, the wait never returns into it, and its result is
/// `Cancelled`.
async fn a_workflow_waiting_here_stops_when_another_application_cancels_it(db: &TestDb) {
    let k = key(db, "cancelled-elsewhere");
    let (here, elsewhere) = two_applications(db).await;
    let handle = here.start(parked_in_recv, k.clone()).await.unwrap();
    common::wait_reached(&format!("{k}/parked")).await;
    assert!(elsewhere.cancel(handle.id()).await.unwrap());
    common::wait_reached(&format!("{k}/unwound")).await;
    match handle.result().await {
        Err(Error::Cancelled(id)) => assert_eq!(id, handle.id()),
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert_eq!(counted(&format!("{k}/returned")), 0);
    elsewhere.shutdown().await.unwrap();
    here.shutdown().await.unwrap();
}

/// The same for a cancel written in plain SQL, as `dbos workflow cancel` writes it.
async fn a_workflow_waiting_here_stops_when_it_is_cancelled_in_sql(db: &TestDb) {
    let k = key(db, "cancelled-in-sql");
    let here = db.launch().await;
    let handle = here.start(parked_in_recv, k.clone()).await.unwrap();
    common::wait_reached(&format!("{k}/parked")).await;
    db.execute(&format!(
        "UPDATE workflow_status SET status = 'CANCELLED', queue_name = NULL, \
         deduplication_id = NULL, started_at_epoch_ms = NULL \
         WHERE workflow_uuid = '{}'",
        handle.id()
    ))
    .await;
    common::wait_reached(&format!("{k}/unwound")).await;
    match handle.result().await {
        Err(Error::Cancelled(id)) => assert_eq!(id, handle.id()),
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert_eq!(counted(&format!("{k}/returned")), 0);
    here.shutdown().await.unwrap();
}

/// A workflow parked here stops when another application resumes it (so another execution
/// owns it), and the execution that finishes it is the only one whose wait returned.
async fn a_workflow_waiting_here_stops_when_another_process_resumes_and_finishes_it(db: &TestDb) {
    let k = key(db, "resumed-elsewhere");
    let (here, elsewhere) = two_applications(db).await;
    let handle = here.start(parked_in_recv, k.clone()).await.unwrap();
    common::wait_reached(&format!("{k}/parked")).await;
    elsewhere
        .resume::<Option<String>>(handle.id())
        .await
        .unwrap();
    common::wait_reached(&format!("{k}/unwound")).await;
    // The resumed execution (in whichever application dequeued it) waits in turn.
    common::wait_reached(&format!("{k}/parked")).await;
    elsewhere.send(handle.id(), "wake", "hello").await.unwrap();
    assert_eq!(handle.result().await.unwrap().as_deref(), Some("hello"));
    assert_eq!(counted(&format!("{k}/returned")), 1);
    elsewhere.shutdown().await.unwrap();
    here.shutdown().await.unwrap();
}

/// An executor id chosen explicitly and held by a live application is refused to a second
/// one, even one allowed a fresh id (that applies to the default id only); another id is
/// free; and once the holder shuts down, the id can be taken again.
async fn an_executor_id_in_use_is_refused_until_its_holder_shuts_down(db: &TestDb) {
    let first = db
        .builder(APP)
        .executor_id("worker-1")
        .launch()
        .await
        .unwrap();
    let refused = db
        .builder(APP)
        .executor_id("worker-1")
        .unique_executor_id_if_in_use(true)
        .launch()
        .await;
    match refused {
        Err(Error::ExecutorIdInUse { executor_id, .. }) => assert_eq!(executor_id, "worker-1"),
        other => panic!("expected ExecutorIdInUse, got {other:?}"),
    }
    let other = db
        .builder(APP)
        .executor_id("worker-2")
        .launch()
        .await
        .unwrap();
    first.shutdown().await.unwrap();
    let again = db
        .builder(APP)
        .executor_id("worker-1")
        .launch()
        .await
        .unwrap();
    assert_eq!(again.executor_id(), "worker-1");
    again.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
}

both_backends!(
    a_second_process_with_the_same_executor_id_is_refused_until_the_first_dies,
    a_workflow_waiting_here_stops_when_another_application_cancels_it,
    a_workflow_waiting_here_stops_when_it_is_cancelled_in_sql,
    a_workflow_waiting_here_stops_when_another_process_resumes_and_finishes_it,
    an_executor_id_in_use_is_refused_until_its_holder_shuts_down,
);
