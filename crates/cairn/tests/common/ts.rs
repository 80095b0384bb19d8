//! Driving DBOS's TypeScript client (`@dbos-inc/dbos-sdk` 5.3.0, `DBOSClient`) from the
//! interop tests, through `scripts/interop/ts/client.js` as `scripts/node-client.sh`
//! installs it.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use super::dbos::repo_root;

/// The directory holding `client.js` and its `node_modules`: `$CAIRN_DBOS_TS_DIR`, else
/// (outside CI) where `scripts/node-client.sh` installs it. Never a silent skip: without the
/// client these tests fail, saying what to run.
pub fn ts_client_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CAIRN_DBOS_TS_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "CAIRN_DBOS_TS_DIR is not set: in CI the TypeScript interop tests need it (run them through scripts/test.sh, which runs scripts/node-client.sh and sets it)"
        );
    }
    let default = repo_root().join("target/dbos-ts");
    if !default.join("node_modules/@dbos-inc/dbos-sdk").exists() {
        panic!(
            "no DBOS TypeScript client for the interop tests: run scripts/node-client.sh (it installs @dbos-inc/dbos-sdk into {}), \
             or set CAIRN_DBOS_TS_DIR to the directory it printed",
            default.display()
        );
    }
    default
}

/// Run `node client.js <url> <args>` (see the script for its commands); fail the test,
/// showing the script's output, unless it exits 0. Returns the JSON on its last stdout line.
pub async fn run_ts(url: &str, args: &[&str]) -> Value {
    let dir = ts_client_dir();
    let script = dir.join("client.js");
    assert!(
        script.exists(),
        "{} is missing: run scripts/node-client.sh",
        script.display()
    );
    let mut argv = vec![script.display().to_string(), url.to_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let output = tokio::task::spawn_blocking({
        let (dir, argv) = (dir.clone(), argv.clone());
        move || Command::new("node").args(&argv).current_dir(&dir).output()
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| {
        panic!("cannot run node: {e} (the TypeScript interop tests need Node.js 20+ and npm; then run scripts/node-client.sh)")
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node {} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        argv.join(" "),
        output.status
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| {
            panic!(
                "node {} printed nothing\n--- stderr\n{stderr}",
                argv.join(" ")
            )
        });
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "node {} printed invalid JSON ({e}):\n{stdout}\n--- stderr\n{stderr}",
            argv.join(" ")
        )
    })
}
