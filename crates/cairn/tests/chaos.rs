//! A database outage never fails a workflow: chaos tests.
//!
//! Two hundred workflows run steps, a durable sleep, messages between pairs of workflows
//! (and from the test), events and a stream, while the system database goes away: a
//! throw-away Postgres server is stopped (fast and immediate modes) and restarted five times;
//! a TCP proxy in front of the main Postgres server cuts connections at random, including
//! mid-commit; another process holds SQLite's write lock for seconds. Afterwards every
//! workflow is `SUCCESS` with the right output, no step body ran twice, every message, event
//! and stream value is there, and the application was never relaunched (one process, one
//! launch: nothing waited for recovery).
//!
//! Run them one at a time: `cargo test -p cairn --test chaos -- --test-threads 1`.
// With one backend's feature only, the other backend's tests and their helpers drop out.
#![cfg_attr(
    not(all(feature = "sqlite", feature = "postgres")),
    allow(dead_code, unused_imports)
)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn::{Cairn, StartOptions, WorkflowState};
use common::pg_server::{PgServer, StopMode, free_port};
use common::proxy::{Proxy, Rng};
use common::{Backend, TestDb};
use futures::StreamExt;
use tokio::io::AsyncBufReadExt;

/// The application name of every test here.
const APP: &str = "cairn-chaos";

/// Workflows per workload (an even number: they run in pairs).
const WORKFLOWS: u64 = 200;

/// Counted steps per workflow.
const STEPS: u64 = 4;

/// Values each workflow writes to its stream before closing it.
const STREAM_VALUES: u64 = 3;

/// Each workflow's durable sleep.
const DURABLE_SLEEP: Duration = Duration::from_millis(300);

/// How long a workflow waits for a message (far longer than any outage here).
const RECV_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the workload may take to finish once the chaos is over.
const PATIENCE: Duration = Duration::from_secs(90);

/// How long one read made to verify a finished workflow may take.
const READ_PATIENCE: Duration = Duration::from_secs(30);

/// How many failures are printed as they happen (all are grouped in the final report).
const LIVE_FAILURES: usize = 20;

/// The name of the database the workload uses on the throw-away server.
const CHAOS_DB: &str = "cairn_chaos";

// ---- The workload ------------------------------------------------------------------------

/// What a workflow returns: what it received, and the sum of its steps' outputs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Outcome {
    /// The workflow's number.
    n: u64,
    /// The `go` message the test sent it (its own number).
    go: Option<u64>,
    /// The message its partner sent it (the partner's number).
    from_partner: Option<u64>,
    /// The sum of its steps' outputs.
    steps: u64,
}

/// What workflow `n` must return.
fn expected(n: u64) -> Outcome {
    Outcome {
        n,
        go: Some(n),
        from_partner: Some(n ^ 1),
        steps: (0..STEPS).map(|i| n * 10 + i).sum(),
    }
}

/// The counter key of step `i` of workflow `n` in the workload `tag`.
fn step_key(tag: &str, n: u64, i: u64) -> String {
    format!("{tag}/{n}/{i}")
}

/// How long the body of step `i` of workflow `n` works: 200 ms to 1.2 s, so that a workflow
/// runs for seconds and many are in the middle of a step when the database goes away.
fn step_duration(n: u64, i: u64) -> Duration {
    Duration::from_millis(200 + (n * 37 + i * 101) % 1000)
}

/// One unit of work: counts each run of its body (a run that is not replayed), and takes a
/// little time so that outages land while steps run.
#[cairn::step]
async fn chaos_step(tag: String, n: u64, i: u64) -> Result<u64, cairn::Error> {
    common::count(&step_key(&tag, n, i));
    tokio::time::sleep(step_duration(n, i)).await;
    Ok(n * 10 + i)
}

/// Steps, an event, a message from the test, a durable sleep, a message exchange with its
/// partner, a stream, another event.
#[cairn::workflow]
async fn chaos_workflow(tag: String, n: u64, partner: String) -> Result<Outcome, cairn::Error> {
    let mut steps = chaos_step(tag.clone(), n, 0).await?;
    steps += chaos_step(tag.clone(), n, 1).await?;
    cairn::set_event("progress", &"started").await?;
    let go = cairn::recv::<u64>("go", RECV_TIMEOUT).await?;
    cairn::sleep(DURABLE_SLEEP).await?;
    steps += chaos_step(tag.clone(), n, 2).await?;
    cairn::send(&partner, "pair", &n).await?;
    let from_partner = cairn::recv::<u64>("pair", RECV_TIMEOUT).await?;
    for value in 0..STREAM_VALUES {
        cairn::write_stream("s", &value).await?;
    }
    cairn::close_stream("s").await?;
    steps += chaos_step(tag, n, 3).await?;
    cairn::set_event("done", &n).await?;
    Ok(Outcome {
        n,
        go,
        from_partner,
        steps,
    })
}

/// A workflow with nothing to it, to show a launched application works.
#[cairn::workflow]
async fn chaos_hello(n: u64) -> Result<u64, cairn::Error> {
    Ok(n + 1)
}

/// The workload of one test: 200 workflows in pairs, started over a period of time, each
/// verified by the test through the public API as soon as it finishes.
struct Workload {
    app: Cairn,
    /// Prefix of this workload's workflow ids and step counters.
    tag: String,
    /// Workflows started (or being started) and not yet verified.
    in_flight: AtomicUsize,
    /// Workflows verified (whatever the verdict).
    finished: Mutex<HashSet<u64>>,
    /// Everything that went wrong, one line each.
    failures: Mutex<Vec<String>>,
    /// When the workload began.
    began: Instant,
}

impl Workload {
    /// A workload for the test `test` (a short name, the prefix of its workflow ids) on `app`.
    fn new(app: Cairn, test: &str) -> Arc<Self> {
        Arc::new(Self {
            app,
            tag: format!("{test}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            in_flight: AtomicUsize::new(0),
            finished: Mutex::new(HashSet::new()),
            failures: Mutex::new(Vec::new()),
            began: Instant::now(),
        })
    }

    /// The id of workflow `n`.
    fn id(&self, n: u64) -> String {
        format!("{}-{n}", self.tag)
    }

    /// Record a failure (the first few are printed as they happen, with the time).
    fn fail(&self, failure: String) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() < LIVE_FAILURES {
            eprintln!(
                "[{:>6} ms] FAILURE: {failure}",
                self.began.elapsed().as_millis()
            );
        }
        failures.push(failure);
    }

    /// Workflows started (or being started) and not yet verified, now.
    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Start the pairs one after another over `spread`, each pair driven by a task of its own.
    fn spawn(self: &Arc<Self>, spread: Duration) -> Vec<tokio::task::JoinHandle<()>> {
        let pairs = WORKFLOWS / 2;
        (0..pairs)
            .map(|pair| {
                let workload = Arc::clone(self);
                let delay = spread * pair as u32 / pairs as u32;
                tokio::spawn(async move { workload.drive_pair(pair, delay).await })
            })
            .collect()
    }

    /// Start a pair of workflows, send each its `go` message, and verify both.
    async fn drive_pair(self: Arc<Self>, pair: u64, delay: Duration) {
        // Pacing: the pairs start one after another over the chaos period.
        tokio::time::sleep(delay).await;
        let numbers = [2 * pair, 2 * pair + 1];
        self.in_flight.fetch_add(numbers.len(), Ordering::SeqCst);
        let mut handles = Vec::new();
        // Both partners exist before either gets `go`, so neither sends to a missing workflow.
        for n in numbers {
            let id = self.id(n);
            let args = (self.tag.clone(), n, self.id(n ^ 1));
            match self
                .app
                .start_with(StartOptions::id(&id), chaos_workflow, args)
                .await
            {
                Ok(handle) => handles.push((n, handle)),
                Err(error) => self.fail(format!("app.start_with({id}) failed: {error}")),
            }
        }
        for (n, _) in &handles {
            let id = self.id(*n);
            let key = format!("go-{id}");
            if let Err(error) = self
                .app
                .send_with(
                    cairn::SendOptions::idempotency_key(key.as_str()),
                    &id,
                    "go",
                    n,
                )
                .await
            {
                self.fail(format!("app.send(go to {id}) failed: {error}"));
            }
        }
        let started: Vec<u64> = handles.iter().map(|(n, _)| *n).collect();
        for n in numbers.into_iter().filter(|n| !started.contains(n)) {
            self.done(n);
        }
        // Verified side by side, so a partner stuck waiting does not hide the other's fate.
        let this = &self;
        futures::future::join_all(handles.into_iter().map(|(n, handle)| async move {
            this.verify(n, handle).await;
            this.done(n);
        }))
        .await;
    }

    /// Workflow `n` is verified (or could not be started).
    fn done(&self, n: u64) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(n);
    }

    /// Wait for workflow `n`'s result and read its events and stream from outside.
    async fn verify(&self, n: u64, handle: cairn::WorkflowHandle<Outcome>) {
        let id = self.id(n);
        match handle.result().await {
            Ok(outcome) if outcome == expected(n) => {}
            Ok(outcome) => self.fail(format!(
                "{id} returned {outcome:?}, expected {:?}",
                expected(n)
            )),
            Err(error) => self.fail(format!("{id}: handle.result() failed: {error}")),
        }
        match within(
            READ_PATIENCE,
            self.app.get_event::<u64>(&id, "done", READ_PATIENCE),
        )
        .await
        {
            Some(Ok(Some(value))) if value == n => {}
            other => self.fail(format!("{id}: app.get_event(done) gave {other:?}")),
        }
        match within(
            READ_PATIENCE,
            self.app.get_event::<String>(&id, "progress", READ_PATIENCE),
        )
        .await
        {
            Some(Ok(Some(value))) if value == "started" => {}
            other => self.fail(format!("{id}: app.get_event(progress) gave {other:?}")),
        }
        let stream = self.app.read_stream::<u64>(&id, "s");
        match within(READ_PATIENCE, stream.collect::<Vec<_>>()).await {
            Some(items) => {
                let mut values = Vec::new();
                for item in items {
                    match item {
                        Ok(value) => values.push(value),
                        Err(error) => self.fail(format!("{id}: app.read_stream item: {error}")),
                    }
                }
                if values != (0..STREAM_VALUES).collect::<Vec<_>>() {
                    self.fail(format!("{id}: the stream held {values:?}"));
                }
            }
            None => self.fail(format!("{id}: app.read_stream did not end")),
        }
    }

    /// Wait for every driver (at most `patience`); report the workflows never verified.
    async fn wait(&self, drivers: Vec<tokio::task::JoinHandle<()>>, patience: Duration) {
        let aborts: Vec<_> = drivers.iter().map(|d| d.abort_handle()).collect();
        let joined = within(patience, futures::future::join_all(drivers)).await;
        for outcome in joined.iter().flatten() {
            if let Err(error) = outcome {
                self.fail(format!("a driver task failed: {error}"));
            }
        }
        if joined.is_none() {
            for abort in aborts {
                abort.abort();
            }
            let finished = self
                .finished
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let stuck: Vec<u64> = (0..WORKFLOWS).filter(|n| !finished.contains(n)).collect();
            for n in &stuck {
                let id = self.id(*n);
                let state = match within(READ_PATIENCE, self.app.status(&id)).await {
                    Some(Ok(status)) => status.state.to_string(),
                    other => format!("unknown ({other:?})"),
                };
                self.fail(format!(
                    "{id} was not finished {} s after the test began waiting: it is {state}",
                    patience.as_secs()
                ));
            }
        }
    }

    /// Check everything after the workload: statuses, step counts, recorded operations and
    /// the rows of messages, events and streams (`db` reads the tables directly).
    async fn check_after(&self, db: &TestDb) {
        let mut states: BTreeMap<String, usize> = BTreeMap::new();
        let mut most_attempts = 0;
        // The operations the first workflow that succeeded recorded, which every other
        // successful one must match: nothing missing, nothing recorded twice.
        let mut canonical: Option<(String, Vec<String>)> = None;
        for n in 0..WORKFLOWS {
            let id = self.id(n);
            let succeeded = match within(READ_PATIENCE, self.app.status(&id)).await {
                Some(Ok(status)) => {
                    *states.entry(status.state.to_string()).or_default() += 1;
                    most_attempts = most_attempts.max(status.recovery_attempts);
                    // One dispatch each: nothing was left for a recovery to pick up.
                    if status.recovery_attempts > 1 {
                        self.fail(format!(
                            "{id} was dispatched {} times, but no process restarted",
                            status.recovery_attempts
                        ));
                    }
                    if status.state != WorkflowState::Success {
                        self.fail(format!(
                            "{id} ended {} (error: {})",
                            status.state,
                            status.raw_error.as_deref().unwrap_or("none")
                        ));
                    }
                    status.state == WorkflowState::Success
                }
                other => {
                    self.fail(format!("{id}: app.status gave {other:?}"));
                    false
                }
            };
            for i in 0..STEPS {
                let runs = common::counted(&step_key(&self.tag, n, i));
                if runs != 1 {
                    self.fail(format!("step {i} of {id} ran {runs} times"));
                }
            }
            if !succeeded {
                continue;
            }
            match within(READ_PATIENCE, self.app.list_steps(&id)).await {
                Some(Ok(steps)) => {
                    let names: Vec<String> = steps.iter().map(|s| s.name.clone()).collect();
                    for step in steps.iter().filter(|s| s.raw_error.is_some()) {
                        self.fail(format!(
                            "{id}: operation {} ({}) recorded an error: {}",
                            step.function_id,
                            step.name,
                            step.raw_error.as_deref().unwrap_or_default()
                        ));
                    }
                    match &canonical {
                        None => canonical = Some((id, names)),
                        Some((first_id, first)) if *first != names => self.fail(format!(
                            "{id} recorded operations {names:?}, {first_id} recorded {first:?}"
                        )),
                        Some(_) => {}
                    }
                }
                other => self.fail(format!("{id}: app.list_steps gave {other:?}")),
            }
        }
        eprintln!(
            "states: {states:?}; most recovery attempts of one workflow: {most_attempts}; \
             operations per workflow: {:?}",
            canonical.as_ref().map(|(_, names)| names.len())
        );
        let n = WORKFLOWS;
        let tables = [
            (
                "workflows that succeeded",
                "SELECT CAST(COUNT(*) AS TEXT) FROM workflow_status WHERE status = 'SUCCESS'",
                n,
            ),
            (
                "messages (go + pair)",
                "SELECT CAST(COUNT(*) AS TEXT) FROM notifications",
                2 * n,
            ),
            (
                "messages consumed",
                "SELECT CAST(COUNT(*) AS TEXT) FROM notifications WHERE consumed = TRUE",
                2 * n,
            ),
            (
                "events (progress + done)",
                "SELECT CAST(COUNT(*) AS TEXT) FROM workflow_events",
                2 * n,
            ),
            (
                "event history rows",
                "SELECT CAST(COUNT(*) AS TEXT) FROM workflow_events_history",
                2 * n,
            ),
            (
                "stream rows (values + close)",
                "SELECT CAST(COUNT(*) AS TEXT) FROM streams",
                (STREAM_VALUES + 1) * n,
            ),
        ];
        for (what, sql, want) in tables {
            let found = db.query_text(sql).await;
            if found.as_deref() != Some(want.to_string().as_str()) {
                self.fail(format!("{what}: {found:?} rows, expected {want}"));
            }
        }
    }

    /// Fail the test with every failure recorded, grouped.
    fn assert_no_failures(&self, test: &str) {
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if failures.is_empty() {
            eprintln!(
                "{test}: all {WORKFLOWS} workflows verified in {} ms",
                self.began.elapsed().as_millis()
            );
            return;
        }
        // Group failures that differ only by workflow and numbers, one example of each.
        let mut kinds: BTreeMap<String, (usize, &str)> = BTreeMap::new();
        for failure in &failures {
            let kind = kinds
                .entry(self.kind_of(failure))
                .or_insert((0, failure.as_str()));
            kind.0 += 1;
        }
        let mut kinds: Vec<(usize, &str)> = kinds.into_values().collect();
        kinds.sort_by_key(|(count, _)| std::cmp::Reverse(*count));
        let lines: Vec<String> = kinds
            .iter()
            .map(|(count, example)| format!("{count:>4} × e.g. {example}"))
            .collect();
        panic!(
            "{test}: {} failures of {} kinds:\n{}",
            failures.len(),
            kinds.len(),
            lines.join("\n")
        );
    }

    /// A failure with its workflow ids and numbers blanked out, to group like failures.
    fn kind_of(&self, failure: &str) -> String {
        let mut kind = String::with_capacity(failure.len());
        let mut digits = false;
        for c in failure.replace(&self.tag, "<wf>").chars() {
            if c.is_ascii_digit() {
                if !digits {
                    kind.push('#');
                }
                digits = true;
            } else {
                digits = false;
                kind.push(c);
            }
        }
        kind
    }
}

/// `future`'s output, or `None` if it takes longer than `limit`.
async fn within<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    tokio::time::timeout(limit, future).await.ok()
}

/// Launch the test's one application on `url`.
async fn launch(url: &str) -> Cairn {
    Cairn::builder(APP)
        .database_url(url)
        .launch()
        .await
        .expect("launch the application")
}

// ---- Postgres server restarts -------------------------------------------------------------

/// While 200 workflows run, the Postgres server is stopped (fast and immediate modes in
/// turn) and restarted 2–4 s later, five times: every workflow ends `SUCCESS` with the right
/// output, no step body ran twice, every message, event and stream value is there, and the
/// one application launched never needed a relaunch.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workflow_succeeds_through_five_postgres_restarts() {
    let server = PgServer::start_new().await;
    let url = server.url(CHAOS_DB);
    let app = launch(&url).await;
    let workload = Workload::new(app.clone(), "restarts");
    let drivers = workload.spawn(Duration::from_secs(24));
    let mut rng = Rng::random();
    for round in 0..5 {
        // Pacing: let the workload run between outages.
        tokio::time::sleep(Duration::from_millis(rng.between(1000, 2000))).await;
        let mode = if round % 2 == 0 {
            StopMode::Fast
        } else {
            StopMode::Immediate
        };
        let in_flight = workload.in_flight();
        let stopping = Instant::now();
        server.stop(mode).await;
        let stopped = stopping.elapsed();
        // The outage itself.
        tokio::time::sleep(Duration::from_millis(rng.between(2000, 4000))).await;
        server.start().await;
        eprintln!(
            "[{:>6} ms] outage {}: {mode:?} stop ({} ms), {in_flight} workflows in flight, \
             down {} ms",
            workload.began.elapsed().as_millis(),
            round + 1,
            stopped.as_millis(),
            stopping.elapsed().as_millis()
        );
        if in_flight == 0 {
            workload.fail(format!(
                "outage {} hit no running workflow (the workload is too short)",
                round + 1
            ));
        }
    }
    workload.wait(drivers, PATIENCE).await;
    workload
        .check_after(&TestDb::with_url(Backend::Postgres, url))
        .await;
    workload.assert_no_failures("five Postgres restarts");
    app.shutdown().await.expect("shutdown");
}

// ---- A proxy cutting connections ------------------------------------------------------------

/// The Postgres URL `url` pointed at the proxy listening on `proxy` instead.
fn through_proxy(url: &str, proxy: SocketAddr) -> String {
    let mut proxied = url::Url::parse(url).expect("postgres URL");
    proxied
        .set_host(Some(&proxy.ip().to_string()))
        .expect("set host");
    proxied.set_port(Some(proxy.port())).expect("set port");
    proxied.to_string()
}

/// Where the main server listens.
async fn server_address(url: &str) -> SocketAddr {
    let parsed = url::Url::parse(url).expect("postgres URL");
    let host = parsed.host_str().expect("host").to_owned();
    let port = parsed.port().unwrap_or(5432);
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .expect("resolve the Postgres server")
        .next()
        .expect("an address for the Postgres server")
}

/// While 200 workflows run on the main Postgres server, a proxy between the application and
/// the server cuts connections at random every ~150 ms (at once, or with a request
/// half-sent or its answer lost, as at COMMIT): every workflow ends `SUCCESS` with the right
/// output, no step body ran twice, and every message, event and stream value is there.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workflow_succeeds_while_a_proxy_cuts_connections() {
    let db = TestDb::new(Backend::Postgres);
    let url = db.url.clone();
    // The body runs as a task so that the database is dropped whatever happens in it.
    let outcome = tokio::spawn(async move {
        let proxy = Proxy::start(server_address(&url).await).await;
        let app = launch(&through_proxy(&url, proxy.addr())).await;
        let workload = Workload::new(app.clone(), "proxy");
        let drivers = workload.spawn(Duration::from_secs(15));
        proxy.start_chaos(Duration::from_millis(150), Rng::random());
        workload
            .wait(drivers, Duration::from_secs(15) + PATIENCE)
            .await;
        proxy.stop_chaos();
        eprintln!(
            "proxy: {} connections, {} cut at once, {} cut with bytes in flight",
            proxy.accepted(),
            proxy.cut_now(),
            proxy.cut_in_flight()
        );
        if proxy.cut_now() == 0 || proxy.cut_in_flight() == 0 {
            workload.fail("the proxy cut too few connections to test anything".to_owned());
        }
        workload
            .check_after(&TestDb::with_url(Backend::Postgres, url))
            .await;
        workload.assert_no_failures("a proxy cutting connections");
        app.shutdown().await.expect("shutdown");
    })
    .await;
    db.drop_db().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

// ---- SQLite locked by another process ---------------------------------------------------------

/// The line the lock holder prints once it holds the write lock.
const LOCKED: &str = "CAIRN-CHAOS-LOCKED";

/// The second process of the SQLite test: take SQLite's write lock on
/// `$CAIRN_CHAOS_LOCK_FILE` (`BEGIN IMMEDIATE`), say so, hold it for `$CAIRN_CHAOS_LOCK_MS`,
/// and let go.
#[cfg(feature = "sqlite")]
#[test]
#[ignore = "the lock-holding process of the SQLite chaos test, started by it"]
fn sqlite_lock_holder() {
    let file = std::env::var("CAIRN_CHAOS_LOCK_FILE").expect("CAIRN_CHAOS_LOCK_FILE");
    let hold: u64 = std::env::var("CAIRN_CHAOS_LOCK_MS")
        .expect("CAIRN_CHAOS_LOCK_MS")
        .parse()
        .expect("milliseconds");
    let conn = common::sqlite::Connection::open(&file).expect("open the SQLite file");
    // Wait as long as it takes to get the lock between two of the application's writes.
    conn.busy_timeout(Duration::from_secs(60))
        .expect("busy timeout");
    conn.execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    println!("{LOCKED}");
    std::thread::sleep(Duration::from_millis(hold));
    conn.execute_batch("ROLLBACK").expect("release the lock");
}

/// This test binary, to run again as another process. On Linux `/proc/self/exe` still runs
/// this very binary after a concurrent build replaced or removed the file it was started from.
fn this_binary() -> std::path::PathBuf {
    let proc_exe = std::path::PathBuf::from("/proc/self/exe");
    if proc_exe.exists() {
        proc_exe
    } else {
        std::env::current_exe().expect("the test binary's path")
    }
}

/// Run [`sqlite_lock_holder`] in another process; returns once it holds the lock, with the
/// process (which lets go by itself after `hold`).
async fn hold_sqlite_lock(file: &str, hold: Duration) -> tokio::process::Child {
    let mut child = tokio::process::Command::new(this_binary())
        .args([
            "sqlite_lock_holder",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("CAIRN_CHAOS_LOCK_FILE", file)
        .env("CAIRN_CHAOS_LOCK_MS", hold.as_millis().to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the lock holder");
    let stdout = child.stdout.take().expect("the lock holder's stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let locked = within(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            // libtest prints the test's name on the same line first.
            if line.trim_end().ends_with(LOCKED) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        locked,
        Some(true),
        "the lock holder never took the write lock"
    );
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

/// While 200 workflows run on a SQLite file, another process holds the write lock for 6–8 s
/// (longer than any busy timeout a connection would wait by itself), three times: the
/// workflows wait it out — every one ends `SUCCESS` with the right output,
/// no step body ran twice, and every message, event and stream value is there.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workflow_waits_out_a_sqlite_write_lock_held_by_another_process() {
    let db = TestDb::new(Backend::Sqlite);
    let file = db
        .url
        .strip_prefix("sqlite:///")
        .expect("a sqlite file URL")
        .to_owned();
    let app = launch(&db.url).await;
    let workload = Workload::new(app.clone(), "sqlite-lock");
    let drivers = workload.spawn(Duration::from_secs(24));
    let mut rng = Rng::random();
    for round in 0..3 {
        // Pacing: let the workload run between locks.
        tokio::time::sleep(Duration::from_millis(rng.between(1000, 2000))).await;
        let hold = Duration::from_millis(rng.between(6000, 8000));
        let mut holder = hold_sqlite_lock(&file, hold).await;
        let in_flight = workload.in_flight();
        let status = holder.wait().await.expect("the lock holder's exit");
        assert!(status.success(), "the lock holder failed: {status}");
        eprintln!(
            "[{:>6} ms] lock {}: held {} ms, {in_flight} workflows in flight",
            workload.began.elapsed().as_millis(),
            round + 1,
            hold.as_millis()
        );
        if in_flight == 0 {
            workload.fail(format!(
                "lock {} hit no running workflow (the workload is too short)",
                round + 1
            ));
        }
    }
    workload.wait(drivers, PATIENCE).await;
    workload.check_after(&db).await;
    workload.assert_no_failures("SQLite write locks");
    app.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

// ---- launch() and a server that is not there ------------------------------------------------

/// `launch()` against a Postgres server that is not up yet keeps trying, and succeeds once
/// the server comes up (2 s later); the application then runs workflows.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_waits_for_a_postgres_server_that_comes_up_late() {
    let server = PgServer::init().await;
    let url = server.url("cairn_chaos_late");
    let launching =
        tokio::spawn(async move { Cairn::builder(APP).database_url(url).launch().await });
    // Pacing: the server comes up a while after launch() began.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !launching.is_finished(),
        "launch() returned before the server was up: {:?}",
        launching.await
    );
    server.start().await;
    let up = Instant::now();
    let app = within(Duration::from_secs(30), launching)
        .await
        .expect("launch() did not finish within 30 s of the server coming up")
        .expect("the launching task")
        .expect("launch() once the server is up");
    eprintln!(
        "launch() returned {} ms after the server came up",
        up.elapsed().as_millis()
    );
    assert_eq!(app.run(chaos_hello, 41).await.expect("a workflow"), 42);
    app.shutdown().await.expect("shutdown");
}

/// How long the next test lets `launch()` try.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// `launch()` against a Postgres server that never comes up fails after the configured
/// connect timeout, with an error that names the server it could not reach.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_fails_clearly_when_postgres_never_comes_up() {
    let port = free_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/cairn_chaos_never");
    let started = Instant::now();
    let outcome = within(
        CONNECT_TIMEOUT + Duration::from_secs(30),
        Cairn::builder(APP)
            .database_url(&url)
            .connect_timeout(CONNECT_TIMEOUT)
            .launch(),
    )
    .await
    .expect("launch() never gave up");
    let elapsed = started.elapsed();
    let error = outcome.expect_err("launch() succeeded with no server");
    let message = error.to_string();
    eprintln!(
        "launch() gave up after {} ms: {message}",
        elapsed.as_millis()
    );
    assert!(
        elapsed >= CONNECT_TIMEOUT.mul_f64(0.9),
        "launch() gave up after {} ms, before its {} s connect timeout: {message}",
        elapsed.as_millis(),
        CONNECT_TIMEOUT.as_secs()
    );
    assert!(
        elapsed <= CONNECT_TIMEOUT + Duration::from_secs(10),
        "launch() took {} ms to give up, its connect timeout is {} s",
        elapsed.as_millis(),
        CONNECT_TIMEOUT.as_secs()
    );
    assert!(
        message.contains(&port.to_string()),
        "the error does not name the server it could not reach: {message}"
    );
}
