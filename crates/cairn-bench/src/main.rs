#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! Cairn's benchmark harness: run one workload against a fresh system database and print one
//! JSON line describing it.
//!
//! ```text
//! cargo run --release -p cairn-bench -- <workload> [--db URL] [--n N] [--prefill M]
//! ```
//!
//! - `w1`: one workflow of ten no-op steps at a time, `n` times (default 200): the cost of a step.
//! - `w2`: `n` such workflows started at once (default 1000): throughput under concurrency,
//!   and memory: the peak resident set while they ran (`peak_rss_mb`, from `VmHWM`, reset
//!   after the warm-up) and its growth over the set before, per workflow
//!   (`rss_growth_per_workflow_bytes`).
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
//! - `park`: `n` workflows (default 10,000) that each record one step and then wait in a
//!   `recv`: once all have recorded their `recv` deadline, the growth of the resident set
//!   (`VmRSS`) over the set before the first start, per workflow
//!   (`bytes_per_parked_workflow`); then each is sent its message from the same process, in a
//!   random order, 256 sends in flight: the rate at which they wake and complete durably
//!   (`woken_per_s`; `median_ms`/`p99_ms` from a send until its `recv` returned), every
//!   result checked afterwards; `peak_rss_mb` over the whole run. With `--evict-after-ms MS`
//!   the application evicts waits older than `MS`, and the memory is read once every parked
//!   workflow has left memory: the cost of an evicted workflow.
//! - `backlog`: as w6 with `n` workflows (default 10,000), all of them in a `recv`: after the
//!   SIGKILL, Cairn is launched again with `n` PENDING workflows of its executor to recover,
//!   and only once the launch has returned are the messages sent, from the relaunched
//!   application: `launch_ms`, `first_completion_ms`, `all_completed_ms`, `wf_per_s`,
//!   `peak_rss_mb`.
//! - `dashboard`: the dashboard's workflows page (`GET /api/workflows`, 50 rows) over 100,000
//!   workflows, through Cairn's admin HTTP server: the latency of one page, HTTP included.
//!
//! The database is always fresh: by default a temporary SQLite file, deleted afterwards; with
//! `--db postgres://…` a new database `cairn_bench_<uuid>` on that server, dropped afterwards.
//! Each run also measures `floor_commit_ms`, the median latency of a single-row autocommit
//! INSERT on the same database, so step costs can be read in commits.
//!
//! `--prefill M` (w1 and w2) fills the fresh database with `M` finished workflows of ten
//! steps each before measuring, with bulk SQL after a first launch created the schema; the
//! report says how many (`prefilled`, 0 without the option) and how long the fill took
//! (`prefill_s`).
//!
//! The report goes to stdout as exactly one JSON line; errors go to stderr with exit code 1.

mod cli;
mod dashboard;
mod database;
mod error;
mod floor;
mod list;
mod memory;
mod park;
mod prefill;
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
        // w6's or backlog's child: no report; it ends killed, or with an error.
        let outcome = runtime.and_then(|runtime| {
            runtime.block_on(w6::child(
                url,
                options.workload,
                options.n,
                options.workload.pool_size(),
            ))
        });
        if let Err(e) = outcome {
            eprintln!("cairn-bench ({} child): {e}", options.workload.name());
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
    let prefills = matches!(options.workload, cli::Workload::W1 | cli::Workload::W2);
    if options.prefill > 0 && !prefills {
        return Err(BenchError::new(
            "reading --prefill",
            "only w1 and w2 run on a prefilled database",
        ));
    }
    if options.workload == cli::Workload::List {
        return list::run(options, database).await;
    }
    if options.workload == cli::Workload::Dashboard {
        return dashboard::run(options, database).await;
    }
    if options.workload == cli::Workload::Backlog {
        // After the run, as for w6.
        let (measurement, extra) =
            w6::backlog(database, options.n, options.workload.pool_size()).await?;
        let floor = floor::commit_latency(database).await?;
        let mut report = Report::new(options.workload, database.backend(), &measurement, floor);
        report.extra = extra;
        return Ok(report);
    }
    let mut prefill_extra = workloads::Extra::new();
    if prefills {
        let prefill_s = if options.prefill > 0 {
            prefill(options, database).await?
        } else {
            0.0
        };
        prefill_extra.insert("prefilled".into(), options.prefill.into());
        prefill_extra.insert("prefill_s".into(), prefill_s.into());
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
    if options.evict_after_ms.is_some() && options.workload != cli::Workload::Park {
        return Err(BenchError::new(
            "reading --evict-after-ms",
            "only park takes an eviction delay",
        ));
    }
    if let Some(ms) = options.evict_after_ms {
        builder = builder.evict_after(Some(std::time::Duration::from_millis(ms)));
    }
    let app = builder.launch().await.context("launching Cairn")?;
    let measured = async {
        let floor = floor::commit_latency(database).await?;
        let (measurement, extra) = if options.workload == cli::Workload::Park {
            park::run(&app, database, options.n, options.evict_after_ms.is_some()).await?
        } else {
            workloads::run(&app, options.workload, options.n).await?
        };
        Ok::<_, BenchError>((floor, measurement, extra))
    }
    .await;
    let shut_down = app.shutdown().await.context("shutting Cairn down");
    let (floor, measurement, extra) = measured?;
    shut_down?;
    let mut report = Report::new(options.workload, database.backend(), &measurement, floor);
    report.extra = prefill_extra;
    report.extra.extend(extra);
    Ok(report)
}

/// Create the schema in the fresh `database` (by launching Cairn once, as an application
/// would) and fill it with `options.prefill` finished workflows; the fill's seconds.
async fn prefill(options: &Options, database: &BenchDatabase) -> Result<f64, BenchError> {
    let app = Cairn::builder("cairn-bench")
        .database_url(database.url())
        .pool_size(options.workload.pool_size())
        .launch()
        .await
        .context("launching Cairn to create the schema")?;
    app.shutdown().await.context("shutting Cairn down")?;
    let started = std::time::Instant::now();
    prefill::fill(database, options.prefill).await?;
    Ok((started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0)
}
