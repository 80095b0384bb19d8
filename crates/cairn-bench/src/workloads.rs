//! The workflows a benchmark runs, and the patterns it runs them in.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use cairn::Cairn;

use crate::cli::Workload;
use crate::error::{BenchError, Context};
use crate::memory;

/// Figures particular to a workload, added to its report's line (`Report::extra`).
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// No-op steps in each workflow of w1 and w2.
const STEPS: u32 = 10;

/// A step that does nothing, so all it costs is its checkpoint.
#[cairn::step]
async fn noop(i: u32) -> Result<u32, cairn::Error> {
    Ok(i)
}

/// Ten no-op steps in a row (w1, w2).
#[cairn::workflow]
async fn ten_steps(seed: u32) -> Result<u32, cairn::Error> {
    let mut last = seed;
    for i in 0..STEPS {
        last = noop(seed.wrapping_add(i)).await?;
    }
    Ok(last)
}

/// A workflow with no steps (w4): the fixed cost of starting and finishing one.
#[cairn::workflow]
async fn empty(seed: u32) -> Result<u32, cairn::Error> {
    Ok(seed)
}

/// How long the w5 receiver waits for each message, and the bench for each answer.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The instant w5 measures from: the bench and the receiver run in one process, so both read
/// this monotonic clock and the receiver can report when its `recv` returned.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Microseconds since [`EPOCH`].
fn micros_since_epoch() -> u64 {
    EPOCH.elapsed().as_micros() as u64
}

/// The w5 receiver: for each of up to `count` messages on topic `ping` (each carrying its
/// round number), note when `recv` returned and publish that as the event `pong-<round>`.
/// Returns how many messages it answered (it stops early if one does not come in time, and
/// the bench, waiting for that answer, reports it).
///
/// The stamp is read outside a step on purpose (a step would add a commit to each round);
/// it only flows into `set_event`, which a replay skips, so a replay cannot diverge.
#[cairn::workflow]
async fn receiver(count: u64) -> Result<u64, cairn::Error> {
    for answered in 0..count {
        let Some(round) = cairn::recv::<u64>("ping", MESSAGE_TIMEOUT).await? else {
            return Ok(answered);
        };
        let received = micros_since_epoch();
        cairn::set_event(&pong(round), &received).await?;
    }
    Ok(count)
}

/// The event key the receiver answers round `round` on (one per round, so waiting for it
/// never returns an earlier round's answer).
fn pong(round: u64) -> String {
    format!("pong-{round}")
}

/// Durable operations per receiver round: `recv` (the receive and its deadline), `set_event`.
const OPERATIONS_PER_ROUND: i32 = 3;

/// What a workload measured: each workflow's latency and the wall time of them all.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Start-to-result latency of each measured workflow.
    pub latencies: Vec<Duration>,
    /// Wall time from the first measured start to the last result.
    pub total: Duration,
    /// Workflows run before measuring.
    pub warm_up: usize,
    /// w1 only: latencies of as many empty workflows, run interleaved with the measured ones,
    /// so a step's own cost can be told from the start and finish every workflow pays.
    pub baseline: Option<Vec<Duration>>,
    /// w3 only: from each paced enqueue call until its workflow's body started.
    pub enqueue_to_start: Option<Vec<Duration>>,
    /// w6 only: from the relaunch call until it returned (its recovery claims and spawns).
    pub launch: Option<Duration>,
    /// w6 only: from the relaunch call until the first recovered workflow completed.
    pub first_completion: Option<Duration>,
}

/// Run `workload`'s warm-up, then `n` measured workflows; w2 also reports its memory: the
/// peak resident set while the `n` workflows ran, and its growth over the set before they
/// started, per workflow.
pub async fn run(
    app: &Cairn,
    workload: Workload,
    n: usize,
) -> Result<(Measurement, Extra), BenchError> {
    let warm_up = workload.warm_up();
    let mut extra = Extra::new();
    let mut baseline = None;
    let mut enqueue_to_start = None;
    let (latencies, total) = match workload {
        Workload::W1 => {
            one_at_a_time(app, Shape::TenSteps, warm_up).await?;
            one_at_a_time(app, Shape::Empty, warm_up).await?;
            let mut empty = Vec::with_capacity(n);
            let mut latencies = Vec::with_capacity(n);
            let mut total = Duration::ZERO;
            for seed in 0..n {
                let (mut one, elapsed) = one_at_a_time(app, Shape::TenSteps, 1).await?;
                latencies.append(&mut one);
                total += elapsed;
                empty.push(start_and_wait(app, Shape::Empty, seed_of(seed)).await?);
            }
            baseline = Some(empty);
            (latencies, total)
        }
        Workload::W2 => {
            all_at_once(app, Shape::TenSteps, warm_up).await?;
            memory::reset_peak();
            let before = memory::rss()?;
            let measured = all_at_once(app, Shape::TenSteps, n).await?;
            let peak = memory::peak()?;
            extra.insert("rss_before_mb".into(), memory::megabytes(before).into());
            extra.insert("peak_rss_mb".into(), memory::megabytes(peak).into());
            extra.insert(
                "rss_growth_per_workflow_bytes".into(),
                (peak.saturating_sub(before) / n as u64).into(),
            );
            measured
        }
        Workload::W3 => {
            enqueued_at_once(app, 0, warm_up).await?;
            let measured = enqueued_at_once(app, warm_up, n).await?;
            enqueue_to_start = Some(enqueued_one_at_a_time(app, warm_up + n, PACED).await?);
            measured
        }
        Workload::W4 => {
            one_at_a_time(app, Shape::Empty, warm_up).await?;
            one_at_a_time(app, Shape::Empty, n).await?
        }
        Workload::W5 => messages(app, warm_up, n).await?,
        Workload::W6 | Workload::Backlog | Workload::Park => {
            return Err(BenchError::new(
                format!("running {}", workload.name()),
                "it has a runner of its own (see w6::run, w6::backlog, park::run)",
            ));
        }
        Workload::List | Workload::Dashboard => {
            return Err(BenchError::new(
                "running list",
                "list and dashboard measure a standalone client (see list::run)",
            ));
        }
    };
    Ok((
        Measurement {
            latencies,
            total,
            warm_up,
            baseline,
            enqueue_to_start,
            launch: None,
            first_completion: None,
        },
        extra,
    ))
}

/// Which workflow a workload runs.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// [`ten_steps`].
    TenSteps,
    /// [`empty`].
    Empty,
}

/// Run `count` workflows, each started after the previous one's result.
async fn one_at_a_time(
    app: &Cairn,
    shape: Shape,
    count: usize,
) -> Result<(Vec<Duration>, Duration), BenchError> {
    let mut latencies = Vec::with_capacity(count);
    let started = Instant::now();
    for seed in 0..count {
        latencies.push(start_and_wait(app, shape, seed_of(seed)).await?);
    }
    Ok((latencies, started.elapsed()))
}

/// Start `count` workflows at once, each from a task of its own, and wait for every result.
async fn all_at_once(
    app: &Cairn,
    shape: Shape,
    count: usize,
) -> Result<(Vec<Duration>, Duration), BenchError> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..count)
        .map(|seed| {
            let app = app.clone();
            tokio::spawn(async move { start_and_wait(&app, shape, seed_of(seed)).await })
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    for outcome in futures::future::join_all(tasks).await {
        latencies.push(outcome.context("joining a workflow task")??);
    }
    Ok((latencies, started.elapsed()))
}

/// Start one workflow and wait for its result; its start-to-result latency.
async fn start_and_wait(app: &Cairn, shape: Shape, seed: u32) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let handle = match shape {
        Shape::TenSteps => app.start(ten_steps, seed).await,
        Shape::Empty => app.start(empty, seed).await,
    }
    .context("starting a workflow")?;
    handle
        .result()
        .await
        .context("waiting for a workflow's result")?;
    Ok(started.elapsed())
}

/// A workflow's argument: its index (wrapping; only its presence matters).
fn seed_of(index: usize) -> u32 {
    index as u32
}

/// w5: `warm_up + n` messages to one long-lived [`receiver`], one at a time. Each message's
/// latency runs from just before `Cairn::send` (which commits it) until the receiver's `recv`
/// returns (woken, having consumed the message and committed its checkpoint): one delivery
/// and one wake-up. The receiver reports that instant back through an event, which also paces
/// the rounds; the way back is not timed.
///
/// A message is sent only once the receiver is waiting again (its next `recv` deadline is
/// recorded), so no latency includes the tail of the previous round.
async fn messages(
    app: &Cairn,
    warm_up: usize,
    n: usize,
) -> Result<(Vec<Duration>, Duration), BenchError> {
    LazyLock::force(&EPOCH);
    let rounds = (warm_up + n) as u64;
    let handle = app
        .start(receiver, rounds)
        .await
        .context("starting the receiver")?;
    let receiver_id = handle.id().to_owned();
    let mut latencies = Vec::with_capacity(n);
    let mut started = Instant::now();
    for round in 0..rounds {
        if round == warm_up as u64 {
            started = Instant::now();
        }
        until_waiting(app, &receiver_id, round).await?;
        let sent = micros_since_epoch();
        app.send(&receiver_id, "ping", &round)
            .await
            .context("sending a message")?;
        let received: u64 = app
            .get_event(&receiver_id, &pong(round), MESSAGE_TIMEOUT)
            .await
            .context("waiting for the receiver's answer")?
            .ok_or_else(|| {
                BenchError::new(
                    "waiting for the receiver's answer",
                    format!("none within {MESSAGE_TIMEOUT:?}"),
                )
            })?;
        if round >= warm_up as u64 {
            latencies.push(Duration::from_micros(received.saturating_sub(sent)));
        }
    }
    let total = started.elapsed();
    handle
        .result()
        .await
        .context("waiting for the receiver to finish")?;
    Ok((latencies, total))
}

/// Wait until the receiver has recorded the deadline of its `recv` for `round` (it then waits
/// for the message), checking its checkpoints every millisecond.
async fn until_waiting(app: &Cairn, receiver_id: &str, round: u64) -> Result<(), BenchError> {
    let doing = "waiting for the receiver to wait";
    let deadline_operation = OPERATIONS_PER_ROUND * round as i32 + 2;
    let give_up = Instant::now() + MESSAGE_TIMEOUT;
    loop {
        let steps = app.list_steps(receiver_id).await.context(doing)?;
        if steps
            .last()
            .is_some_and(|step| step.function_id >= deadline_operation)
        {
            return Ok(());
        }
        if Instant::now() >= give_up {
            return Err(BenchError::new(
                doing,
                format!("round {round} not reached within {MESSAGE_TIMEOUT:?}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The w3 queue's name.
const W3_QUEUE: &str = "w3";

/// w3's paced enqueues (for the enqueue-to-start latency).
const PACED: usize = 200;

/// The queue w3 runs through: worker concurrency 50, DBOS's defaults otherwise.
pub fn w3_queue() -> cairn::Queue {
    cairn::Queue::new(W3_QUEUE).worker_concurrency(50)
}

/// When each w3 workflow's body first started and when it finished (microseconds since
/// [`EPOCH`]), by seed.
static STAMPS: LazyLock<std::sync::Mutex<std::collections::HashMap<u32, (u64, u64)>>> =
    LazyLock::new(Default::default);

/// How many w3 workflows have finished in this process: the bench waits on it rather than on
/// each handle's result, so what it measures is the queue (a handle of a workflow not yet
/// started polls the database for its outcome).
static FINISHED: LazyLock<tokio::sync::watch::Sender<usize>> =
    LazyLock::new(|| tokio::sync::watch::channel(0).0);

/// A queued workflow of one no-op step (w3). It notes when its body first started and when
/// it finished (outside a step on purpose: the notes are the bench's, not the workflow's).
#[cairn::workflow]
async fn queued_step(seed: u32) -> Result<u32, cairn::Error> {
    let started = micros_since_epoch();
    let out = noop(seed).await?;
    let finished = micros_since_epoch();
    STAMPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(seed)
        .or_insert((started, finished));
    FINISHED.send_modify(|n| *n += 1);
    Ok(out)
}

/// Wait until `count` w3 workflows have finished in all.
async fn finished(count: usize) -> Result<(), BenchError> {
    let mut finished = FINISHED.subscribe();
    let waited =
        tokio::time::timeout(Duration::from_secs(300), finished.wait_for(|&n| n >= count)).await;
    match waited {
        Ok(Ok(_)) => Ok(()),
        _ => Err(BenchError::new(
            "waiting for the queued workflows",
            "they did not all finish within 300 s",
        )),
    }
}

/// The `(started, finished)` stamps of a w3 workflow.
fn stamps(seed: u32) -> Result<(u64, u64), BenchError> {
    STAMPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&seed)
        .copied()
        .ok_or_else(|| BenchError::new("reading a queued workflow's stamps", "it left none"))
}

/// w3: enqueue `count` workflows (seeds from `first`) at once, each from a task of its own,
/// and wait until they finished; each one's latency from its enqueue call to its finish, and
/// the wall time from the first enqueue to the last finish.
async fn enqueued_at_once(
    app: &Cairn,
    first: usize,
    count: usize,
) -> Result<(Vec<Duration>, Duration), BenchError> {
    let started = Instant::now();
    let tasks: Vec<_> = (first..first + count)
        .map(|seed| {
            let app = app.clone();
            tokio::spawn(async move {
                let enqueued = micros_since_epoch();
                app.enqueue(W3_QUEUE, queued_step, seed_of(seed))
                    .await
                    .context("enqueueing a workflow")?;
                Ok::<_, BenchError>((seed_of(seed), enqueued))
            })
        })
        .collect();
    let mut enqueued = Vec::with_capacity(count);
    for outcome in futures::future::join_all(tasks).await {
        enqueued.push(outcome.context("joining an enqueue task")??);
    }
    finished(first + count).await?;
    let total = started.elapsed();
    let mut latencies = Vec::with_capacity(count);
    for (seed, at) in enqueued {
        let (_, done) = stamps(seed)?;
        latencies.push(Duration::from_micros(done.saturating_sub(at)));
    }
    Ok((latencies, total))
}

/// w3: enqueue `count` workflows (seeds from `first`), each once the previous one finished;
/// from each enqueue call until its body started.
async fn enqueued_one_at_a_time(
    app: &Cairn,
    first: usize,
    count: usize,
) -> Result<Vec<Duration>, BenchError> {
    let mut latencies = Vec::with_capacity(count);
    for (i, seed) in (first..first + count).enumerate() {
        let seed = seed_of(seed);
        let enqueued = micros_since_epoch();
        app.enqueue(W3_QUEUE, queued_step, seed)
            .await
            .context("enqueueing a workflow")?;
        finished(first + i + 1).await?;
        let (started, _) = stamps(seed)?;
        latencies.push(Duration::from_micros(started.saturating_sub(enqueued)));
    }
    Ok(latencies)
}
