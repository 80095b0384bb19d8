//! The workflows a benchmark runs, and the patterns it runs them in.

use std::time::{Duration, Instant};

use cairn::Cairn;

use crate::cli::Workload;
use crate::error::{BenchError, Context};

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
}

/// Run `workload`'s warm-up, then `n` measured workflows.
pub async fn run(app: &Cairn, workload: Workload, n: usize) -> Result<Measurement, BenchError> {
    let warm_up = workload.warm_up();
    let mut baseline = None;
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
            all_at_once(app, Shape::TenSteps, n).await?
        }
        Workload::W4 => {
            one_at_a_time(app, Shape::Empty, warm_up).await?;
            one_at_a_time(app, Shape::Empty, n).await?
        }
    };
    Ok(Measurement {
        latencies,
        total,
        warm_up,
        baseline,
    })
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
