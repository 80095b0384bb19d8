//! Durable waits across real crashes: a worker process runs one scenario's workflow, the test
//! SIGKILLs it while the workflow sleeps, waits for a message or an event, or writes a stream,
//! restarts it, and checks that the wait kept its original deadline and lost nothing.
//!
//! The worker is this test binary itself, run with `durable_worker --ignored`; it reports
//! progress as lines in a side file the test polls. The test keeps an application of its own
//! on the same database (another executor id, no recovery) to send, start and read.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn::{Cairn, StartOptions};
use common::TestDb;
use futures::StreamExt;

/// The application name both the worker and the test's own application use.
const APP: &str = "cairn-crash-durable";

/// The id of each scenario's workflow (every test has a database of its own).
const WORKFLOW_ID: &str = "durable-under-test";

/// The id of the workflow that sets the event of the `event` scenario.
const SETTER_ID: &str = "event-setter";

/// How long the durable sleep of the `sleep` scenario lasts.
const SLEEP: Duration = Duration::from_secs(4);

/// The `recv` timeout of the `recv` scenarios.
const RECV_TIMEOUT: Duration = Duration::from_secs(3);

/// How late a durable wait may end after its recorded deadline (restart and polling included).
const LATENESS_MS: i64 = 1500;

/// Values written to the stream of the `stream` scenario.
const STREAM_VALUES: u32 = 20;

/// The longest the test waits for any one sign of progress from a worker.
const PATIENCE: Duration = Duration::from_secs(20);

fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ---- The worker side ---------------------------------------------------------------------

/// Append one line to the side file (one `write` call, so lines never interleave).
fn log_line(line: String) {
    common::side_log::append("CAIRN_DURABLE_LOG", &line);
}

/// Log `<what> <epoch ms>` once (a step, so a replay neither repeats it nor moves the time).
#[cairn::step]
async fn mark(what: String) -> Result<i64, cairn::Error> {
    let now = epoch_ms();
    log_line(format!("{what} {now}"));
    Ok(now)
}

/// Sleep durably; returns (start, wake-up) in epoch ms.
#[cairn::workflow]
async fn sleeper(seconds: u64) -> Result<(i64, i64), cairn::Error> {
    let started = mark("started".to_owned()).await?;
    cairn::sleep(Duration::from_secs(seconds)).await?;
    let woke = epoch_ms();
    log_line(format!("slept {woke}"));
    Ok((started, woke))
}

/// Wait for a message on topic `t`; logs and returns what came (or `None`).
#[cairn::workflow]
async fn receiver(timeout_ms: u64) -> Result<Option<String>, cairn::Error> {
    mark("waiting".to_owned()).await?;
    let message = cairn::recv::<String>("t", Duration::from_millis(timeout_ms)).await?;
    log_line(format!(
        "received {} {}",
        epoch_ms(),
        serde_json::to_string(&message).expect("json")
    ));
    Ok(message)
}

/// Wait for the event `k` of the workflow `setter_id`.
#[cairn::workflow]
async fn event_waiter(setter_id: String) -> Result<Option<i64>, cairn::Error> {
    mark("waiting".to_owned()).await?;
    let value = cairn::get_event::<i64>(&setter_id, "k", Duration::from_secs(30)).await?;
    log_line(format!("event {value:?}"));
    Ok(value)
}

/// Set the event `k` (run by the test's own application, not the worker).
#[cairn::workflow]
async fn event_setter(value: i64) -> Result<(), cairn::Error> {
    cairn::set_event("k", &value).await
}

/// A pause between stream writes, checkpointed so a restart does not redo finished ones.
#[cairn::step]
async fn pause(i: u32) -> Result<u32, cairn::Error> {
    tokio::time::sleep(Duration::from_millis(100)).await;
    log_line(format!("paused {i}"));
    Ok(i)
}

/// Write 0..count to the stream `s`, a pause before each value, then close it.
#[cairn::workflow]
async fn stream_writer(count: u32) -> Result<u32, cairn::Error> {
    for i in 0..count {
        pause(i).await?;
        cairn::write_stream("s", &i).await?;
    }
    cairn::close_stream("s").await?;
    Ok(count)
}

/// The worker process: launch (which recovers the scenario's workflow after a kill), start the
/// scenario's workflow by its id (idempotent), wait for it and log its output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the worker process of the durable crash tests, started by them"]
async fn durable_worker() {
    let url = std::env::var("CAIRN_DURABLE_URL").expect("CAIRN_DURABLE_URL");
    let scenario = std::env::var("CAIRN_DURABLE_SCENARIO").expect("CAIRN_DURABLE_SCENARIO");
    let run = std::env::var("CAIRN_DURABLE_RUN").unwrap_or_default();
    let app = Cairn::builder(APP)
        .database_url(url)
        .launch()
        .await
        .expect("launch");
    log_line(format!("launched {run}"));
    let options = StartOptions::id(WORKFLOW_ID);
    let output = match scenario.as_str() {
        "sleep" => {
            let handle = app.start_with(options, sleeper, SLEEP.as_secs()).await;
            serde_json::to_string(&handle.expect("start").result().await.expect("result"))
        }
        "recv" => {
            let timeout_ms = RECV_TIMEOUT.as_millis() as u64;
            let handle = app.start_with(options, receiver, timeout_ms).await;
            serde_json::to_string(&handle.expect("start").result().await.expect("result"))
        }
        "event" => {
            let handle = app
                .start_with(options, event_waiter, SETTER_ID.to_owned())
                .await;
            serde_json::to_string(&handle.expect("start").result().await.expect("result"))
        }
        "stream" => {
            let handle = app.start_with(options, stream_writer, STREAM_VALUES).await;
            serde_json::to_string(&handle.expect("start").result().await.expect("result"))
        }
        other => panic!("unknown scenario {other}"),
    };
    log_line(format!("result {}", output.expect("json")));
    app.shutdown().await.expect("shutdown");
}

// ---- The test side -----------------------------------------------------------------------

/// One scenario's run: its database, its side file, its worker and the test's own application.
struct Harness {
    url: String,
    scenario: &'static str,
    log: PathBuf,
    runs: usize,
    app: Cairn,
}

impl Harness {
    /// The test's application on `db` (launched first, so it creates the database), which
    /// never recovers or takes over work and runs as another executor, so it never takes the
    /// worker's workflows.
    async fn new(db: &TestDb, scenario: &'static str) -> Self {
        let app = db
            .builder(APP)
            .executor_id("crash-durable-test")
            .recover_on_launch(false)
            .takeover(false)
            .launch()
            .await
            .expect("launch the test's application");
        let log = std::env::temp_dir().join(format!(
            "cairn-crash-durable-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        Self {
            url: db.url.clone(),
            scenario,
            log,
            runs: 0,
            app,
        }
    }

    /// Start a worker process (the next run).
    fn spawn(&mut self) -> Child {
        let child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "durable_worker",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("CAIRN_DURABLE_URL", &self.url)
            .env("CAIRN_DURABLE_SCENARIO", self.scenario)
            .env("CAIRN_DURABLE_LOG", &self.log)
            .env("CAIRN_DURABLE_RUN", self.runs.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn worker");
        self.runs += 1;
        child
    }

    fn lines(&self) -> Vec<String> {
        common::side_log::read(&self.log)
    }

    /// Wait until the side file has a line `line` (or one starting with `line `) and return
    /// what follows it. The worker must stay alive meanwhile.
    async fn wait_line(&self, worker: &mut Child, line: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found = self.lines().into_iter().find_map(|l| {
                if l == line {
                    Some(String::new())
                } else {
                    l.strip_prefix(&format!("{line} ")).map(str::to_owned)
                }
            });
            if let Some(rest) = found {
                return rest;
            }
            assert!(
                worker.try_wait().expect("worker status").is_none(),
                "the worker exited before logging `{line}`"
            );
            assert!(
                Instant::now() < deadline,
                "the worker never logged `{line}`"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Wait until the workflow has recorded an operation named `name` (so the kill lands
    /// after it, not before).
    async fn wait_checkpoint(&self, name: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let steps = self.app.list_steps(WORKFLOW_ID).await.expect("list steps");
            if steps.iter().any(|s| s.name == name) {
                return;
            }
            assert!(Instant::now() < deadline, "no {name} checkpoint recorded");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Wait for the worker to exit by itself, successfully.
    async fn wait_exit(&self, mut worker: Child) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = worker.try_wait().expect("worker status") {
                assert!(status.success(), "the worker failed: {status}");
                return;
            }
            if Instant::now() >= deadline {
                let _ = worker.kill();
                let _ = worker.wait();
                panic!("the worker did not finish");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The JSON the worker logged as the workflow's output.
    fn result<T: serde::de::DeserializeOwned>(&self) -> T {
        let lines = self.lines();
        let results: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("result "))
            .collect();
        assert_eq!(results.len(), 1, "one result line in {lines:?}");
        serde_json::from_str(results[0]).expect("result json")
    }

    /// The first word after `prefix ` on the one line that starts so.
    fn logged(&self, prefix: &str) -> String {
        let prefix = format!("{prefix} ");
        let found: Vec<String> = self
            .lines()
            .into_iter()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        assert_eq!(found.len(), 1, "one `{prefix}` line");
        found[0].split(' ').next().unwrap_or_default().to_owned()
    }

    /// How many lines start with `prefix `.
    fn count(&self, prefix: &str) -> usize {
        let prefix = format!("{prefix} ");
        self.lines()
            .iter()
            .filter(|l| l.starts_with(&prefix))
            .count()
    }

    async fn finish(self) {
        let _ = std::fs::remove_file(&self.log);
        self.app
            .shutdown()
            .await
            .expect("shutdown the test's application");
    }
}

/// SIGKILL a worker and reap it.
fn kill(mut worker: Child) {
    worker.kill().expect("SIGKILL the worker");
    worker.wait().expect("reap the worker");
}

fn parse_ms(text: &str) -> i64 {
    text.trim().parse().expect("epoch ms")
}

/// A durable sleep interrupted by SIGKILL wakes at its original deadline (start + 4 s), not
/// 4 s after the restart.
async fn a_killed_sleep_wakes_at_its_original_deadline(db: &TestDb) {
    let mut h = Harness::new(db, "sleep").await;
    let mut worker = h.spawn();
    let started = parse_ms(&h.wait_line(&mut worker, "started").await);
    h.wait_checkpoint("DBOS.sleep").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    kill(worker);
    let restarted = epoch_ms();
    let worker = h.spawn();
    h.wait_exit(worker).await;

    let (recorded_start, woke): (i64, i64) = h.result();
    assert_eq!(recorded_start, started, "the start was replayed, not rerun");
    assert_eq!(h.count("started"), 1, "the step before the sleep ran once");
    let deadline = started + SLEEP.as_millis() as i64;
    eprintln!(
        "sleep: woke at start + {} ms, restart + {} ms",
        woke - started,
        woke - restarted
    );
    assert!(
        (deadline..=deadline + LATENESS_MS).contains(&woke),
        "woke at start + {} ms, expected start + {} ms (+{LATENESS_MS})",
        woke - started,
        SLEEP.as_millis()
    );
    assert!(
        woke < restarted + SLEEP.as_millis() as i64,
        "woke {} ms after the restart: the sleep started over",
        woke - restarted
    );
    h.finish().await;
}

/// Kill a `receiver` while it waits in `recv` (after its deadline is recorded) and restart it.
/// Returns the harness, the time it started waiting, and the restarted worker.
async fn kill_a_waiting_receiver(db: &TestDb) -> (Harness, i64, Child, i64) {
    let mut h = Harness::new(db, "recv").await;
    let mut worker = h.spawn();
    let waiting = parse_ms(&h.wait_line(&mut worker, "waiting").await);
    h.wait_checkpoint("DBOS.sleep").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    kill(worker);
    let restarted = epoch_ms();
    let mut worker = h.spawn();
    h.wait_line(&mut worker, "launched 1").await;
    (h, waiting, worker, restarted)
}

/// A message sent after the receiver was killed and restarted reaches its pending `recv`
/// before the original deadline.
async fn a_restarted_recv_receives_a_message_sent_after_the_crash(db: &TestDb) {
    let (h, waiting, worker, _) = kill_a_waiting_receiver(db).await;
    h.app
        .send(WORKFLOW_ID, "t", "after the crash")
        .await
        .expect("send");
    h.wait_exit(worker).await;

    let received: Option<String> = h.result();
    assert_eq!(received.as_deref(), Some("after the crash"));
    assert_eq!(h.count("waiting"), 1, "the step before recv ran once");
    let at = parse_ms(&h.logged("received"));
    eprintln!("recv: received at waiting + {} ms", at - waiting);
    assert!(
        at < waiting + RECV_TIMEOUT.as_millis() as i64,
        "received {} ms after waiting began, past the deadline",
        at - waiting
    );
    h.finish().await;
}

/// With no message, a `recv` interrupted by SIGKILL returns `None` at its original deadline,
/// not a full timeout after the restart.
async fn a_restarted_recv_times_out_at_its_original_deadline(db: &TestDb) {
    let (h, waiting, worker, restarted) = kill_a_waiting_receiver(db).await;
    h.wait_exit(worker).await;

    let received: Option<String> = h.result();
    assert_eq!(received, None);
    let at = parse_ms(&h.logged("received"));
    let deadline = waiting + RECV_TIMEOUT.as_millis() as i64;
    eprintln!(
        "recv: timed out at waiting + {} ms, restart + {} ms",
        at - waiting,
        at - restarted
    );
    assert!(
        (deadline..=deadline + LATENESS_MS).contains(&at),
        "timed out {} ms after waiting began, expected {} ms (+{LATENESS_MS})",
        at - waiting,
        RECV_TIMEOUT.as_millis()
    );
    assert!(
        at < restarted + RECV_TIMEOUT.as_millis() as i64,
        "timed out {} ms after the restart: the timeout started over",
        at - restarted
    );
    let steps = h.app.list_steps(WORKFLOW_ID).await.expect("steps");
    let recv = steps
        .iter()
        .find(|s| s.name == "DBOS.recv")
        .expect("recv checkpoint");
    assert_eq!(recv.raw_output.as_deref(), Some("null"));
    h.finish().await;
}

/// A `get_event` interrupted by SIGKILL, resumed in a new process, returns the value another
/// process sets afterwards, and its `DBOS.getEvent` checkpoint holds that value.
async fn a_restarted_get_event_sees_an_event_set_after_the_crash(db: &TestDb) {
    let mut h = Harness::new(db, "event").await;
    let mut worker = h.spawn();
    h.wait_line(&mut worker, "waiting").await;
    h.wait_checkpoint("DBOS.sleep").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    kill(worker);
    let mut worker = h.spawn();
    h.wait_line(&mut worker, "launched 1").await;
    let setter = h
        .app
        .start_with(StartOptions::id(SETTER_ID), event_setter, 42)
        .await
        .expect("start the setter");
    setter.result().await.expect("the setter finished");
    h.wait_exit(worker).await;

    let value: Option<i64> = h.result();
    assert_eq!(value, Some(42));
    let steps = h.app.list_steps(WORKFLOW_ID).await.expect("steps");
    let get_event = steps
        .iter()
        .find(|s| s.name == "DBOS.getEvent")
        .expect("getEvent checkpoint");
    let recorded: Option<i64> =
        serde_json::from_str(get_event.raw_output.as_deref().expect("output")).expect("json");
    assert_eq!(recorded, Some(42));
    h.finish().await;
}

/// A reader in another process follows a stream whose writer is SIGKILLed mid-way and
/// restarted: it yields exactly 0..20, in order, once each, then ends.
async fn a_stream_reader_sees_every_value_once_across_a_writer_crash(db: &TestDb) {
    let mut h = Harness::new(db, "stream").await;
    let mut worker = h.spawn();
    // The reader starts once the writer exists (a stream of no workflow ends at once).
    h.wait_line(&mut worker, "paused 0").await;
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let stream = h.app.read_stream::<u32>(WORKFLOW_ID, "s");
    let reader = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(value) = stream.next().await {
            let _ = seen_tx.send(value.expect("stream value"));
        }
    });
    // Kill the writer once the reader has followed it part of the way.
    let mut values = Vec::new();
    while values.len() < 5 {
        let value = tokio::time::timeout(PATIENCE, seen.recv())
            .await
            .expect("the reader saw a value")
            .expect("the reader ended early");
        values.push(value);
    }
    kill(worker);
    assert!(
        h.count("paused") < STREAM_VALUES as usize,
        "the writer finished before it was killed"
    );
    // Let the reader face a dead writer for a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let worker = h.spawn();
    h.wait_exit(worker).await;

    while let Some(value) = tokio::time::timeout(PATIENCE, seen.recv())
        .await
        .expect("the reader ended")
    {
        values.push(value);
    }
    reader.await.expect("the reader task");
    assert_eq!(values, (0..STREAM_VALUES).collect::<Vec<_>>());
    let output: u32 = h.result();
    assert_eq!(output, STREAM_VALUES);
    h.finish().await;
}

both_backends!(
    a_killed_sleep_wakes_at_its_original_deadline,
    a_restarted_recv_receives_a_message_sent_after_the_crash,
    a_restarted_recv_times_out_at_its_original_deadline,
    a_restarted_get_event_sees_an_event_set_after_the_crash,
    a_stream_reader_sees_every_value_once_across_a_writer_crash,
);
