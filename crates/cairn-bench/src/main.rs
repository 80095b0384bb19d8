#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! Cairn's benchmark harness: run one workload against a fresh system database and print one
//! JSON line describing it.
//!
//! ```text
//! cargo run --release -p cairn-bench -- <w1|w2|w3|w4|w5|w6> [--db URL] [--n N]
//! ```
//!
//! - `w1`: one workflow of ten no-op steps at a time, `n` times (default 200): the cost of a step.
//! - `w2`: `n` such workflows started at once (default 1000): throughput under concurrency.
//! - `w3`: `n` one-step workflows (default 2000) enqueued at once on a queue of worker
//!   concurrency 50 (default settings otherwise): a queue's throughput; then 200 enqueued one
//!   at a time (each after the previous one's result): the latency from the enqueue call
//!   until the workflow's body starts (`enqueue_start_median_ms`, `enqueue_start_p99_ms`).
//! - `w4`: an empty workflow, `n` times in a row (default 200): the fixed cost of a workflow.
//! - `w5`: `n` messages (default 100), one at a time, to a workflow waiting in `recv`: the
//!   latency from `send` until `recv` returns (one delivery and one wake-up).
//! - `w6`: `n` workflows (default 1000) that each recorded one step and then block, half in a
//!   durable sleep and half in a `recv`, in a child process (this binary again) killed with
//!   SIGKILL; with the messages sent and the sleeps due meanwhile, Cairn is launched again:
//!   the time from that launch until all are recovered and completed (`wf_per_s`,
//!   `first_completion_ms`, `launch_ms`).
//! - `dashboard`: the dashboard's workflows page (`GET /api/workflows`, 50 rows) over 100,000
//!   workflows, through Cairn's admin HTTP server: the latency of one page, HTTP included.
//!
//! The database is always fresh: by default a temporary SQLite file, deleted afterwards; with
//! `--db postgres://…` a new database `cairn_bench_<uuid>` on that server, dropped afterwards.
//! Each run also measures `floor_commit_ms`, the median latency of a single-row autocommit
//! INSERT on the same database, so step costs can be read in commits.
//!
//! The report goes to stdout as exactly one JSON line; errors go to stderr with exit code 1.

mod cli;
mod dashboard;
mod database;
mod error;
mod floor;
mod list;
mod report;
mod w6;
mod workloads;

use std::process::ExitCode;

use cairn::Cairn;
use clap::Parser;

use crate::cli::{Cli, Options};
use crate::database::BenchDatabase;
use crate::error::{BenchError, Context};
use crate::report::Report;

fn main() -> ExitCode {
    let options = match Cli::try_parse() {
        Ok(cli) => cli.into_options(),
        Err(e) => {
            // `--help` arrives here too: clap prints it to stdout, real errors to stderr.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime");
    if let Some(url) = &options.interrupted_child {
        // w6's child: no report; it ends killed, or with an error.
        let outcome = runtime.and_then(|runtime| {
            runtime.block_on(w6::child(url, options.n, options.workload.pool_size()))
        });
        if let Err(e) = outcome {
            eprintln!("cairn-bench (w6 child): {e}");
        }
        return ExitCode::FAILURE;
    }
    let outcome = runtime.and_then(|runtime| runtime.block_on(run(&options)));
    match outcome.and_then(|report| report.to_json_line()) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cairn-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Create a fresh database, benchmark on it, and remove it whatever the outcome.
async fn run(options: &Options) -> Result<Report, BenchError> {
    let database = BenchDatabase::create(options.db.as_deref()).await?;
    let measured = measure(options, &database).await;
    let removed = database.remove().await;
    let report = measured?;
    removed?;
    Ok(report)
}

/// Launch Cairn on `database`, measure the commit floor and the workload, and shut down.
async fn measure(options: &Options, database: &BenchDatabase) -> Result<Report, BenchError> {
    if options.workload == cli::Workload::List {
        return list::run(options, database).await;
    }
    if options.workload == cli::Workload::Dashboard {
        return dashboard::run(options, database).await;
    }
    if options.workload == cli::Workload::W6 {
        // After the run: the child creates the database.
        let measurement = w6::run(database, options.n, options.workload.pool_size()).await?;
        let floor = floor::commit_latency(database).await?;
        return Ok(Report::new(
            options.workload,
            database.backend(),
            &measurement,
            floor,
        ));
    }
    let mut builder = Cairn::builder("cairn-bench")
        .database_url(database.url())
        .pool_size(options.workload.pool_size());
    if options.workload == cli::Workload::W3 {
        builder = builder.queue(workloads::w3_queue());
    }
    let app = builder.launch().await.context("launching Cairn")?;
    let measured = async {
        let floor = floor::commit_latency(database).await?;
        let measurement = workloads::run(&app, options.workload, options.n).await?;
        Ok::<_, BenchError>((floor, measurement))
    }
    .await;
    let shut_down = app.shutdown().await.context("shutting Cairn down");
    let (floor, measurement) = measured?;
    shut_down?;
    Ok(Report::new(
        options.workload,
        database.backend(),
        &measurement,
        floor,
    ))
}
