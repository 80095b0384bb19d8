//! park: what a waiting workflow costs, and how fast waiting workflows wake.
//!
//! `n` workflows each record one step and then wait in `cairn::recv` (with a timeout far
//! beyond the run). Once every one of them has recorded its `recv` deadline, the process's
//! resident set is read again: its growth over the set before the first start, divided by
//! `n`, is `bytes_per_parked_workflow`. Then each gets its message (its own seed), sent from
//! this process with `Cairn::send`, in a random order and [`IN_FLIGHT`] sends at a time;
//! the time from the first send until every workflow has completed, durably, gives
//! `woken_per_s`, and each message's latency runs from its send until its `recv` returned.
//! Finally every workflow's result is read back through a handle and checked.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use cairn::{Cairn, StartOptions};
use futures::{StreamExt, TryFutureExt, TryStreamExt};

use crate::database::BenchDatabase;
use crate::error::{BenchError, Context};
use crate::memory;
use crate::w6::{COMPLETED, DEADLINES, Probe};
use crate::workloads::{Extra, Measurement};

/// The topic the parked workflows wait on.
const TOPIC: &str = "park";

/// A parked workflow's `recv` timeout: far beyond the run, so it is the message that wakes it.
const RECV_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Starts, sends and result checks in flight at once.
pub const IN_FLIGHT: usize = 256;

/// How long the bench waits for every workflow to park, and then to complete.
const GIVE_UP: Duration = Duration::from_secs(900);

/// How often the database is polled for the deadlines and completions.
const POLL: Duration = Duration::from_millis(20);

/// The instant wake-up stamps count from.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Bodies about to call `recv` (their step recorded).
static PARKING: LazyLock<tokio::sync::watch::Sender<usize>> =
    LazyLock::new(|| tokio::sync::watch::channel(0).0);

/// Bodies whose `recv` returned.
static WOKEN: LazyLock<tokio::sync::watch::Sender<usize>> =
    LazyLock::new(|| tokio::sync::watch::channel(0).0);

/// `(seed, microseconds since EPOCH)` of each body whose `recv` returned.
static WOKEN_AT: LazyLock<std::sync::Mutex<Vec<(u32, u64)>>> = LazyLock::new(Default::default);

/// A step that only records its checkpoint.
#[cairn::step]
async fn before_parking(seed: u32) -> Result<u32, cairn::Error> {
    Ok(seed)
}

/// One step, then parked in `recv` until its message comes; returns the message.
#[cairn::workflow]
async fn parked(seed: u32) -> Result<Option<u32>, cairn::Error> {
    before_parking(seed).await?;
    PARKING.send_modify(|n| *n += 1);
    let message: Option<u32> = cairn::recv(TOPIC, RECV_TIMEOUT).await?;
    let at = EPOCH.elapsed().as_micros() as u64;
    WOKEN_AT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((seed, at));
    WOKEN.send_modify(|n| *n += 1);
    Ok(message)
}

/// The id of the `seed`th parked workflow.
fn workflow_id(seed: u32) -> String {
    format!("park-{seed}")
}

/// Run park with `n` workflows on `app`, launched on `database`.
pub async fn run(
    app: &Cairn,
    database: &BenchDatabase,
    n: usize,
    evicting: bool,
) -> Result<(Measurement, Extra), BenchError> {
    LazyLock::force(&EPOCH);
    let probe = Probe::open(&database.url()).await?;
    let seeds = 0..n as u32;
    memory::reset_peak();
    let rss_before = memory::rss()?;

    let parking_started = Instant::now();
    futures::stream::iter(seeds.clone())
        .map(|seed| {
            app.start_with(StartOptions::id(workflow_id(seed)), parked, seed)
                .map_ok(drop)
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await
        .context("starting the workflows to park")?;
    until(&PARKING, n, "every workflow to reach its recv").await?;
    probe
        .until(
            &DEADLINES,
            n as i64,
            POLL,
            "until every recv deadline is recorded",
        )
        .await?;
    let park_s = parking_started.elapsed().as_secs_f64();
    if evicting {
        until_evicted(app).await?;
    }
    let in_memory = app.workflows_in_memory();
    let rss_parked = memory::rss()?;
    let peak_parking = memory::peak()?;

    let order = shuffled(n as u32);
    let waking_started = Instant::now();
    let sent: Vec<(u32, u64)> = futures::stream::iter(order)
        .map(|seed| async move {
            let at = EPOCH.elapsed().as_micros() as u64;
            app.send(&workflow_id(seed), TOPIC, &seed)
                .await
                .map(|()| (seed, at))
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await
        .context("sending the parked workflows their messages")?;
    until(&WOKEN, n, "every workflow to wake").await?;
    probe
        .until(
            &COMPLETED,
            n as i64,
            POLL,
            "until every workflow has completed",
        )
        .await?;
    let total = waking_started.elapsed();
    let peak = memory::peak()?;

    verify_results(app, n).await?;
    let mut sent_at = vec![0u64; n];
    for (seed, at) in sent {
        sent_at[seed as usize] = at;
    }
    let latencies = WOKEN_AT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|&(seed, at)| Duration::from_micros(at.saturating_sub(sent_at[seed as usize])))
        .collect();

    let growth = rss_parked.saturating_sub(rss_before);
    let mut extra = Extra::new();
    extra.insert("park_s".into(), round3(park_s).into());
    extra.insert("parked_per_s".into(), round3(n as f64 / park_s).into());
    extra.insert("in_memory_when_measured".into(), in_memory.into());
    extra.insert("rss_before_mb".into(), memory::megabytes(rss_before).into());
    extra.insert("rss_parked_mb".into(), memory::megabytes(rss_parked).into());
    extra.insert(
        "bytes_per_parked_workflow".into(),
        (growth / n as u64).into(),
    );
    extra.insert(
        "peak_parking_mb".into(),
        memory::megabytes(peak_parking).into(),
    );
    extra.insert("peak_rss_mb".into(), memory::megabytes(peak).into());
    extra.insert(
        "woken_per_s".into(),
        round3(n as f64 / total.as_secs_f64()).into(),
    );
    Ok((
        Measurement {
            latencies,
            total,
            warm_up: 0,
            baseline: None,
            enqueue_to_start: None,
            launch: None,
            first_completion: None,
        },
        extra,
    ))
}

/// Wait until `counter` reaches `target`.
async fn until(
    counter: &tokio::sync::watch::Sender<usize>,
    target: usize,
    what: &str,
) -> Result<(), BenchError> {
    let doing = format!("waiting for {what}");
    let mut counter = counter.subscribe();
    tokio::time::timeout(GIVE_UP, counter.wait_for(|&n| n >= target))
        .await
        .map_err(|_| BenchError::new(doing.clone(), format!("not done within {GIVE_UP:?}")))?
        .map(drop)
        .context(doing)
}

/// Wait until no parked workflow is in memory any more (each evicted after the application's
/// `evict_after`).
async fn until_evicted(app: &Cairn) -> Result<(), BenchError> {
    let started = Instant::now();
    while app.workflows_in_memory() > 0 {
        if started.elapsed() > GIVE_UP {
            return Err(BenchError::new(
                "waiting for every parked workflow to be evicted",
                format!(
                    "{} still in memory after {GIVE_UP:?}",
                    app.workflows_in_memory()
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// Read every workflow's result back through a handle: each must be its own seed.
async fn verify_results(app: &Cairn, n: usize) -> Result<(), BenchError> {
    let wrong = futures::stream::iter(0..n as u32)
        .map(|seed| async move {
            let handle = app.retrieve::<Option<u32>>(&workflow_id(seed)).await?;
            handle.result().await.map(|got| got != Some(seed))
        })
        .buffer_unordered(IN_FLIGHT)
        .try_fold(
            0usize,
            |wrong, bad| async move { Ok(wrong + usize::from(bad)) },
        )
        .await
        .context("reading the parked workflows' results")?;
    if wrong > 0 {
        return Err(BenchError::new(
            "checking the parked workflows' results",
            format!("{wrong} of {n} did not return their own message"),
        ));
    }
    Ok(())
}

/// `0..n` in a random order (Fisher–Yates, driven by splitmix64 seeded from a random UUID).
pub fn shuffled(n: u32) -> Vec<u32> {
    let mut state = uuid::Uuid::new_v4().as_u128() as u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut order: Vec<u32> = (0..n).collect();
    for i in (1..order.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Rounded to three decimals.
fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shuffle is a permutation: every index exactly once.
    #[test]
    fn a_shuffle_keeps_every_index_once() {
        let mut order = shuffled(1000);
        order.sort_unstable();
        assert_eq!(order, (0..1000).collect::<Vec<_>>());
    }
}
