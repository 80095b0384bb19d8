//! Recovery: a long workflow of ten slow steps. Kill the process while it runs (Ctrl-C or
//! `kill -9`), run it again, and it resumes at the next unfinished step; finished steps are
//! not run again.
//!
//! Run: `cargo run --example recovery` (kill it midway, then run the same command again).
//! Start over: `rm recovery-demo.sqlite*`.

use std::time::Duration;

use cairn::{Cairn, StartOptions};

#[cairn::step]
async fn slow_step(n: u32) -> Result<u32, cairn::Error> {
    println!("  running step {n} ...");
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("  step {n} done (checkpointed)");
    Ok(n * n)
}

/// Ten one-second steps; the sum of their squares.
#[cairn::workflow]
async fn long_job() -> Result<u32, cairn::Error> {
    let mut total = 0;
    for n in 1..=10 {
        total += slow_step(n).await?;
    }
    Ok(total)
}

#[tokio::main]
async fn main() -> cairn::Result<()> {
    // launch() resumes unfinished workflows of this executor before anything else.
    let app = Cairn::builder("recovery-demo").launch().await?;
    let handle = app
        .start_with(StartOptions::id("long-job"), long_job, ())
        .await?;
    let status = handle.status().await?;
    if status.recovery_attempts > 1 {
        println!(
            "resuming workflow {} (attempt {})",
            handle.id(),
            status.recovery_attempts
        );
    } else {
        println!(
            "started workflow {}: kill this process now and run it again",
            handle.id()
        );
    }
    let total = handle.result().await?;
    println!("workflow {} finished: {total}", handle.id());
    app.shutdown().await
}
