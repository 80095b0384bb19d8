//! Queue dispatch: which queued workflows start, in what order, and never past a queue's
//! limits (counted from what the workflows record and from their rows, never from timing).

mod common;

use std::collections::HashMap;
#[cfg(feature = "postgres")]
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use cairn::{Cairn, EnqueueOptions, Error, Queue, WorkflowState};
use common::TestDb;
use tokio::sync::{Semaphore, watch};

/// What the workflows of one test did, and the gates they wait at.
#[derive(Default)]
struct Log {
    /// `(seed, partition)` of each start, in order.
    starts: Vec<(u32, String)>,
    /// Running now, per partition ("" for none), and the most ever at once.
    running: HashMap<String, usize>,
    most: HashMap<String, usize>,
    /// Running now across partitions, and the most ever at once.
    total: usize,
    most_total: usize,
    finished: usize,
}

/// Per test (by key): its log, a semaphore its workflows wait at, and a counter of changes.
struct Test {
    log: Mutex<Log>,
    gate: Semaphore,
    changed: watch::Sender<usize>,
}

static TESTS: LazyLock<Mutex<HashMap<String, Arc<Test>>>> = LazyLock::new(Default::default);

/// The test keyed `key`, made with `permits` open at its gate.
fn test(key: &str, permits: usize) -> Arc<Test> {
    let mut tests = TESTS.lock().unwrap();
    Arc::clone(tests.entry(key.to_owned()).or_insert_with(|| {
        Arc::new(Test {
            log: Mutex::new(Log::default()),
            gate: Semaphore::new(permits),
            changed: watch::channel(0).0,
        })
    }))
}

impl Test {
    /// Wait until the log satisfies `done`.
    async fn until(&self, done: impl Fn(&Log) -> bool) {
        let mut changed = self.changed.subscribe();
        loop {
            if done(&self.log.lock().unwrap()) {
                return;
            }
            tokio::time::timeout(Duration::from_secs(60), changed.changed())
                .await
                .expect("the workflows made progress")
                .expect("sender");
        }
    }

    fn note(&self, change: impl FnOnce(&mut Log)) {
        change(&mut self.log.lock().unwrap());
        self.changed.send_modify(|n| *n += 1);
    }
}

/// A step, so that the workflow has a durable operation after its gate (a cancellation stops
/// it there).
#[cairn::step]
async fn checkpoint(seed: u32) -> Result<u32, Error> {
    Ok(seed)
}

/// Note its start, wait for a permit at its test's gate, take a step, note its finish.
#[cairn::workflow]
async fn gated(key: String, seed: u32, partition: String) -> Result<u32, Error> {
    let t = test(&key, 0);
    t.note(|log| {
        log.starts.push((seed, partition.clone()));
        let running = log.running.entry(partition.clone()).or_default();
        *running += 1;
        let now = *running;
        let most = log.most.entry(partition.clone()).or_default();
        *most = (*most).max(now);
        log.total += 1;
        log.most_total = log.most_total.max(log.total);
    });
    t.gate.acquire().await.expect("gate").forget();
    let out = checkpoint(seed).await;
    t.note(|log| {
        *log.running.entry(partition.clone()).or_default() -= 1;
        log.total -= 1;
        log.finished += 1;
    });
    out
}

/// A unique key for a test on a database.
fn key(name: &str, db: &TestDb) -> String {
    format!("{name}@{}", db.url)
}

async fn launch(db: &TestDb, queue: Queue) -> Cairn {
    db.builder("cairn-test")
        .queue(queue)
        .launch()
        .await
        .expect("launch")
}

/// How many of the queue's rows are `PENDING` (across executors).
async fn pending(db: &TestDb, queue: &str) -> i64 {
    let count = db
        .query_text(&format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM workflow_status \
             WHERE queue_name = '{queue}' AND status = 'PENDING'"
        ))
        .await
        .expect("count");
    count.parse().expect("a number")
}

/// With priorities enabled, waiting workflows start lowest priority first (none first of
/// all), then oldest.
async fn priorities_order_the_queue(db: &TestDb) {
    let q = "prio";
    let app = launch(
        db,
        Queue::new(q).worker_concurrency(1).priority_enabled(true),
    )
    .await;
    let k = key("prio", db);
    let t = test(&k, 0);
    // A first workflow holds the only slot while the rest are enqueued.
    let first = app
        .enqueue(q, gated, (k.clone(), 0, String::new()))
        .await
        .unwrap();
    t.until(|log| log.starts.len() == 1).await;
    let mut handles = vec![first];
    for (seed, priority) in [
        (1, Some(5)),
        (2, Some(1)),
        (3, None),
        (4, Some(5)),
        (5, Some(2)),
    ] {
        let options = match priority {
            Some(p) => EnqueueOptions::default().with_priority(p),
            None => EnqueueOptions::default(),
        };
        let h = app
            .enqueue_with(options, q, gated, (k.clone(), seed, String::new()))
            .await
            .unwrap();
        handles.push(h);
    }
    t.gate.add_permits(6);
    for h in handles {
        h.result().await.unwrap();
    }
    let order: Vec<u32> = t.log.lock().unwrap().starts.iter().map(|s| s.0).collect();
    assert_eq!(order, [0, 3, 2, 5, 1, 4]);
    app.shutdown().await.unwrap();
}

/// A queue never runs more than its worker concurrency in a process, and fills it.
async fn worker_concurrency_is_never_exceeded(db: &TestDb) {
    let q = "per-worker";
    let app = launch(db, Queue::new(q).worker_concurrency(3)).await;
    let k = key("worker", db);
    let t = test(&k, 0);
    let mut handles = Vec::new();
    for seed in 0..10 {
        handles.push(
            app.enqueue(q, gated, (k.clone(), seed, String::new()))
                .await
                .unwrap(),
        );
    }
    t.until(|log| log.starts.len() == 3).await;
    assert_eq!(pending(db, q).await, 3, "three claimed, the rest waiting");
    t.gate.add_permits(10);
    for h in handles {
        h.result().await.unwrap();
    }
    {
        let log = t.log.lock().unwrap();
        assert_eq!(log.finished, 10);
        assert_eq!(log.most_total, 3);
    }
    app.shutdown().await.unwrap();
}

/// Two processes (executors) serving one queue together never run more than its global
/// concurrency, each run once.
async fn global_concurrency_holds_across_executors(db: &TestDb) {
    let q = "global";
    let queue = Queue::new(q).concurrency(4);
    let a = db
        .builder("cairn-test")
        .executor_id("a")
        .queue(queue.clone())
        .launch()
        .await
        .unwrap();
    let b = db
        .builder("cairn-test")
        .executor_id("b")
        .queue(queue)
        .launch()
        .await
        .unwrap();
    let k = key("global", db);
    let t = test(&k, 0);
    let mut handles = Vec::new();
    for seed in 0..12 {
        let app = if seed % 2 == 0 { &a } else { &b };
        handles.push(
            app.enqueue(q, gated, (k.clone(), seed, String::new()))
                .await
                .unwrap(),
        );
    }
    t.until(|log| log.starts.len() == 4).await;
    assert_eq!(pending(db, q).await, 4);
    t.gate.add_permits(12);
    for h in handles {
        h.result().await.unwrap();
    }
    {
        let log = t.log.lock().unwrap();
        assert_eq!(log.finished, 12);
        assert!(log.most_total <= 4, "at most 4 at once: {}", log.most_total);
        let mut seeds: Vec<u32> = log.starts.iter().map(|s| s.0).collect();
        seeds.sort();
        assert_eq!(seeds, (0..12).collect::<Vec<_>>(), "each ran once");
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A rate limit: within any period, no more starts than the limit (read from the rows'
/// `started_at_epoch_ms`), and all of them run.
async fn the_rate_limit_spaces_the_starts(db: &TestDb) {
    let q = "limited";
    let period = Duration::from_millis(300);
    let app = launch(
        db,
        Queue::new(q)
            .rate_limit(2, period)
            .polling_interval(Duration::from_millis(50)),
    )
    .await;
    let k = key("rate", db);
    test(&k, 100);
    let mut handles = Vec::new();
    for seed in 0..6 {
        handles.push(
            app.enqueue(q, gated, (k.clone(), seed, String::new()))
                .await
                .unwrap(),
        );
    }
    let mut starts = Vec::new();
    for h in handles {
        h.result().await.unwrap();
        starts.push(h.status().await.unwrap().started_at_ms.expect("started"));
    }
    starts.sort();
    let period = period.as_millis() as i64;
    for (i, s) in starts.iter().enumerate() {
        let within = starts[..=i].iter().filter(|&&x| x > s - period).count();
        assert!(
            within <= 2,
            "{within} starts within a period before {s}: {starts:?}"
        );
    }
    app.shutdown().await.unwrap();
}

/// A partitioned queue applies its partition concurrency per partition: each partition runs
/// one at a time, both partitions at once.
async fn partitions_have_limits_of_their_own(db: &TestDb) {
    let q = "parts";
    let queue = Queue::new(q).partition_queue(true).partition_concurrency(1);
    let app = launch(db, queue).await;
    let k = key("parts", db);
    let t = test(&k, 0);
    let mut handles = Vec::new();
    for seed in 0..6 {
        let partition = if seed % 2 == 0 { "even" } else { "odd" };
        let options = EnqueueOptions::default().with_partition_key(partition);
        let h = app
            .enqueue_with(options, q, gated, (k.clone(), seed, partition.to_owned()))
            .await
            .unwrap();
        handles.push(h);
    }
    t.until(|log| log.starts.len() == 2).await;
    {
        let log = t.log.lock().unwrap();
        let mut partitions: Vec<&str> = log.starts.iter().map(|s| s.1.as_str()).collect();
        partitions.sort();
        assert_eq!(partitions, ["even", "odd"]);
    }
    t.gate.add_permits(6);
    for h in handles {
        h.result().await.unwrap();
    }
    {
        let log = t.log.lock().unwrap();
        assert_eq!(log.finished, 6);
        assert_eq!(log.most.get("even"), Some(&1));
        assert_eq!(log.most.get("odd"), Some(&1));
    }
    app.shutdown().await.unwrap();
}

/// A delayed workflow waits `DELAYED` until its time, then is dequeued: its row says it
/// started no earlier.
async fn a_delayed_workflow_starts_when_due(db: &TestDb) {
    let q = "later";
    let app = launch(
        db,
        Queue::new(q).polling_interval(Duration::from_millis(50)),
    )
    .await;
    let k = key("delay", db);
    test(&k, 10);
    let options = EnqueueOptions::default().with_delay(Duration::from_millis(300));
    let h = app
        .enqueue_with(options, q, gated, (k.clone(), 1, String::new()))
        .await
        .unwrap();
    let status = h.status().await.unwrap();
    assert!(
        matches!(
            status.state,
            WorkflowState::Delayed
                | WorkflowState::Enqueued
                | WorkflowState::Pending
                | WorkflowState::Success
        ),
        "{:?}",
        status.state
    );
    assert_eq!(h.result().await.unwrap(), 1);
    let status = h.status().await.unwrap();
    let started = status.started_at_ms.expect("started");
    assert!(
        started >= status.created_at_ms + 300,
        "started {} ms after creation",
        started - status.created_at_ms
    );
    app.shutdown().await.unwrap();
}

/// A queued workflow cancelled before it starts never runs; one cancelled while it runs
/// stops at its next step; either way the queue goes on with the others.
async fn queued_workflows_can_be_cancelled(db: &TestDb) {
    let q = "cancels";
    let app = launch(db, Queue::new(q).worker_concurrency(1)).await;
    let k = key("cancel", db);
    let t = test(&k, 0);
    let running = app
        .enqueue(q, gated, (k.clone(), 0, String::new()))
        .await
        .unwrap();
    t.until(|log| log.starts.len() == 1).await;
    let waiting = app
        .enqueue(q, gated, (k.clone(), 1, String::new()))
        .await
        .unwrap();
    assert!(
        app.cancel(waiting.id()).await.unwrap(),
        "cancelled before it started"
    );
    assert!(
        app.cancel(running.id()).await.unwrap(),
        "cancelled while it runs"
    );
    t.gate.add_permits(10);
    assert!(matches!(running.result().await, Err(Error::Cancelled(_))));
    assert!(matches!(waiting.result().await, Err(Error::Cancelled(_))));
    let after = app
        .enqueue(q, gated, (k.clone(), 2, String::new()))
        .await
        .unwrap();
    assert_eq!(after.result().await.unwrap(), 2, "the slot was freed");
    let seeds: Vec<u32> = t.log.lock().unwrap().starts.iter().map(|s| s.0).collect();
    assert_eq!(
        seeds,
        [0, 2],
        "the workflow cancelled while waiting never ran"
    );
    assert_eq!(
        running.status().await.unwrap().state,
        WorkflowState::Cancelled
    );
    assert_eq!(
        waiting.status().await.unwrap().state,
        WorkflowState::Cancelled
    );
    app.shutdown().await.unwrap();
}

/// `listen_queues` limits what a process takes: a queue it does not listen to is left
/// alone until a process that does serves it.
async fn a_process_serves_only_the_queues_it_listens_to(db: &TestDb) {
    let k = key("listen", db);
    test(&k, 10);
    let deaf = db
        .builder("cairn-test")
        .executor_id("deaf")
        .queue(Queue::new("heard"))
        .queue(Queue::new("ignored"))
        .listen_queues(["heard"])
        .launch()
        .await
        .unwrap();
    let heard = deaf
        .enqueue("heard", gated, (k.clone(), 1, String::new()))
        .await
        .unwrap();
    assert_eq!(heard.result().await.unwrap(), 1);
    let ignored = deaf
        .enqueue("ignored", gated, (k.clone(), 2, String::new()))
        .await
        .unwrap();
    let listener = db
        .builder("cairn-test")
        .executor_id("listener")
        .queue(Queue::new("ignored"))
        .listen_queues(["ignored"])
        .launch()
        .await
        .unwrap();
    assert_eq!(ignored.result().await.unwrap(), 2);
    let status = ignored.status().await.unwrap();
    assert_eq!(status.executor_id.as_deref(), Some("listener"));
    deaf.shutdown().await.unwrap();
    listener.shutdown().await.unwrap();
}

both_backends!(
    priorities_order_the_queue,
    worker_concurrency_is_never_exceeded,
    global_concurrency_holds_across_executors,
    the_rate_limit_spaces_the_starts,
    partitions_have_limits_of_their_own,
    a_delayed_workflow_starts_when_due,
    queued_workflows_can_be_cancelled,
    a_process_serves_only_the_queues_it_listens_to,
);

// ---- Three worker processes on one Postgres queue -----------------------------------------

/// The queue the worker processes share: at most 5 running across them, 10 starts a second.
#[cfg(feature = "postgres")]
fn shared_queue() -> Queue {
    Queue::new("shared")
        .concurrency(5)
        .rate_limit(10, Duration::from_secs(1))
        .polling_interval(Duration::from_millis(100))
}

/// How many workflows the multi-process test enqueues.
#[cfg(feature = "postgres")]
const SHARED_WORKFLOWS: u32 = 30;

/// Append a line to the multi-process test's side file.
#[cfg(feature = "postgres")]
fn side(line: String) {
    common::side_log::append("CAIRN_QPROC_LOG", &line);
}

/// Which worker process this is (1, 2, …), as the test numbered it.
#[cfg(feature = "postgres")]
fn run_number() -> String {
    std::env::var("CAIRN_QPROC_RUN").unwrap_or_default()
}

/// Look at the queue's rows from inside a running workflow: how many are `PENDING` now
/// (this one included), logged as `pending <seed> <run> <count>`.
#[cfg(feature = "postgres")]
#[cairn::step]
async fn observe(seed: u32) -> Result<u32, Error> {
    let url = std::env::var("CAIRN_QPROC_URL").expect("CAIRN_QPROC_URL");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT COUNT(*) FROM dbos.workflow_status \
             WHERE queue_name = 'shared' AND status = 'PENDING'",
            &[],
        )
        .await
        .expect("count");
    let pending: i64 = row.get(0);
    side(format!("pending {seed} {} {pending}", run_number()));
    Ok(seed)
}

/// The work: logged as `done <seed> <run>`. In the first worker process it never ends (the
/// process is killed while the workflow is in flight).
#[cfg(feature = "postgres")]
#[cairn::step]
async fn work(seed: u32) -> Result<u32, Error> {
    if run_number() == "1" {
        std::future::pending::<()>().await;
    }
    tokio::task::yield_now().await;
    side(format!("done {seed} {}", run_number()));
    Ok(seed)
}

#[cfg(feature = "postgres")]
#[cairn::workflow]
async fn shared_work(seed: u32) -> Result<u32, Error> {
    observe(seed).await?;
    work(seed).await
}

/// A worker process of the multi-process test: serves the shared queue as executor
/// `CAIRN_QPROC_EXECUTOR` until it is killed.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a worker process of the multi-process queue test, started by it"]
async fn queue_worker() {
    let url = std::env::var("CAIRN_QPROC_URL").expect("CAIRN_QPROC_URL");
    let executor = std::env::var("CAIRN_QPROC_EXECUTOR").expect("CAIRN_QPROC_EXECUTOR");
    let app = Cairn::builder("cairn-test")
        .database_url(url)
        .executor_id(executor.clone())
        .queue(shared_queue())
        .launch()
        .await
        .expect("launch");
    side(format!("launched {executor} {}", run_number()));
    std::future::pending::<()>().await;
    drop(app);
}

/// Start worker process `run` as `executor`.
#[cfg(feature = "postgres")]
fn spawn_queue_worker(url: &str, log: &std::path::Path, run: u32, executor: &str) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "queue_worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env_remove("DBOS__VMID")
        .env("CAIRN_QPROC_URL", url)
        .env("CAIRN_QPROC_LOG", log)
        .env("CAIRN_QPROC_RUN", run.to_string())
        .env("CAIRN_QPROC_EXECUTOR", executor)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a worker")
}

/// The side file's lines starting with `word`, split into words after it.
#[cfg(feature = "postgres")]
fn words_after(lines: &[String], word: &str) -> Vec<Vec<String>> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(&format!("{word} ")))
        .map(|rest| rest.split(' ').map(str::to_owned).collect())
        .collect()
}

/// Three worker processes serve one queue with a global concurrency of 5 and a rate limit:
/// every running workflow saw at most 5 of the queue's rows `PENDING` (itself included);
/// within any second at most 10 started (by the rows); all completed; nothing that finished
/// ran twice. The first process is SIGKILLed with workflows in flight: they complete once
/// it is back (recovery under its executor id).
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_one_queue() {
    let db = TestDb::new(common::Backend::Postgres);
    // The driver enqueues only (it listens to no user queue).
    let driver = db
        .builder("cairn-test")
        .executor_id("driver")
        .listen_queues(Vec::<String>::new())
        .launch()
        .await
        .expect("launch");
    let log =
        std::env::temp_dir().join(format!("cairn-qproc-{}.log", uuid::Uuid::new_v4().simple()));
    let url = db.url.clone();
    let mut workers: Vec<Child> = (1..=3)
        .map(|run| spawn_queue_worker(&url, &log, run, &format!("w{run}")))
        .collect();
    // The first worker must be serving before the work arrives, or the others (started
    // sooner on a busy machine) could take all of it before it has launched.
    let ready_log = log.clone();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !common::side_log::read(&ready_log)
            .iter()
            .any(|l| l == "launched w1 1")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the first worker did not launch"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .expect("waiting for the first worker");
    let mut handles = Vec::new();
    for seed in 0..SHARED_WORKFLOWS {
        handles.push(
            driver
                .enqueue("shared", shared_work, seed)
                .await
                .expect("enqueue"),
        );
    }
    // Kill the first worker once it has a workflow in flight (its work never ends there).
    let side_log = log.clone();
    let mut first = workers.remove(0);
    let first = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !common::side_log::read(&side_log)
            .iter()
            .any(|l| l.starts_with("pending ") && l.split(' ').nth(2) == Some("1"))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the first worker took nothing"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        first.kill().expect("SIGKILL the first worker");
        first.wait().expect("reap");
    });
    first.await.expect("the killer");
    workers.push(spawn_queue_worker(&url, &log, 4, "w1"));
    let mut results = Vec::new();
    for h in &handles {
        results.push(h.result().await.expect("result"));
    }
    let mut statuses = Vec::new();
    for h in &handles {
        statuses.push(h.status().await.expect("status"));
    }
    for mut w in workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    driver.shutdown().await.expect("shutdown");
    let lines = common::side_log::read(&log);
    let _ = std::fs::remove_file(&log);
    db.drop_db().await;

    assert_eq!(results, (0..SHARED_WORKFLOWS).collect::<Vec<_>>());
    for p in words_after(&lines, "pending") {
        let count: i64 = p[2].parse().expect("count");
        assert!(count <= 5, "{count} running at once: {p:?}");
    }
    let done = words_after(&lines, "done");
    for seed in 0..SHARED_WORKFLOWS {
        let runs: Vec<&String> = done
            .iter()
            .filter(|d| d[0] == seed.to_string())
            .map(|d| &d[1])
            .collect();
        assert_eq!(
            runs.len(),
            1,
            "workflow {seed} finished its work once: {runs:?}"
        );
        assert_ne!(runs[0], "1", "the first process never finishes work");
    }
    let recovered = words_after(&lines, "pending")
        .iter()
        .filter(|p| p[1] == "1")
        .count();
    assert!(recovered >= 1);
    let mut starts: Vec<i64> = statuses
        .iter()
        .map(|s| s.started_at_ms.expect("started"))
        .collect();
    starts.sort();
    for (i, s) in starts.iter().enumerate() {
        let within = starts[..=i].iter().filter(|&&x| x > s - 1_000).count();
        assert!(within <= 10, "{within} starts within a second before {s}");
    }
    for s in &statuses {
        assert_eq!(s.state, WorkflowState::Success);
    }
}

#[cairn::workflow]
async fn doubled(x: i64) -> Result<i64, Error> {
    Ok(x * 2)
}

/// A workflow put on a queue by a plain SQL `enqueue_workflow(...)` call (no application
/// version, no application name) is run by a Cairn process serving the queue, which stamps
/// its own version on it.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_enqueued_by_sql_runs_here() {
    let db = TestDb::new(common::Backend::Postgres);
    let app = launch(&db, Queue::new("sql")).await;
    let id = db
        .query_text("SELECT dbos.enqueue_workflow('doubled', 'sql', ARRAY['21'::json])")
        .await
        .expect("an id");
    let handle = app.retrieve::<i64>(&id).await.unwrap();
    assert_eq!(handle.result().await.unwrap(), 42);
    let status = handle.status().await.unwrap();
    assert_eq!(status.app_version.as_deref(), Some(app.app_version()));
    assert_eq!(status.executor_id.as_deref(), Some(app.executor_id()));
    app.shutdown().await.unwrap();
    db.drop_db().await;
}
