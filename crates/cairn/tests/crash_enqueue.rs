//! Enqueues inside workflows across real SIGKILLs: a worker process runs parent workflows that
//! each run a step, enqueue a child onto a queue the worker serves, run another step and await
//! the child. The test SIGKILLs the worker at random points several times, restarts it, and
//! checks that every parent completes with the right output, that each parent enqueued exactly
//! one child (counted in the system database), and that no step — of a parent or of a child —
//! whose checkpoint had committed ran again.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cairn::{Queue, StartOptions};
use common::TestDb;
use common::worker::{self, incarnation, log_line};

const PARENTS: u64 = 20;
const KILLS: usize = 3;
const CHILDREN_QUEUE: &str = "children";

/// A step of a parent (`who` = "p") or of a child (`who` = "c"): logs its execution.
#[cairn::step]
async fn work(who: String, parent: u64, step: u64, acc: u64) -> Result<u64, cairn::Error> {
    // Spread the steps out so kills land in the middle of bodies and between checkpoints.
    tokio::time::sleep(Duration::from_millis(3 + (parent * 7 + step * 13) % 11)).await;
    log_line(format!("exec {who} {parent} {step} {}", incarnation()));
    Ok(acc * 10 + step)
}

/// The child: one step, logged once its checkpoint committed.
#[cairn::workflow]
async fn child(parent: u64, acc: u64) -> Result<u64, cairn::Error> {
    let out = work("c".to_owned(), parent, 7, acc).await?;
    log_line(format!("done c {parent} 7 {}", incarnation()));
    Ok(out)
}

/// The parent: a step, an enqueue of its child, another step, then the child's result.
#[cairn::workflow]
async fn parent(parent: u64) -> Result<u64, cairn::Error> {
    let a = work("p".to_owned(), parent, 1, parent).await?;
    log_line(format!("done p {parent} 1 {}", incarnation()));
    let handle = cairn::enqueue_workflow(CHILDREN_QUEUE, child, (parent, a)).await?;
    log_line(format!(
        "enqueued {parent} {} {}",
        handle.id(),
        incarnation()
    ));
    let b = work("p".to_owned(), parent, 2, a).await?;
    log_line(format!("done p {parent} 2 {}", incarnation()));
    let c = handle.result().await?;
    Ok(b * 100_000 + c)
}

fn expected_output(parent: u64) -> u64 {
    let a = parent * 10 + 1;
    let b = a * 10 + 2;
    let c = a * 10 + 7;
    b * 100_000 + c
}

fn parent_id(parent: u64) -> String {
    format!("crash-enqueue-{parent}")
}

/// The worker process: launch (which recovers unfinished workflows, parents and children),
/// serve the children's queue, start every parent by its id (idempotent), wait for all of
/// them and log their results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the worker process of the crash_enqueue test, started by it"]
async fn crash_enqueue_worker() {
    let app = cairn::Cairn::builder("crash-enqueue-test")
        .database_url(worker::database_url())
        .queue(Queue::new(CHILDREN_QUEUE))
        .launch()
        .await
        .expect("launch");
    let mut handles = Vec::new();
    for p in 0..PARENTS {
        let options = StartOptions::id(parent_id(p));
        handles.push((p, app.start_with(options, parent, p).await.expect("start")));
    }
    for (p, handle) in handles {
        let output = handle.result().await.expect("result");
        log_line(format!("result {p} {output}"));
    }
    app.shutdown().await.expect("shutdown");
}

/// Every parent completes with the right output after several SIGKILLs; each enqueued
/// exactly one child (the same id in every execution), every child succeeded, and no step
/// whose checkpoint had committed ran again in a later process.
async fn enqueues_inside_workflows_survive_sigkills_exactly_once(db: &TestDb) {
    // The points add up to fewer step bodies than the parents and children have
    // (3 × `PARENTS`), so every worker is killed before it could finish.
    let points = worker::kill_points(KILLS, 15);
    let lines = worker::run_with_kills(db, "crash_enqueue_worker", points).await;
    let number = |text: &str| text.parse::<u64>().expect("number");

    // The final worker reports every parent's output.
    let results = worker::results(&lines);
    for p in 0..PARENTS {
        assert_eq!(
            results.get(&p),
            Some(&expected_output(p)),
            "output of parent {p}"
        );
    }

    // Every execution of a parent's enqueue answered the same child.
    let mut children: HashMap<u64, String> = HashMap::new();
    for line in lines.iter().filter_map(|l| l.strip_prefix("enqueued ")) {
        let parts: Vec<&str> = line.split(' ').collect();
        let p = number(parts[0]);
        let id = children.entry(p).or_insert_with(|| parts[1].to_owned());
        assert_eq!(id, parts[1], "parent {p} answered two children");
    }

    // How many enqueues a later process replayed (coverage of the run, not a requirement).
    let mut runs_per_parent: HashMap<u64, HashSet<String>> = HashMap::new();
    for line in lines.iter().filter_map(|l| l.strip_prefix("enqueued ")) {
        let parts: Vec<&str> = line.split(' ').collect();
        runs_per_parent
            .entry(number(parts[0]))
            .or_default()
            .insert(parts[2].to_owned());
    }
    let replayed = runs_per_parent
        .values()
        .filter(|runs| runs.len() > 1)
        .count();
    eprintln!("{replayed} parents passed their enqueue again in a later process");

    // In the database: exactly one child per parent, the one it answered, and it succeeded.
    for p in 0..PARENTS {
        let parent = parent_id(p);
        let count = db
            .query_text(&format!(
                "SELECT CAST(COUNT(*) AS TEXT) FROM workflow_status \
                 WHERE parent_workflow_id = '{parent}'"
            ))
            .await;
        assert_eq!(count.as_deref(), Some("1"), "children of parent {p}");
        let child = db
            .query_text(&format!(
                "SELECT workflow_uuid FROM workflow_status WHERE parent_workflow_id = '{parent}'"
            ))
            .await
            .expect("the child's id");
        assert_eq!(
            Some(&child),
            children.get(&p),
            "the child parent {p} answered"
        );
        let status = db
            .query_text(&format!(
                "SELECT status FROM workflow_status WHERE workflow_uuid = '{child}'"
            ))
            .await;
        assert_eq!(status.as_deref(), Some("SUCCESS"), "status of {child}");
    }

    // No step of a parent or of a child whose checkpoint had committed ran again.
    let executed = worker::assert_no_committed_step_reran(&lines);
    assert_eq!(executed as u64, PARENTS * 3, "every step body ran");
}

both_backends!(enqueues_inside_workflows_survive_sigkills_exactly_once);
