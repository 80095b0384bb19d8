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
