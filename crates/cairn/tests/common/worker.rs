//! The process driver of the crash tests: a worker process (this test binary again, running
//! one ignored test) is SIGKILLed after some progress, several times, and then run to its
//! end, while it logs what it does to a side file (see [`super::side_log`]) that the test
//! reads afterwards.
//!
//! The side file's lines the driver understands: `exec <step…> <run>` (a step's body ran),
//! `done <step…> <run>` (that step's checkpoint committed) and `result <workflow> <output>`,
//! where `<step…>` are the words naming a step and `<run>` is the worker's
//! [`incarnation`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::TestDb;

/// How long a worker may go without logging a line before the test fails.
const STALL: Duration = Duration::from_secs(120);

/// In a worker: its system database's URL.
pub fn database_url() -> String {
    std::env::var("CAIRN_CRASH_URL").expect("CAIRN_CRASH_URL")
}

/// In a worker: append one line to the side file (one `write` call, so lines from tasks do
/// not interleave).
pub fn log_line(line: String) {
    super::side_log::append("CAIRN_CRASH_LOG", &line);
}

/// In a worker: which run of the worker this is (0 for the first).
pub fn incarnation() -> String {
    std::env::var("CAIRN_CRASH_RUN").unwrap_or_default()
}

/// `kills` numbers of step bodies to let a worker run before each kill, each from 3 to
/// `2 + spread`: a simple pseudo-random sequence (no extra dependency) seeded per run, and
/// printed so a failure can be read against it.
pub fn kill_points(kills: usize, spread: u64) -> Vec<usize> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let mut x = seed | 1;
    let points = (0..kills)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            3 + (x % spread) as usize
        })
        .collect();
    eprintln!("kill points (step bodies between kills): {points:?}");
    points
}

/// Run the ignored test `worker` as a process on `db`, SIGKILLing it after each of `points`
/// further step bodies (a fresh process each time), then once more until it exits on its
/// own, which must be a success. Returns the side file's lines.
pub async fn run_with_kills(db: &TestDb, worker: &'static str, points: Vec<usize>) -> Vec<String> {
    let log: PathBuf = std::env::temp_dir().join(format!(
        "cairn-{worker}-{}.log",
        uuid::Uuid::new_v4().simple()
    ));
    let log_for_thread = log.clone();
    let db_url = db.url.clone();
    let backend = db.backend;
    tokio::task::spawn_blocking(move || {
        let db = TestDb::with_url(backend, db_url);
        for (run, more) in points.iter().enumerate() {
            let process = spawn(worker, &db, &log_for_thread, run);
            kill_after_progress(process, &log_for_thread, *more);
        }
        let last = spawn(worker, &db, &log_for_thread, points.len());
        let status = wait_for_exit(last, &log_for_thread);
        assert!(status.success(), "the final worker failed: {status}");
    })
    .await
    .expect("crash driver");
    let lines = super::side_log::read(&log);
    let _ = std::fs::remove_file(&log);
    lines
}

/// The `result <workflow> <output>` lines, by workflow.
pub fn results(lines: &[String]) -> HashMap<u64, u64> {
    let number = |text: &str| text.parse::<u64>().expect("number");
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("result "))
        .map(|l| {
            let (workflow, output) = l.split_once(' ').expect("result line");
            (number(workflow), number(output))
        })
        .collect()
}

/// Assert that no step whose checkpoint had committed ran again: a `done` line in run r
/// means the step's checkpoint committed in run r, so no later run may execute its body.
/// Returns how many distinct steps' bodies ran.
pub fn assert_no_committed_step_reran(lines: &[String]) -> usize {
    let mut committed_in: HashMap<Vec<&str>, u64> = HashMap::new();
    let mut executed: HashSet<Vec<&str>> = HashSet::new();
    let mut reruns = 0;
    for line in lines {
        let parts: Vec<&str> = line.split(' ').collect();
        let [kind @ ("done" | "exec"), step @ .., run] = parts.as_slice() else {
            continue;
        };
        let step = step.to_vec();
        let run = run.parse::<u64>().expect("number");
        if *kind == "done" {
            committed_in.entry(step).or_insert(run);
            continue;
        }
        if let Some(&committed) = committed_in.get(&step) {
            assert!(
                run <= committed,
                "step {step:?} committed in run {committed} but ran again in run {run}"
            );
        }
        if !executed.insert(step) {
            reruns += 1;
        }
    }
    eprintln!("{reruns} interrupted step bodies ran again (at-least-once for unfinished steps)");
    executed.len()
}

/// Start run `run` of the ignored test `worker` (this binary) on `db`, logging to `log`.
fn spawn(worker: &str, db: &TestDb, log: &Path, run: usize) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            worker,
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

/// How many step bodies the workers have executed so far.
fn executions(log: &Path) -> usize {
    super::side_log::read(log)
        .iter()
        .filter(|l| l.starts_with("exec"))
        .count()
}

/// Wait until the worker has executed `more` further step bodies, then SIGKILL it.
fn kill_after_progress(mut worker: Child, log: &Path, more: usize) {
    let start = executions(log);
    let deadline = Instant::now() + STALL;
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

/// Wait for the final worker to exit on its own (it does once every workflow finished); fail
/// (and kill it) if it logs nothing for [`STALL`].
fn wait_for_exit(mut worker: Child, log: &Path) -> ExitStatus {
    let mut seen = super::side_log::read(log).len();
    let mut last_progress = Instant::now();
    loop {
        if let Some(status) = worker.try_wait().expect("worker status") {
            return status;
        }
        let now = super::side_log::read(log).len();
        if now > seen {
            seen = now;
            last_progress = Instant::now();
        }
        if last_progress.elapsed() > STALL {
            let _ = worker.kill();
            let _ = worker.wait();
            panic!("the final worker made no progress for {STALL:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
