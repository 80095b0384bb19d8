//! Driving DBOS Transact 3.4 (Python) from the interop tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::{Backend, TestDb};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The Python with dbos 3.4 installed: `$CAIRN_DBOS_PYTHON`, else (outside CI) the venv
/// `scripts/python-venv.sh` makes. Never a silent skip: without DBOS these tests fail.
pub fn dbos_python() -> PathBuf {
    if let Some(python) = std::env::var_os("CAIRN_DBOS_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(python);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "CAIRN_DBOS_PYTHON is not set: in CI the DBOS interop tests need it (run them through scripts/test.sh, which sets it)"
        );
    }
    let default = repo_root().join("target/dbos-venv/bin/python");
    if !default.exists() {
        panic!(
            "no Python with DBOS 3.4 for the interop tests: run scripts/python-venv.sh (it creates {}), \
             or set CAIRN_DBOS_PYTHON to a python that has dbos==3.4.0",
            default.display()
        );
    }
    default
}

/// Run `scripts/interop/<script> <args>` with DBOS's Python; fail the test (showing the
/// script's output) unless it exits 0. Returns the JSON on the last line of stdout, if any.
pub async fn run_python(script: &str, args: &[&str]) -> Value {
    let python = dbos_python();
    let script_path = repo_root().join("scripts/interop").join(script);
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = tokio::task::spawn_blocking({
        let (python, script_path, args) = (python.clone(), script_path.clone(), args.clone());
        move || Command::new(&python).arg(&script_path).args(&args).output()
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| {
        panic!(
            "cannot run {}: {e} (run scripts/python-venv.sh?)",
            python.display()
        )
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} {} {} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        python.display(),
        script_path.display(),
        args.join(" "),
        output.status
    );
    match stdout.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(last) if last.trim_start().starts_with('{') => serde_json::from_str(last)
            .unwrap_or_else(|e| {
                panic!("{script} printed invalid JSON ({e}):\n{stdout}\n--- stderr\n{stderr}")
            }),
        _ => Value::Null,
    }
}

/// The database's URL as DBOS (SQLAlchemy) spells it: `sqlite:////abs/path`, `postgresql://…`.
pub fn dbos_url(db: &TestDb) -> String {
    match db.backend {
        Backend::Sqlite => format!("sqlite:///{}", sqlite_path(db).display()),
        Backend::Postgres => db.url.replacen("postgres://", "postgresql://", 1),
    }
}

pub fn sqlite_path(db: &TestDb) -> PathBuf {
    PathBuf::from(db.url.strip_prefix("sqlite:///").expect("a sqlite:/// URL"))
}

/// Run DBOS's own `dbos` CLI (from the same virtual environment) with `args`; fail the test
/// unless it exits 0. Returns its stdout parsed as JSON (a JSON string if it is not JSON).
pub async fn run_cli(args: &[&str]) -> Value {
    let python = dbos_python();
    let cli = python.with_file_name("dbos");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = tokio::task::spawn_blocking({
        let (cli, args) = (cli.clone(), args.clone());
        move || Command::new(&cli).args(&args).output()
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| panic!("cannot run {}: {e}", cli.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "dbos {} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        args.join(" "),
        output.status
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| Value::String(stdout.into_owned()))
}

/// A long-running DBOS Python process (`scripts/interop/<script> <args>`), for tests that
/// need a DBOS application serving queues or recovering workflows while the test runs. Its
/// stderr (DBOS's log) goes to the test's; its stdout carries one JSON line when it is ready.
/// Dropping it kills it.
pub struct PythonProcess {
    child: tokio::process::Child,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    label: String,
}

impl PythonProcess {
    /// Start the script and wait (up to 120 s) for the JSON line it prints when ready
    /// (`{"ready": true, …}`), which is returned.
    pub async fn start(script: &str, args: &[&str], env: &[(&str, &str)]) -> (Self, Value) {
        use tokio::io::AsyncBufReadExt;
        let python = dbos_python();
        let script_path = repo_root().join("scripts/interop").join(script);
        let label = format!("{} {}", script, args.join(" "));
        let mut child = tokio::process::Command::new(&python)
            .arg(&script_path)
            .args(args)
            .envs(env.iter().copied())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e} (run scripts/python-venv.sh?)",
                    python.display()
                )
            });
        let stdout = tokio::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut process = Self {
            child,
            stdout,
            label,
        };
        let ready = tokio::time::timeout(std::time::Duration::from_secs(120), async {
            loop {
                match process
                    .stdout
                    .next_line()
                    .await
                    .expect("read the script's stdout")
                {
                    Some(line) if line.trim_start().starts_with('{') => {
                        break serde_json::from_str::<Value>(&line).unwrap_or_else(|e| {
                            panic!("{} printed invalid JSON ({e}): {line}", process.label)
                        });
                    }
                    Some(_) => continue,
                    None => {
                        let status = process.child.wait().await.expect("wait");
                        panic!("{} exited ({status}) before it was ready", process.label);
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{} was not ready within 120 s", process.label));
        assert_eq!(
            ready["ready"],
            Value::Bool(true),
            "{}: {ready}",
            process.label
        );
        (process, ready)
    }

    /// SIGKILL the process (no shutdown of any kind) and reap it.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL the DBOS process");
    }

    /// Close its stdin, which asks it to shut DBOS down and exit; fail the test unless it
    /// exits 0 within 60 s.
    pub async fn stop(mut self) {
        drop(self.child.stdin.take());
        let status = tokio::time::timeout(std::time::Duration::from_secs(60), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within 60 s", self.label))
            .expect("wait");
        assert!(status.success(), "{} exited with {status}", self.label);
    }
}
