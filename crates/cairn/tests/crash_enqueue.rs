//! Enqueues inside workflows across real SIGKILLs: a worker process runs parent workflows that
//! each run a step, enqueue a child onto a queue the worker serves, run another step and await
//! the child. The test SIGKILLs the worker at random points several times, restarts it, and
//! checks that every parent completes with the right output, that each parent enqueued exactly
//! one child (counted in the system database), and that no step — of a parent or of a child —
//! whose checkpoint had committed ran again.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn::{Queue, StartOptions};
use common::TestDb;

const PARENTS: u64 = 20;
const KILLS: usize = 3;
const CHILDREN_QUEUE: &str = "children";

/// Append one line to the side file (one `write` call, so lines from tasks do not interleave).
fn log_line(line: String) {
    common::side_log::append("CAIRN_CRASH_LOG", &line);
}

fn incarnation() -> String {
    std::env::var("CAIRN_CRASH_RUN").unwrap_or_default()
}

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
    let url = std::env::var("CAIRN_CRASH_URL").expect("CAIRN_CRASH_URL");
    let app = cairn::Cairn::builder("crash-enqueue-test")
        .database_url(url)
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

fn spawn_worker(db: &TestDb, log: &Path, run: usize) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "crash_enqueue_worker",
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

fn executions(log: &Path) -> usize {
    lines(log).iter().filter(|l| l.starts_with("exec")).count()
}

/// Wait until the worker has executed `more` further step bodies, then SIGKILL it.
fn kill_after_progress(mut worker: Child, log: &Path, more: usize) {
    let start = executions(log);
    let deadline = Instant::now() + Duration::from_secs(120);
    while executions(log) < start + more {
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

/// Wait for the final worker to exit on its own (it does once every parent finished); fail
/// (and kill it) if it makes no progress for a long time.
fn wait_for_exit(mut worker: Child, log: &Path) -> std::process::ExitStatus {
    let mut seen = lines(log).len();
    let mut last_progress = Instant::now();
    loop {
        if let Some(status) = worker.try_wait().expect("worker status") {
            return status;
        }
        let now = lines(log).len();
        if now > seen {
            seen = now;
            last_progress = Instant::now();
        }
        if last_progress.elapsed() > Duration::from_secs(120) {
            let _ = worker.kill();
            let _ = worker.wait();
            panic!("the final worker made no progress for 120 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A simple deterministic pseudo-random sequence (no extra dependency), seeded per run. The
/// points add up to fewer step bodies than the parents and children have (3 × `PARENTS`),
/// so every worker is killed before it could finish.
fn random_points(seed: u64) -> Vec<usize> {
    let mut x = seed | 1;
    (0..KILLS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            3 + (x % 15) as usize
        })
        .collect()
}

/// Every parent completes with the right output after several SIGKILLs; each enqueued
/// exactly one child (the same id in every execution), every child succeeded, and no step
/// whose checkpoint had committed ran again in a later process.
async fn enqueues_inside_workflows_survive_sigkills_exactly_once(db: &TestDb) {
    let log: PathBuf = std::env::temp_dir().join(format!(
        "cairn-crash-enqueue-{}.log",
        uuid::Uuid::new_v4().simple()
    ));
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
        let last = spawn_worker(&db, &log_for_thread, KILLS);
        let status = wait_for_exit(last, &log_for_thread);
        assert!(status.success(), "the final worker failed: {status}");
    })
    .await
    .expect("crash driver");

    let lines = lines(&log);
    let _ = std::fs::remove_file(&log);
    let number = |text: &str| text.parse::<u64>().expect("number");

    // The final worker reports every parent's output.
    let results: HashMap<u64, u64> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("result "))
        .map(|l| {
            let (p, output) = l.split_once(' ').expect("result line");
            (number(p), number(output))
        })
        .collect();
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

    // A `done` line in run r means the step's checkpoint committed in run r: no later run may
    // execute that step's body again (parents' steps and children's alike).
    let mut committed_in: HashMap<(String, u64, u64), u64> = HashMap::new();
    let mut executed: HashSet<(String, u64, u64)> = HashSet::new();
    let mut reruns = 0;
    for line in &lines {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts[0] {
            "done" => {
                let key = (parts[1].to_owned(), number(parts[2]), number(parts[3]));
                committed_in.entry(key).or_insert(number(parts[4]));
            }
            "exec" => {
                let key = (parts[1].to_owned(), number(parts[2]), number(parts[3]));
                let run = number(parts[4]);
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
    assert_eq!(executed.len() as u64, PARENTS * 3, "every step body ran");
    eprintln!("{reruns} interrupted step bodies ran again (at-least-once for unfinished steps)");
}

both_backends!(enqueues_inside_workflows_survive_sigkills_exactly_once);
