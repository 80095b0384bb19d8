//! Crash recovery with real processes: a worker process runs workflows of five steps, the test
//! SIGKILLs it at random points several times, restarts it, and checks that every workflow
//! completes with the right output and that no step whose checkpoint was committed ran again.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn::StartOptions;
use common::TestDb;

const WORKFLOWS: u64 = 20;
const KILLS: usize = 3;

/// Append one line to the side file (one `write` call, so lines from tasks do not interleave).
fn log_line(line: String) {
    common::side_log::append("CAIRN_CRASH_LOG", &line);
}

fn incarnation() -> String {
    std::env::var("CAIRN_CRASH_RUN").unwrap_or_default()
}

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
    let url = std::env::var("CAIRN_CRASH_URL").expect("CAIRN_CRASH_URL");
    let app = cairn::Cairn::builder("crash-test")
        .database_url(url)
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

fn spawn_worker(db: &TestDb, log: &Path, run: usize) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "crash_worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("CAIRN_CRASH_URL", &db.url)
        .env("CAIRN_CRASH_LOG", log)
        .env("CAIRN_CRASH_RUN", run.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn worker")
}

fn lines(log: &Path) -> Vec<String> {
    common::side_log::read(log)
}

/// Wait until the worker has executed `more` further step bodies, then SIGKILL it.
fn kill_after_progress(mut worker: Child, log: &Path, more: usize) {
    let start = lines(log).iter().filter(|l| l.starts_with("exec")).count();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = lines(log).iter().filter(|l| l.starts_with("exec")).count();
        if now >= start + more {
            break;
        }
        assert!(
            worker.try_wait().expect("worker status").is_none(),
            "the worker exited before it was killed"
        );
        assert!(Instant::now() < deadline, "the worker made no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    worker.kill().expect("SIGKILL the worker");
    worker.wait().expect("reap the worker");
}

/// A simple deterministic pseudo-random sequence (no extra dependency), seeded per run.
fn random_points(seed: u64) -> Vec<usize> {
    let mut x = seed | 1;
    (0..KILLS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            3 + (x % 25) as usize
        })
        .collect()
}

/// Every workflow completes with the right output after several SIGKILLs, and a step whose
/// checkpoint had committed (its workflow moved past it) never ran again in a later process.
async fn a_killed_worker_resumes_every_workflow_without_rerunning_finished_steps(db: &TestDb) {
    let log: PathBuf =
        std::env::temp_dir().join(format!("cairn-crash-{}.log", uuid::Uuid::new_v4().simple()));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let points = random_points(seed);
    eprintln!("kill points (step bodies between kills): {points:?}");
    let log_for_thread = log.clone();
    let db_url = db.url.clone();
    let backend = db.backend;
    tokio::task::spawn_blocking(move || {
        let db = TestDb::with_url(backend, db_url);
        for (run, more) in points.iter().enumerate() {
            let worker = spawn_worker(&db, &log_for_thread, run);
            kill_after_progress(worker, &log_for_thread, *more);
        }
        let mut last = spawn_worker(&db, &log_for_thread, KILLS);
        let status = last.wait().expect("final worker");
        assert!(status.success(), "the final worker failed: {status}");
    })
    .await
    .expect("crash driver");

    let lines = lines(&log);
    let _ = std::fs::remove_file(&log);
    // The final worker reports every workflow's output.
    let results: HashMap<u64, u64> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("result "))
        .map(|l| {
            let mut parts = l.split(' ').map(|p| p.parse::<u64>().expect("number"));
            (
                parts.next().expect("workflow"),
                parts.next().expect("output"),
            )
        })
        .collect();
    for workflow in 0..WORKFLOWS {
        assert_eq!(
            results.get(&workflow),
            Some(&expected_output(workflow)),
            "output of workflow {workflow}"
        );
    }
    // A `done` line in run r means the step's checkpoint committed in run r: no later run may
    // execute that step's body again.
    let mut committed_in: HashMap<(u64, u64), usize> = HashMap::new();
    let mut executed: HashSet<(u64, u64)> = HashSet::new();
    let mut reruns = 0;
    for line in &lines {
        let parts: Vec<&str> = line.split(' ').collect();
        let number = |i: usize| parts[i].parse::<u64>().expect("number");
        match parts[0] {
            "done" => {
                committed_in
                    .entry((number(1), number(2)))
                    .or_insert(number(3) as usize);
            }
            "exec" => {
                let key = (number(1), number(2));
                let run = number(3) as usize;
                if let Some(&committed) = committed_in.get(&key) {
                    assert!(
                        run <= committed,
                        "step {key:?} committed in run {committed} but ran again in run {run}"
                    );
                }
                if !executed.insert(key) {
                    reruns += 1;
                }
            }
            _ => {}
        }
    }
    assert_eq!(executed.len() as u64, WORKFLOWS * 5, "every step body ran");
    eprintln!("{reruns} interrupted step bodies ran again (at-least-once for unfinished steps)");
}

both_backends!(a_killed_worker_resumes_every_workflow_without_rerunning_finished_steps);
