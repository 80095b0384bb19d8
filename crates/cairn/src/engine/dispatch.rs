//! The queue dispatcher: claims the queued workflows of every queue this process serves and
//! runs them, under limits counted from the rows themselves (the system database is the only
//! coordinator between processes).
//!
//! One loop per served queue (the registered ones, or those chosen with
//! `CairnBuilder::listen_queues`, and DBOS's internal queue). Each claims as much as its
//! limits leave room for, and claims again at once when its batch was full; otherwise it
//! waits for a wake-up: an enqueue in this process, a dequeued workflow finishing here (a
//! freed slot), an enqueue announced by another process (Postgres `NOTIFY` on
//! [`QUEUE_CHANNEL`], SQLite's change feed), or, as the fallback, the queue's polling
//! interval.

use std::sync::Arc;

use tokio::sync::Notify;

use super::queue::{INTERNAL_QUEUE_NAME, Queue, RateLimit};
use super::recovery::execute_claimed;
use super::registry;
use super::runtime::{Runtime, now_ms};
use super::workflow::Origin;
use crate::error::Result;
use crate::store::{ClaimEnqueued, ClaimLimits, QueueClaim, QueuePartitions};

/// The Postgres channel an enqueue announces on, with the queue's name as payload, so that
/// the dispatchers of other processes claim it at once.
pub(crate) const QUEUE_CHANNEL: &str = "cairn_queue_channel";

/// The most workflows one claim takes. A fuller queue is claimed again at once; the bound
/// keeps one statement's batch (and its checkpoint load) moderate.
const BATCH: i64 = 500;

/// The queues this process serves: the registered ones, or the chosen subset (a chosen
/// name not registered is served with DBOS's defaults: its limits live in the process that
/// declares it), and always DBOS's internal queue, where resumes and forks land.
pub(crate) fn served(registered: &[Queue], listen: Option<&[String]>) -> Vec<Queue> {
    let mut served: Vec<Queue> = match listen {
        None => registered.to_vec(),
        Some(names) => names
            .iter()
            .map(|name| {
                registered
                    .iter()
                    .find(|q| &q.name == name)
                    .cloned()
                    .unwrap_or_else(|| {
                        tracing::warn!(queue = %name, "listening to a queue not declared in this process: it is served without limits");
                        Queue::new(name.clone())
                    })
            })
            .collect(),
    };
    if !served.iter().any(|q| q.name == INTERNAL_QUEUE_NAME) {
        served.push(Queue::new(INTERNAL_QUEUE_NAME));
    }
    served
}

/// Run the dispatcher of every served queue until shutdown.
pub(crate) async fn dispatch(rt: Arc<Runtime>, queues: Vec<Queue>) {
    futures::future::join_all(queues.into_iter().map(|queue| serve(&rt, queue))).await;
}

/// Serve one queue until shutdown.
async fn serve(rt: &Arc<Runtime>, queue: Queue) {
    let mut wakes = rt.dispatch_wakes();
    // Woken when one of this queue's workflows finishes here (only this queue has a slot
    // more), with a permit kept if it is claiming.
    let freed = Arc::new(Notify::new());
    // Whether the last claim found work: then the next one skips its idle check (and the
    // promotion of due delayed workflows that goes with it), unless the last check is a
    // polling interval old.
    let mut busy = false;
    let mut probed = tokio::time::Instant::now();
    while !rt.is_shutting_down() {
        // Wake-ups from here on are for claims after this one.
        wakes.borrow_and_update();
        let probe = !busy || probed.elapsed() >= queue.polling_interval;
        if probe {
            probed = tokio::time::Instant::now();
        }
        let claimed = claim_once(rt, &queue, probe, &freed).await;
        let full = match claimed {
            Ok(Claimed { any, full }) => {
                busy = any;
                full
            }
            Err(error) => {
                tracing::warn!(%error, queue = %queue.name, "could not claim the queue's workflows");
                busy = false;
                false
            }
        };
        if full {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(queue.polling_interval) => {}
            _ = wakes.changed() => {}
            _ = freed.notified() => {}
            _ = rt.shutdown_requested() => {}
        }
    }
}

/// What one round of claims took.
struct Claimed {
    /// Some workflow.
    any: bool,
    /// A full batch (more may be waiting).
    full: bool,
}

/// Claim what the queue's limits leave room for (per partition on a partitioned queue) and
/// start it; `freed` is woken as each finishes. `probe`: see [`QueueClaim::probe`].
async fn claim_once(
    rt: &Arc<Runtime>,
    queue: &Queue,
    probe: bool,
    freed: &Arc<Notify>,
) -> Result<Claimed> {
    let partitions: Vec<Option<String>> = if queue.partition_queue {
        let listed = QueuePartitions {
            queue_name: queue.name.clone(),
            now_ms: now_ms(),
        };
        rt.store.run(listed).await?.into_iter().map(Some).collect()
    } else {
        vec![None]
    };
    let mut round = Claimed {
        any: false,
        full: false,
    };
    for partition_key in partitions {
        let owner = uuid::Uuid::new_v4().to_string();
        let claim = QueueClaim {
            queue_name: queue.name.clone(),
            names: registry::all().iter().map(|r| r.name.to_owned()).collect(),
            executor_id: rt.executor_id.clone(),
            app_version: rt.app_version.clone(),
            application_name: Some(rt.app_name.clone()),
            new_owner: owner.clone(),
            now_ms: now_ms(),
            limit: BATCH,
            limits: limits(queue),
            partition_key,
            probe,
        };
        let claimed = rt.store.run(ClaimEnqueued(claim)).await?;
        round.any |= !claimed.is_empty();
        round.full |= claimed.len() as i64 >= BATCH;
        for workflow in claimed {
            if let Some(id) = execute_claimed(rt, &owner, workflow, Origin::Dequeued).await? {
                wake_when_finished(rt, &id, freed);
            }
        }
    }
    Ok(round)
}

/// The queue's limits as a claim counts them.
fn limits(queue: &Queue) -> ClaimLimits {
    let rate = |r: RateLimit| (i64::from(r.limit), r.period.as_millis() as i64);
    let partitioned = |limit: Option<u32>| limit.filter(|_| queue.partition_queue);
    ClaimLimits {
        priority_enabled: queue.priority_enabled,
        concurrency: queue.concurrency.map(i64::from),
        worker_concurrency: queue.worker_concurrency.map(i64::from),
        rate_limit: queue.rate_limit.map(rate),
        partition_concurrency: partitioned(queue.partition_concurrency).map(i64::from),
        partition_worker_concurrency: partitioned(queue.partition_worker_concurrency)
            .map(i64::from),
        partition_rate_limit: queue
            .partition_rate_limit
            .filter(|_| queue.partition_queue)
            .map(rate),
    }
}

/// Wake the queue's dispatcher once this dequeued workflow stops executing here: its slot
/// is free.
fn wake_when_finished(rt: &Runtime, workflow_id: &str, freed: &Arc<Notify>) {
    let Some(mut outcome) = rt.local_outcome(workflow_id) else {
        // Already finished.
        freed.notify_one();
        return;
    };
    let freed = Arc::clone(freed);
    tokio::spawn(async move {
        // An error means the execution ended (its sender dropped): a slot is free either way.
        let _ = outcome.wait_for(Option::is_some).await;
        freed.notify_one();
    });
}
