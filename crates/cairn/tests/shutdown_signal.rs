//! SIGTERM to a real worker process that ends its `main` with `Cairn::shutdown_on_signal`.
//!
//! The worker serves a queue with a concurrency of one. A queued workflow (`long`) holds the
//! queue's slot in a one-step body, a directly started workflow (`multi`) is in the first of
//! two steps, and three more workflows wait on the queue, unclaimed. Both running step bodies
//! wait until the worker logs that the shutdown signal arrived, so the signal always lands
//! while they run. The test then checks what stayed where, relaunches a worker, and checks
//! that everything completes and which step bodies ran again (a side file counts them).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn::{EnqueueOptions, Queue, StartOptions};
use common::{Backend, TestDb};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

const QUEUE: &str = "jobs";
const JOBS: u64 = 3;
/// How long past its grace a worker may take to exit.
const MARGIN: Duration = Duration::from_secs(15);

/// What the workers of one test do with their steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// The running step bodies finish right after the signal, well within the grace.
    Finish,
    /// The running step bodies never finish in the first worker: the grace runs out.
    Overrun,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Finish => "finish",
            Scenario::Overrun => "overrun",
        }
    }

    fn grace(self) -> Duration {
        match self {
            Scenario::Finish => Duration::from_secs(30),
            Scenario::Overrun => Duration::from_secs(1),
        }
    }
}

fn log_line(line: String) {
    common::side_log::append("CAIRN_SIGNAL_LOG", &line);
}

fn run() -> u64 {
    std::env::var("CAIRN_SIGNAL_RUN")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn scenario() -> Scenario {
    match std::env::var("CAIRN_SIGNAL_SCENARIO").as_deref() {
        Ok("overrun") => Scenario::Overrun,
        _ => Scenario::Finish,
    }
}

/// The long step: logs its execution; in the first worker it runs until the shutdown signal
/// arrived (`Finish`) or forever (`Overrun`).
#[cairn::step]
async fn slow(who: String) -> Result<String, cairn::Error> {
    log_line(format!("exec slow {who} {}", run()));
    common::reached(&format!("slow-{who}"));
    if run() == 0 {
        match scenario() {
            Scenario::Finish => common::until_released("shutdown-signal").await,
            Scenario::Overrun => std::future::pending::<()>().await,
        }
    }
    Ok(format!("{who} done"))
}

#[cairn::step]
async fn after(who: String) -> Result<(), cairn::Error> {
    log_line(format!("exec after {who} {}", run()));
    Ok(())
}

#[cairn::step]
async fn quick(job: u64) -> Result<u64, cairn::Error> {
    log_line(format!("exec job {job} {}", run()));
    Ok(job * 10)
}

/// Queued: one long step, holding the queue's only slot.
#[cairn::workflow]
async fn queued_long(who: String) -> Result<String, cairn::Error> {
    slow(who).await
}

/// Started directly: a long step, then another.
#[cairn::workflow]
async fn two_steps(who: String) -> Result<String, cairn::Error> {
    let out = slow(who.clone()).await?;
    after(who).await?;
    Ok(out)
}

/// Queued behind `long`.
#[cairn::workflow]
async fn job(job: u64) -> Result<u64, cairn::Error> {
    quick(job).await
}

fn job_id(job: u64) -> String {
    format!("job-{job}")
}

/// Opens the gate `shutdown-signal` when Cairn logs that the shutdown signal arrived (the
/// line with a `signal` field, written once shutdown has begun).
struct SignalSeen;

impl<S: tracing::Subscriber> Layer<S> for SignalSeen {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if meta.target().starts_with("cairn") && meta.fields().field("signal").is_some() {
            common::release("shutdown-signal");
        }
    }
}

/// The worker process. Run 0: launch, get `long` and `multi` into their long step, enqueue
/// the jobs behind `long`, then `shutdown_on_signal`. Later runs: launch (recovering what
/// was left), wait for every workflow, shut down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the worker process of the shutdown_signal tests, started by them"]
async fn shutdown_signal_worker() {
    let subscriber = tracing_subscriber::registry().with(SignalSeen).with(
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.target().starts_with("cairn") && *meta.level() <= tracing::Level::INFO
            })),
    );
    tracing::subscriber::set_global_default(subscriber).expect("subscriber");
    let url = std::env::var("CAIRN_SIGNAL_URL").expect("CAIRN_SIGNAL_URL");
    let app = cairn::Cairn::builder("shutdown-signal-test")
        .database_url(url)
        .queue(Queue::new(QUEUE).concurrency(1))
        .shutdown_grace(scenario().grace())
        .launch()
        .await
        .expect("launch");
    if run() > 0 {
        let long = app.retrieve::<String>("long").await.expect("long");
        log_line(format!(
            "result long {}",
            long.result().await.expect("long")
        ));
        let multi = app.retrieve::<String>("multi").await.expect("multi");
        log_line(format!(
            "result multi {}",
            multi.result().await.expect("multi")
        ));
        for j in 0..JOBS {
            let handle = app.retrieve::<u64>(&job_id(j)).await.expect("job");
            log_line(format!(
                "result {} {}",
                job_id(j),
                handle.result().await.expect("job")
            ));
        }
        app.shutdown().await.expect("shutdown");
        return;
    }
    // The handlers are installed here: a SIGTERM from now on is not lost.
    let stop = app.clone().shutdown_on_signal();
    app.enqueue_with(
        EnqueueOptions::id("long"),
        QUEUE,
        queued_long,
        "long".to_owned(),
    )
    .await
    .expect("enqueue long");
    app.start_with(StartOptions::id("multi"), two_steps, "multi".to_owned())
        .await
        .expect("start multi");
    common::wait_reached("slow-long").await;
    common::wait_reached("slow-multi").await;
    for j in 0..JOBS {
        app.enqueue_with(EnqueueOptions::id(job_id(j)), QUEUE, job, j)
            .await
            .expect("enqueue job");
    }
    log_line("ready".to_owned());
    stop.await.expect("shutdown on signal");
    log_line("stopped".to_owned());
}

fn spawn_worker(db: &TestDb, log: &Path, scenario: Scenario, run: u64) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "shutdown_signal_worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("CAIRN_SIGNAL_URL", &db.url)
        .env("CAIRN_SIGNAL_LOG", log)
        .env("CAIRN_SIGNAL_RUN", run.to_string())
        .env("CAIRN_SIGNAL_SCENARIO", scenario.name())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn worker")
}

fn lines(log: &Path) -> Vec<String> {
    common::side_log::read(log)
}

/// How many times `exec <what>` was logged, per run.
fn executions(lines: &[String], what: &str) -> Vec<u64> {
    let prefix = format!("exec {what} ");
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|run| run.parse().expect("run number"))
        .collect()
}

/// Wait (polling the side file the worker writes) until `line` is there; fail if the worker
/// exits first or nothing comes for a minute.
fn wait_for_line(worker: &mut Child, log: &Path, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lines(log).iter().any(|l| l == line) {
        if let Some(status) = worker.try_wait().expect("worker status") {
            panic!("the worker exited ({status}) before logging `{line}`");
        }
        if Instant::now() > deadline {
            let _ = worker.kill();
            let _ = worker.wait();
            panic!("the worker did not log `{line}` within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait for the worker to exit by itself within `limit`; kill it and fail otherwise.
fn wait_for_exit(worker: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = worker.try_wait().expect("worker status") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = worker.kill();
            let _ = worker.wait();
            panic!("the worker did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sigterm(worker: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed: {status}");
}

async fn status_of(db: &TestDb, id: &str) -> Option<String> {
    db.query_text(&format!(
        "SELECT status FROM workflow_status WHERE workflow_uuid = '{id}'"
    ))
    .await
}

/// The function ids recorded for a workflow, in order (as text: "1,2").
async fn checkpoints_of(db: &TestDb, id: &str) -> String {
    let aggregate = match db.backend {
        Backend::Sqlite => "GROUP_CONCAT(function_id, ',')",
        Backend::Postgres => "STRING_AGG(CAST(function_id AS TEXT), ',' ORDER BY function_id)",
    };
    db.query_text(&format!(
        "SELECT {aggregate} FROM (SELECT function_id FROM operation_outputs \
         WHERE workflow_uuid = '{id}' ORDER BY function_id) AS recorded"
    ))
    .await
    .unwrap_or_default()
}

/// Run the first worker up to `ready`, SIGTERM it and wait for it to exit. Answers how long
/// it took to exit after the signal was sent.
async fn first_worker_until_sigterm(db: &TestDb, log: &Path, scenario: Scenario) -> Duration {
    let (url, backend, log) = (db.url.clone(), db.backend, log.to_owned());
    let mut worker = tokio::task::spawn_blocking(move || {
        let db = TestDb::with_url(backend, url);
        let mut worker = spawn_worker(&db, &log, scenario, 0);
        wait_for_line(&mut worker, &log, "ready");
        worker
    })
    .await
    .expect("first worker");

    // Before the signal: both long steps run, the jobs wait behind `long`.
    assert_eq!(status_of(db, "long").await.as_deref(), Some("PENDING"));
    assert_eq!(status_of(db, "multi").await.as_deref(), Some("PENDING"));
    for j in 0..JOBS {
        assert_eq!(
            status_of(db, &job_id(j)).await.as_deref(),
            Some("ENQUEUED"),
            "{} before the signal",
            job_id(j)
        );
    }

    let (elapsed, status) = tokio::task::spawn_blocking(move || {
        let sent = Instant::now();
        sigterm(&worker);
        let status = wait_for_exit(&mut worker, scenario.grace() + MARGIN);
        (sent.elapsed(), status)
    })
    .await
    .expect("signal the worker");
    assert!(status.success(), "the worker exited with {status}");
    elapsed
}

/// Relaunch a worker and wait for it to finish every workflow and exit.
async fn relaunch(db: &TestDb, log: &Path, scenario: Scenario) {
    let (url, backend, log) = (db.url.clone(), db.backend, log.to_owned());
    tokio::task::spawn_blocking(move || {
        let db = TestDb::with_url(backend, url);
        let mut worker = spawn_worker(&db, &log, scenario, 1);
        let status = wait_for_exit(&mut worker, Duration::from_secs(120));
        assert!(
            status.success(),
            "the relaunched worker exited with {status}"
        );
    })
    .await
    .expect("second worker");
    for id in ["long", "multi"]
        .into_iter()
        .map(str::to_owned)
        .chain((0..JOBS).map(job_id))
    {
        assert_eq!(
            status_of(db, &id).await.as_deref(),
            Some("SUCCESS"),
            "{id} after the relaunch"
        );
    }
}

fn side_file() -> PathBuf {
    std::env::temp_dir().join(format!(
        "cairn-shutdown-signal-{}.log",
        uuid::Uuid::new_v4().simple()
    ))
}

/// SIGTERM lets the running step bodies finish and records them: the queued workflow whose
/// step it was completes, the other stops before its next step and stays PENDING, nothing
/// more is claimed from the queue (though a slot freed up), and the process exits 0 without
/// waiting out the grace. A relaunched worker completes everything and no step runs twice.
async fn sigterm_lets_running_steps_finish_and_claims_nothing_more(db: &TestDb) {
    let log = side_file();
    let scenario = Scenario::Finish;
    let elapsed = first_worker_until_sigterm(db, &log, scenario).await;
    assert!(
        elapsed < scenario.grace(),
        "the worker waited out the grace ({elapsed:?}) although nothing was left running"
    );
    let seen = lines(&log);
    assert!(
        seen.iter().any(|l| l == "stopped"),
        "shutdown_on_signal returned"
    );

    // The step that was running finished and its checkpoint is there; `long`'s body then
    // returned, so it completed.
    assert_eq!(status_of(db, "long").await.as_deref(), Some("SUCCESS"));
    assert_eq!(checkpoints_of(db, "long").await, "1");
    // `multi` recorded its first step and did not start its second.
    assert_eq!(status_of(db, "multi").await.as_deref(), Some("PENDING"));
    assert_eq!(checkpoints_of(db, "multi").await, "1");
    assert!(executions(&seen, "after multi").is_empty(), "{seen:?}");
    // `long` freed the queue's slot after the signal; nothing was claimed into it.
    for j in 0..JOBS {
        assert_eq!(
            status_of(db, &job_id(j)).await.as_deref(),
            Some("ENQUEUED"),
            "{} after the signal",
            job_id(j)
        );
        assert!(executions(&seen, &format!("job {j}")).is_empty());
    }

    relaunch(db, &log, scenario).await;
    let seen = lines(&log);
    let _ = std::fs::remove_file(&log);
    assert_eq!(executions(&seen, "slow long"), [0], "{seen:?}");
    assert_eq!(executions(&seen, "slow multi"), [0], "{seen:?}");
    assert_eq!(executions(&seen, "after multi"), [1], "{seen:?}");
    for j in 0..JOBS {
        assert_eq!(executions(&seen, &format!("job {j}")), [1], "{seen:?}");
    }
    assert_eq!(checkpoints_of(db, "multi").await, "1,2");
}

/// When the running step bodies outlast the grace, SIGTERM still ends the process (exit 0)
/// once the grace is over: the bodies are dropped unrecorded, their workflows stay PENDING,
/// the queued ones stay ENQUEUED. A relaunched worker runs those steps again (they never
/// finished) and everything else once.
async fn sigterm_leaves_steps_that_outlast_the_grace_pending(db: &TestDb) {
    let log = side_file();
    let scenario = Scenario::Overrun;
    let elapsed = first_worker_until_sigterm(db, &log, scenario).await;
    assert!(
        elapsed >= scenario.grace(),
        "the worker exited after {elapsed:?}, before its grace"
    );
    let seen = lines(&log);
    assert!(
        seen.iter().any(|l| l == "stopped"),
        "shutdown_on_signal returned"
    );
    for id in ["long", "multi"] {
        assert_eq!(status_of(db, id).await.as_deref(), Some("PENDING"), "{id}");
        assert_eq!(checkpoints_of(db, id).await, "", "{id}'s checkpoints");
    }
    for j in 0..JOBS {
        assert_eq!(
            status_of(db, &job_id(j)).await.as_deref(),
            Some("ENQUEUED"),
            "{} after the signal",
            job_id(j)
        );
    }

    relaunch(db, &log, scenario).await;
    let seen = lines(&log);
    let _ = std::fs::remove_file(&log);
    assert_eq!(executions(&seen, "slow long"), [0, 1], "{seen:?}");
    assert_eq!(executions(&seen, "slow multi"), [0, 1], "{seen:?}");
    assert_eq!(executions(&seen, "after multi"), [1], "{seen:?}");
    for j in 0..JOBS {
        assert_eq!(executions(&seen, &format!("job {j}")), [1], "{seen:?}");
    }
}

both_backends!(
    sigterm_lets_running_steps_finish_and_claims_nothing_more,
    sigterm_leaves_steps_that_outlast_the_grace_pending,
);
