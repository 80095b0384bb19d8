//! `cairn queue`, `schedule`, `retention`, `migrate`, `reset` and `dashboard`.

use std::io::{BufRead, IsTerminal, Write};

use cairn::{Client, RateLimit, ScheduleStatus};
use serde_json::{Value, json};

use crate::args::{
    DashboardArgs, MigrateArgs, QueueCommand, ResetArgs, RetentionArgs, ScheduleCommand,
};
use crate::output::{Cell, Output, Table, relative_time};
use crate::{Database, Failure, Outcome};

/// `cairn queue list`.
pub async fn queue(client: &Client, command: QueueCommand, output: &Output) -> Outcome {
    let QueueCommand::List = command;
    let stats = client.queue_stats().await.map_err(Failure::of)?;
    if output.json {
        let list: Vec<Value> = stats
            .iter()
            .map(|q| {
                let def = q.definition.as_ref();
                json!({
                    "name": q.name,
                    "enqueued": q.enqueued,
                    "delayed": q.delayed,
                    "running": q.running,
                    "finished_per_minute": q.finished_per_minute,
                    "concurrency": def.and_then(|d| d.concurrency),
                    "worker_concurrency": def.and_then(|d| d.worker_concurrency),
                    "rate_limit": def.and_then(|d| d.rate_limit.as_ref()).map(|r| json!({
                        "limit": r.limit,
                        "period_ms": u64::try_from(r.period.as_millis()).unwrap_or(u64::MAX),
                    })),
                    "priority_enabled": def.map(|d| d.priority_enabled),
                    "partition_queue": def.map(|d| d.partition_queue),
                })
            })
            .collect();
        output.json(&Value::Array(list));
        return Ok(());
    }
    let mut table = Table::new(vec![
        "QUEUE",
        "ENQUEUED",
        "DELAYED",
        "RUNNING",
        "CONCURRENCY",
        "WORKER CONCURRENCY",
        "RATE LIMIT",
    ]);
    let limit = |v: Option<u32>| -> Cell {
        match v {
            Some(n) => n.to_string().into(),
            None => output.dim("-"),
        }
    };
    for q in &stats {
        let def = q.definition.as_ref();
        table.row(vec![
            q.name.clone().into(),
            q.enqueued.to_string().into(),
            q.delayed.to_string().into(),
            q.running.to_string().into(),
            limit(def.and_then(|d| d.concurrency)),
            limit(def.and_then(|d| d.worker_concurrency)),
            match def.and_then(|d| d.rate_limit.as_ref()) {
                Some(rate) => rate_text(rate).into(),
                None => output.dim("-"),
            },
        ]);
    }
    table.print(output, "no queues");
    Ok(())
}

/// `10 per 1s`.
fn rate_text(rate: &RateLimit) -> String {
    format!(
        "{} per {}",
        rate.limit,
        humantime::format_duration(rate.period)
    )
}

/// `cairn schedule …`.
pub async fn schedule(client: &Client, command: ScheduleCommand, output: &Output) -> Outcome {
    match command {
        ScheduleCommand::List => {
            let schedules = client.list_schedules().await.map_err(Failure::of)?;
            if output.json {
                let list: Vec<Value> = schedules
                    .iter()
                    .map(|s| {
                        json!({
                            "name": s.name,
                            "id": s.id,
                            "workflow_name": s.workflow_name,
                            "cron": s.cron,
                            "status": status_text(s.status),
                            "context": s.context,
                            "last_fired_at": s.last_fired_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                            "automatic_backfill": s.automatic_backfill,
                            "timezone": s.timezone,
                            "queue_name": s.queue,
                            "application_name": s.application_name,
                        })
                    })
                    .collect();
                output.json(&Value::Array(list));
                return Ok(());
            }
            let mut table = Table::new(vec![
                "SCHEDULE",
                "WORKFLOW",
                "CRON",
                "STATUS",
                "LAST FIRED",
                "QUEUE",
                "TIMEZONE",
            ]);
            for s in &schedules {
                table.row(vec![
                    s.name.clone().into(),
                    s.workflow_name.clone().into(),
                    s.cron.clone().into(),
                    output.status(status_text(s.status)),
                    s.last_fired_at
                        .as_ref()
                        .map(relative_time)
                        .map(Cell::from)
                        .unwrap_or_else(|| output.dim("never")),
                    s.queue
                        .clone()
                        .map(Cell::from)
                        .unwrap_or_else(|| output.dim("-")),
                    s.timezone
                        .clone()
                        .unwrap_or_else(|| "UTC".to_owned())
                        .into(),
                ]);
            }
            table.print(output, "no schedules");
            Ok(())
        }
        ScheduleCommand::Pause { name } => {
            client.pause_schedule(&name).await.map_err(Failure::of)?;
            done(
                output,
                json!({ "name": name, "status": "PAUSED" }),
                &format!("paused schedule {name}"),
            );
            Ok(())
        }
        ScheduleCommand::Resume { name } => {
            client.resume_schedule(&name).await.map_err(Failure::of)?;
            done(
                output,
                json!({ "name": name, "status": "ACTIVE" }),
                &format!("resumed schedule {name}"),
            );
            Ok(())
        }
        ScheduleCommand::Trigger { name } => {
            let id = client.trigger_schedule(&name).await.map_err(Failure::of)?;
            done(
                output,
                json!({ "name": name, "workflow_id": id }),
                &format!("triggered schedule {name}: workflow {id}"),
            );
            Ok(())
        }
        ScheduleCommand::Backfill { name, from, to } => {
            if from >= to {
                return Err(Failure::Usage(format!(
                    "--from ({}) must be before --to ({})",
                    from.to_rfc3339(),
                    to.to_rfc3339()
                )));
            }
            let spinner = output.spinner(&format!("backfilling schedule {name}"));
            let ids = client.backfill_schedule(&name, from, to).await;
            spinner.finish_and_clear();
            let ids = ids.map_err(Failure::of)?;
            done(
                output,
                json!({ "name": name, "workflow_ids": ids }),
                &format!("backfilled schedule {name}: {} workflow(s)", ids.len()),
            );
            Ok(())
        }
    }
}

/// A schedule status as stored.
fn status_text(status: ScheduleStatus) -> &'static str {
    match status {
        ScheduleStatus::Active => "ACTIVE",
        ScheduleStatus::Paused => "PAUSED",
    }
}

/// Print an action's result: `value` with --json, `line` otherwise.
fn done(output: &Output, value: Value, line: &str) {
    if output.json {
        output.json(&value);
    } else {
        println!("{line}");
    }
}

/// `cairn retention`.
pub async fn retention(client: &Client, args: RetentionArgs, output: &Output) -> Outcome {
    let spinner = output.spinner("deleting finished workflows");
    let deleted = match (args.older_than, args.keep) {
        (Some(age), _) => {
            let age = chrono::Duration::from_std(age)
                .map_err(|e| Failure::Usage(format!("--older-than: {e}")))?;
            let cutoff = chrono::Utc::now()
                .checked_sub_signed(age)
                .ok_or_else(|| Failure::Usage("--older-than is too far back".to_owned()))?;
            client.delete_finished_before(cutoff).await
        }
        (None, Some(keep)) => client.trim_finished_to(keep).await,
        (None, None) => Ok(0),
    };
    spinner.finish_and_clear();
    let deleted = deleted.map_err(Failure::of)?;
    done(
        output,
        json!({ "deleted": deleted }),
        &format!("deleted {deleted} finished workflow(s)"),
    );
    Ok(())
}

/// `cairn migrate [--check]`.
pub async fn migrate(db: &Database, args: MigrateArgs, output: &Output) -> Outcome {
    if args.check {
        let version = cairn::check_system_database(&db.url, db.options.clone())
            .await
            .map_err(|e| db.connect_failure(e))?;
        done(
            output,
            json!({ "ok": true, "version": version }),
            &format!(
                "{} is a current system database (schema version {version})",
                db.shown
            ),
        );
        return Ok(());
    }
    let report = cairn::migrate_system_database(&db.url, db.options.clone())
        .await
        .map_err(|e| db.connect_failure(e))?;
    let line = match report.before {
        None => format!(
            "created the system database schema (version {}) in {}",
            report.after, db.shown
        ),
        Some(before) if before == report.after => format!(
            "{} is already at schema version {}; nothing to do",
            db.shown, report.after
        ),
        Some(before) => format!(
            "migrated {} from schema version {before} to {}",
            db.shown, report.after
        ),
    };
    done(
        output,
        json!({
            "backend": report.backend,
            "before": report.before,
            "after": report.after,
            "created": report.created(),
        }),
        &line,
    );
    Ok(())
}

/// `cairn reset [--yes]`.
pub async fn reset(db: &Database, args: ResetArgs, output: &Output) -> Outcome {
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::Usage(format!(
                "refusing to reset {} without confirmation: pass --yes",
                db.shown
            )));
        }
        eprint!(
            "This deletes every workflow, step, message and schedule in {}.\nType `yes` to continue: ",
            db.shown
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| Failure::Operation(format!("cannot read the confirmation: {e}")))?;
        if answer.trim() != "yes" {
            return Err(Failure::Operation(
                "reset cancelled: nothing was changed".to_owned(),
            ));
        }
    }
    cairn::reset_system_database(&db.url, db.options.clone())
        .await
        .map_err(|e| match e {
            cairn::Error::InvalidArgument { reason, .. } => Failure::Usage(reason),
            e => db.connect_failure(e),
        })?;
    done(
        output,
        json!({ "reset": true }),
        &format!("reset {}: it is now an empty system database", db.shown),
    );
    Ok(())
}

/// `cairn dashboard`: serve until Ctrl-C.
pub async fn dashboard(client: Client, args: DashboardArgs, output: &Output) -> Outcome {
    let mut options = cairn::admin::AdminOptions::default().addr(args.addr);
    if let Some(token) = args.token {
        options = options.token(token);
    }
    let server = match cairn::admin::serve_dashboard(client.clone(), options).await {
        Ok(server) => server,
        Err(e) => {
            client.close().await;
            return Err(match e {
                cairn::Error::InvalidArgument { reason, .. } => Failure::Usage(reason),
                cairn::Error::Config(m) => Failure::Operation(m),
                e => Failure::of(e),
            });
        }
    };
    // Listening for Ctrl-C before saying where it serves: the handler is installed when the
    // wait is first polled, and a Ctrl-C between the line and that poll would kill the
    // process instead of stopping the server.
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let early = tokio::select! {
        biased;
        signal = &mut ctrl_c => Some(signal),
        () = std::future::ready(()) => None,
    };
    let url = format!("http://{}/", server.local_addr());
    if output.json {
        output.json(&json!({ "url": url }));
    } else {
        println!("Cairn dashboard on {url} (Ctrl-C to stop)");
    }
    let _ = std::io::stdout().flush();
    let signal = match early {
        Some(signal) => signal,
        None => ctrl_c.await,
    };
    server.shutdown().await;
    client.close().await;
    signal.map_err(|e| Failure::Operation(format!("cannot wait for Ctrl-C: {e}")))
}
