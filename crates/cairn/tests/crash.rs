//! Crash recovery with real processes: a worker process runs workflows of five steps, the test
//! SIGKILLs it at random points several times, restarts it, and checks that every workflow
//! completes with the right output and that no step whose checkpoint was committed ran again.

mod common;

use std::time::Duration;

use cairn::StartOptions;
use common::TestDb;
use common::worker::{self, incarnation, log_line};

const WORKFLOWS: u64 = 20;
const KILLS: usize = 3;

#[cairn::step]
async fn work(workflow: u64, step: u64, acc: u64) -> Result<u64, cairn::Error> {
    // Spread the steps out so kills land in the middle of bodies and between checkpoints.
    tokio::time::sleep(Duration::from_millis(3 + (workflow * 7 + step * 13) % 11)).await;
    log_line(format!("exec {workflow} {step} {}", incarnation()));
    Ok(acc * 10 + step)
}

#[cairn::workflow]
async fn five_steps(workflow: u64) -> Result<u64, cairn::Error> {
    let mut acc = workflow;
    for step in 1..=5 {
        acc = work(workflow, step, acc).await?;
        log_line(format!("done {workflow} {step} {}", incarnation()));
    }
    Ok(acc)
}

fn expected_output(workflow: u64) -> u64 {
    (1..=5).fold(workflow, |acc, step| acc * 10 + step)
}

/// The worker process: launch (which recovers unfinished workflows), start every workflow by
/// its id (idempotent), wait for all of them and log their results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the worker process of the crash tests, started by them"]
async fn crash_worker() {
    let app = cairn::Cairn::builder("crash-test")
        .database_url(worker::database_url())
        .launch()
        .await
        .expect("launch");
    let mut handles = Vec::new();
    for workflow in 0..WORKFLOWS {
        let options = StartOptions::id(format!("crash-{workflow}"));
        handles.push((
            workflow,
            app.start_with(options, five_steps, workflow)
                .await
                .expect("start"),
        ));
    }
    for (workflow, handle) in handles {
        let output = handle.result().await.expect("result");
        log_line(format!("result {workflow} {output}"));
    }
    app.shutdown().await.expect("shutdown");
}

/// Every workflow completes with the right output after several SIGKILLs, and a step whose
/// checkpoint had committed (its workflow moved past it) never ran again in a later process.
async fn a_killed_worker_resumes_every_workflow_without_rerunning_finished_steps(db: &TestDb) {
    let points = worker::kill_points(KILLS, 25);
    let lines = worker::run_with_kills(db, "crash_worker", points).await;
    // The final worker reports every workflow's output.
    let results = worker::results(&lines);
    for workflow in 0..WORKFLOWS {
        assert_eq!(
            results.get(&workflow),
            Some(&expected_output(workflow)),
            "output of workflow {workflow}"
        );
    }
    let executed = worker::assert_no_committed_step_reran(&lines);
    assert_eq!(executed as u64, WORKFLOWS * 5, "every step body ran");
}

both_backends!(a_killed_worker_resumes_every_workflow_without_rerunning_finished_steps);
