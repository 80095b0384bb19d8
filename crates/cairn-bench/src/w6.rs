//! w6: recovery after a SIGKILL. A child process (this binary again, with the hidden
//! `--interrupted-child` flag) starts `n` workflows that each record one step and then block,
//! half of them in a durable sleep and half in a `recv`; once every one of them has recorded
//! its durable deadline, the bench kills the child with SIGKILL. While nothing runs them, it
//! sends each receiver its message and waits until every sleep is due; then it launches Cairn
//! again and times the launch (whose recovery reclaims them all) until every workflow has
//! completed, durably.
//!
//! Completion is read from the database (`status = 'SUCCESS'` counted on a connection of
//! the bench's own), so what is timed is the commits, not the bodies returning.
//!
//! `backlog` runs the same mechanics with every workflow in a `recv`, at scale: the
//! relaunch's recovery must take back `n` PENDING workflows of its executor, and the messages
//! are sent only once the launch has returned, from the relaunched application itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn::{Cairn, StartOptions};
use futures::{FutureExt, StreamExt, TryFutureExt, TryStreamExt};

use crate::cli::Workload;
use crate::database::{self, BenchDatabase};
use crate::error::{BenchError, Context};
use crate::memory;
use crate::park::IN_FLIGHT;
use crate::workloads::{Extra, Measurement};

/// How long a sleeper sleeps: long enough that none wakes before the kill (the child checks),
/// short enough that the bench need not wait long for every sleep to be due.
const SLEEP: Duration = Duration::from_secs(3);

/// A receiver's timeout: far beyond the run, so it is the message that wakes it.
const RECV_TIMEOUT: Duration = Duration::from_secs(600);

/// The topic the receivers wait on.
const TOPIC: &str = "w6";

/// How long the bench waits for the child to block every workflow, and for the recovered
/// ones to complete.
const GIVE_UP: Duration = Duration::from_secs(900);

/// How often the database is polled while the child blocks its workflows and once every
/// recovered body has returned (the wait for the first completion polls more often).
const POLL: Duration = Duration::from_millis(5);

/// Workflows whose body returned in this process.
static FINISHED: LazyLock<tokio::sync::watch::Sender<usize>> =
    LazyLock::new(|| tokio::sync::watch::channel(0).0);

/// When each body returned, microseconds since [`EPOCH`], in the order they returned.
static RETURNED: LazyLock<std::sync::Mutex<Vec<u64>>> = LazyLock::new(Default::default);

/// The instant the bench measures from, shared with the workflow bodies.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Bodies that returned in the child (there must be none: every one is killed blocked).
static RETURNED_IN_CHILD: AtomicUsize = AtomicUsize::new(0);

/// A step that does nothing but record its checkpoint.
#[cairn::step]
async fn first_step(seed: u32) -> Result<u32, cairn::Error> {
    Ok(seed)
}

/// One step, then blocked: in a durable sleep (even seeds) or a `recv` (odd seeds).
#[cairn::workflow]
async fn interrupted(seed: u32) -> Result<u32, cairn::Error> {
    let value = first_step(seed).await?;
    if !receives(seed) {
        cairn::sleep(SLEEP).await?;
    } else {
        let _: Option<u32> = cairn::recv(TOPIC, RECV_TIMEOUT).await?;
    }
    RETURNED_IN_CHILD.fetch_add(1, Ordering::Relaxed);
    RETURNED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(EPOCH.elapsed().as_micros() as u64);
    FINISHED.send_modify(|n| *n += 1);
    Ok(value)
}

/// One step, then blocked in a `recv` (backlog).
#[cairn::workflow]
async fn backlogged(seed: u32) -> Result<u32, cairn::Error> {
    let value = first_step(seed).await?;
    let message: Option<u32> = cairn::recv(TOPIC, RECV_TIMEOUT).await?;
    RETURNED_IN_CHILD.fetch_add(1, Ordering::Relaxed);
    RETURNED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(EPOCH.elapsed().as_micros() as u64);
    FINISHED.send_modify(|n| *n += 1);
    // The message is the seed: a mix-up shows as a wrong result.
    Ok(if message == Some(seed) {
        value
    } else {
        u32::MAX
    })
}

/// The id of the `seed`th workflow.
fn workflow_id(seed: u32) -> String {
    format!("w6-{seed}")
}

/// Whether the `seed`th workflow waits in `recv` (else in a sleep).
fn receives(seed: u32) -> bool {
    !seed.is_multiple_of(2)
}

/// The hidden child mode: launch Cairn on `url`, start `n` workflows (w6's mix, or backlog's
/// receivers), wait until each has recorded its durable deadline, say `ready` on stdout, and
/// wait to be killed (or for stdin to close, should the bench die first).
pub async fn child(
    url: &str,
    workload: Workload,
    n: usize,
    pool_size: usize,
) -> Result<(), BenchError> {
    let app = Cairn::builder("cairn-bench")
        .database_url(url)
        .pool_size(pool_size)
        .launch()
        .await
        .context("launching Cairn in the child")?;
    let backlog = workload == Workload::Backlog;
    futures::stream::iter(0..n as u32)
        .map(|seed| {
            let options = StartOptions::id(workflow_id(seed));
            if backlog {
                app.start_with(options, backlogged, seed)
                    .map_ok(drop)
                    .boxed()
            } else {
                app.start_with(options, interrupted, seed)
                    .map_ok(drop)
                    .boxed()
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await
        .context("starting a workflow in the child")?;
    let probe = Probe::open(url).await?;
    let blocked = "until every workflow has recorded its durable deadline";
    probe.until(&DEADLINES, n as i64, POLL, blocked).await?;
    if RETURNED_IN_CHILD.load(Ordering::Relaxed) > 0 {
        return Err(BenchError::new(
            "blocking the workflows in the child",
            format!("some sleeps of {SLEEP:?} ended before all workflows were blocked"),
        ));
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready").context("telling the bench")?;
    stdout.flush().context("telling the bench")?;
    drop(stdout);
    // Until killed; if the bench went away instead, its end of stdin closes.
    tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new()))
        .await
        .context("waiting to be killed")?
        .context("waiting to be killed")?;
    Err(BenchError::new(
        "waiting to be killed",
        "the bench closed stdin first",
    ))
}

/// Run w6 on `database`: interrupt `n` workflows in a child, then time their recovery. The
/// latencies are each workflow's from the relaunch call until its body returned; the total
/// runs until every one had completed durably.
pub async fn run(
    database: &BenchDatabase,
    n: usize,
    pool_size: usize,
) -> Result<Measurement, BenchError> {
    LazyLock::force(&EPOCH);
    let url = database.url();
    interrupt_in_child(&url, Workload::W6, n).await?;
    // Every sleep was recorded by now, so each is due `SLEEP` from here at the latest.
    let all_due = Instant::now() + SLEEP;
    send_messages(&url, n, pool_size).await?;
    tokio::time::sleep(all_due.saturating_duration_since(Instant::now())).await;

    let probe = Probe::open(&url).await?;
    let before = probe.count(&COMPLETED).await?;
    if before != 0 {
        return Err(BenchError::new(
            "checking the interrupted workflows",
            format!("{before} completed before the restart"),
        ));
    }
    let finished = FINISHED.subscribe();
    let started = Instant::now();
    let since_epoch = EPOCH.elapsed();
    let first = first_completion(&url, started).await?;
    let app = Cairn::builder("cairn-bench")
        .database_url(&url)
        .pool_size(pool_size)
        .launch()
        .await
        .context("relaunching Cairn")?;
    let launch = started.elapsed();
    let outcome = async {
        let mut finished = finished;
        tokio::time::timeout(GIVE_UP, finished.wait_for(|&done| done >= n))
            .await
            .map_err(|_| {
                BenchError::new(
                    "waiting for recovery",
                    format!("not done within {GIVE_UP:?}"),
                )
            })?
            .context("waiting for recovery")?;
        probe
            .until(&COMPLETED, n as i64, POLL, "every completion")
            .await?;
        Ok::<_, BenchError>(started.elapsed())
    }
    .await;
    let shut_down = app.shutdown().await.context("shutting Cairn down");
    let total = outcome?;
    let first_completion = first
        .await
        .context("joining the first-completion probe")??;
    shut_down?;
    Ok(Measurement {
        latencies: returned_since(since_epoch),
        total,
        warm_up: 0,
        baseline: None,
        enqueue_to_start: None,
        launch: Some(launch),
        first_completion: Some(first_completion),
    })
}

/// Run `workload`'s child on `url` until it has blocked its `n` workflows, then kill it with
/// SIGKILL.
async fn interrupt_in_child(url: &str, workload: Workload, n: usize) -> Result<(), BenchError> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || interrupt_blocking(&url, workload, n))
        .await
        .context("waiting for the child")?
}

/// [`interrupt_in_child`], on a thread that may block.
fn interrupt_blocking(url: &str, workload: Workload, n: usize) -> Result<(), BenchError> {
    let mut child = KilledOnDrop(spawn_child(url, workload, n)?);
    let stdout = child.0.stdout.take().ok_or_else(|| {
        BenchError::new("starting the child", "its stdout is not piped".to_owned())
    })?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the child's stdout")?;
    if line.trim() != "ready" {
        return Err(BenchError::new(
            "waiting for the child to block its workflows",
            "it ended without saying ready (its error is above)",
        ));
    }
    // `Child::kill` is SIGKILL on unix: no shutdown, no flush, as in a crash.
    child.0.kill().context("killing the child")?;
    child.0.wait().context("reaping the child")?;
    Ok(())
}

/// Run backlog on `database`: `n` workflows blocked in `recv` by a child killed with SIGKILL,
/// then Cairn launched again (its recovery takes them all back) and, once the launch has
/// returned, each sent its message from the relaunched application. The latencies are each
/// workflow's from the relaunch call until its body returned; the total runs until every
/// one had completed durably.
pub async fn backlog(
    database: &BenchDatabase,
    n: usize,
    pool_size: usize,
) -> Result<(Measurement, Extra), BenchError> {
    LazyLock::force(&EPOCH);
    let url = database.url();
    interrupt_in_child(&url, Workload::Backlog, n).await?;
    let probe = Probe::open(&url).await?;
    let pending = probe.count(&PENDING).await?;
    if pending != n as i64 {
        return Err(BenchError::new(
            "checking the interrupted workflows",
            format!("{pending} of {n} are PENDING"),
        ));
    }
    memory::reset_peak();
    let rss_before = memory::rss()?;
    let finished = FINISHED.subscribe();
    let started = Instant::now();
    let since_epoch = EPOCH.elapsed();
    let first = first_completion(&url, started).await?;
    let app = Cairn::builder("cairn-bench")
        .database_url(&url)
        .pool_size(pool_size)
        .launch()
        .await
        .context("relaunching Cairn")?;
    let launch = started.elapsed();
    let rss_launched = memory::rss()?;
    let outcome = async {
        futures::stream::iter(0..n as u32)
            .map(|seed| {
                let app = &app;
                async move { app.send(&workflow_id(seed), TOPIC, &seed).await }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<()>()
            .await
            .context("sending the recovered workflows their messages")?;
        let sent = started.elapsed();
        let mut finished = finished;
        tokio::time::timeout(GIVE_UP, finished.wait_for(|&done| done >= n))
            .await
            .map_err(|_| {
                BenchError::new(
                    "waiting for recovery",
                    format!("not done within {GIVE_UP:?}"),
                )
            })?
            .context("waiting for recovery")?;
        probe
            .until(&COMPLETED, n as i64, POLL, "every completion")
            .await?;
        let total = started.elapsed();
        let wrong = probe.count(&WRONG_RESULTS).await?;
        if wrong != 0 {
            return Err(BenchError::new(
                "checking the recovered workflows' results",
                format!("{wrong} of {n} did not return their own seed"),
            ));
        }
        Ok::<_, BenchError>((sent, total))
    }
    .await;
    let shut_down = app.shutdown().await.context("shutting Cairn down");
    let (sent, total) = outcome?;
    let first_completion = first
        .await
        .context("joining the first-completion probe")??;
    shut_down?;
    let peak = memory::peak()?;
    let mut extra = Extra::new();
    extra.insert("all_completed_ms".into(), round3(millis(total)).into());
    extra.insert("sent_ms".into(), round3(millis(sent)).into());
    extra.insert("rss_before_mb".into(), memory::megabytes(rss_before).into());
    extra.insert(
        "rss_launched_mb".into(),
        memory::megabytes(rss_launched).into(),
    );
    extra.insert("peak_rss_mb".into(), memory::megabytes(peak).into());
    extra.insert(
        "rss_growth_per_workflow_bytes".into(),
        (peak.saturating_sub(rss_before) / n as u64).into(),
    );
    Ok((
        Measurement {
            latencies: returned_since(since_epoch),
            total,
            warm_up: 0,
            baseline: None,
            enqueue_to_start: None,
            launch: Some(launch),
            first_completion: Some(first_completion),
        },
        extra,
    ))
}

/// A task polling (every millisecond) for the first completion; it answers the time since
/// `started`.
async fn first_completion(
    url: &str,
    started: Instant,
) -> Result<tokio::task::JoinHandle<Result<Duration, BenchError>>, BenchError> {
    let probe = Probe::open(url).await?;
    Ok(tokio::spawn(async move {
        probe
            .until(
                &COMPLETED,
                1,
                Duration::from_millis(1),
                "the first completion",
            )
            .await
            .map(|()| started.elapsed())
    }))
}

/// Each body's return, from `origin` (since [`EPOCH`]).
fn returned_since(origin: Duration) -> Vec<Duration> {
    let origin = origin.as_micros() as u64;
    RETURNED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|&at| Duration::from_micros(at.saturating_sub(origin)))
        .collect()
}

/// A duration in milliseconds.
fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Rounded to three decimals.
fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Start this binary as `workload`'s child on the Cairn database `url`.
fn spawn_child(url: &str, workload: Workload, n: usize) -> Result<Child, BenchError> {
    let exe: PathBuf = std::env::current_exe().context("finding the bench's own binary")?;
    Command::new(exe)
        .args([
            workload.name(),
            "--n",
            &n.to_string(),
            "--interrupted-child",
            url,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the child process")
}

/// A child process killed (SIGKILL) and reaped if the bench leaves before doing so itself.
struct KilledOnDrop(Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// While the child is dead, send each receiver its message, from a Cairn application of
/// another executor id that recovers nothing.
async fn send_messages(url: &str, n: usize, pool_size: usize) -> Result<(), BenchError> {
    let sender = Cairn::builder("cairn-bench")
        .database_url(url)
        .pool_size(pool_size)
        .executor_id("w6-sender")
        .recover_on_launch(false)
        .takeover(false)
        .launch()
        .await
        .context("launching the sender")?;
    let sends: Vec<_> = (0..n as u32)
        .filter(|&seed| receives(seed))
        .map(|seed| {
            let sender = sender.clone();
            tokio::spawn(async move {
                sender
                    .send(&workflow_id(seed), TOPIC, &seed)
                    .await
                    .context("sending a receiver its message")
            })
        })
        .collect();
    let sent = futures::future::join_all(sends).await;
    let shut_down = sender.shutdown().await.context("shutting the sender down");
    for outcome in sent {
        outcome.context("joining a send task")??;
    }
    shut_down
}

/// A count the bench reads from the system database, as a statement per backend.
pub struct Count {
    /// What is counted, for messages.
    what: &'static str,
    /// On SQLite (no schema).
    sqlite: &'static str,
    /// On Postgres (DBOS's default schema).
    postgres: &'static str,
}

/// Workflows blocked with their durable deadline recorded: a sleep's, or a `recv`'s (which
/// is recorded as a `DBOS.sleep` too).
pub static DEADLINES: Count = Count {
    what: "recorded deadlines",
    sqlite: "SELECT count(*) FROM operation_outputs WHERE function_name = 'DBOS.sleep'",
    postgres: "SELECT count(*) FROM dbos.operation_outputs WHERE function_name = 'DBOS.sleep'",
};

/// Workflows completed.
pub static COMPLETED: Count = Count {
    what: "completed workflows",
    sqlite: "SELECT count(*) FROM workflow_status WHERE status = 'SUCCESS'",
    postgres: "SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS'",
};

/// Workflows waiting to be recovered.
static PENDING: Count = Count {
    what: "pending workflows",
    sqlite: "SELECT count(*) FROM workflow_status WHERE status = 'PENDING'",
    postgres: "SELECT count(*) FROM dbos.workflow_status WHERE status = 'PENDING'",
};

/// Backlog workflows whose result is not their seed (the message they got was not theirs).
static WRONG_RESULTS: Count = Count {
    what: "wrong results",
    sqlite: "SELECT count(*) FROM workflow_output \
             WHERE workflow_uuid LIKE 'w6-%' AND output <> substr(workflow_uuid, 4)",
    postgres: "SELECT count(*) FROM dbos.workflow_output \
               WHERE workflow_uuid LIKE 'w6-%' AND output <> substr(workflow_uuid, 4)",
};

/// A connection of the bench's own to the system database, for [`Count`]s.
pub enum Probe {
    Sqlite(std::sync::Mutex<rusqlite::Connection>),
    Postgres(tokio_postgres::Client),
}

impl Probe {
    /// Connect to the Cairn database `url` (`sqlite:///path` or `postgres://…`).
    pub async fn open(url: &str) -> Result<Self, BenchError> {
        match url.strip_prefix("sqlite:///") {
            Some(path) => {
                let conn = rusqlite::Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .context(format!("opening {path}"))?;
                conn.busy_timeout(Duration::from_secs(5))
                    .context("configuring the probe")?;
                Ok(Self::Sqlite(std::sync::Mutex::new(conn)))
            }
            None => Ok(Self::Postgres(database::connect(url).await?)),
        }
    }

    /// Read `count` once.
    pub async fn count(&self, count: &Count) -> Result<i64, BenchError> {
        let doing = format!("counting the {}", count.what);
        match self {
            Self::Sqlite(conn) => conn
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .prepare_cached(count.sqlite)
                .and_then(|mut s| s.query_row([], |row| row.get(0)))
                .context(doing),
            Self::Postgres(client) => client
                .query_one(count.postgres, &[])
                .await
                .and_then(|row| row.try_get(0))
                .context(doing),
        }
    }

    /// Read `count` every `every` until it reaches `target`.
    pub async fn until(
        &self,
        count: &Count,
        target: i64,
        every: Duration,
        doing: &str,
    ) -> Result<(), BenchError> {
        let give_up = Instant::now() + GIVE_UP;
        loop {
            if self.count(count).await? >= target {
                return Ok(());
            }
            if Instant::now() >= give_up {
                return Err(BenchError::new(
                    format!("waiting {doing}"),
                    format!("fewer than {target} {} after {GIVE_UP:?}", count.what),
                ));
            }
            tokio::time::sleep(every).await;
        }
    }
}
