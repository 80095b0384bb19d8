//! The `cairn` binary against real system databases: every subcommand on SQLite and on
//! Postgres, in tables and in JSON, with its effects checked through `cairn::Client`, and
//! the failures scripts test for (one `error:` line, the documented exit code).

mod common;

use std::time::Duration;

use cairn::{
    Cairn, EnqueueOptions, Error, Queue, ScheduleOptions, ScheduleStatus, StartOptions,
    WorkflowState,
};
use chrono::{DateTime, Utc};
use common::{TestDb, checkout, waiting};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// A schedule's workflow.
#[cairn::workflow]
async fn nightly(at: DateTime<Utc>, context: String) -> Result<String, cairn::Error> {
    Ok(format!("{context} {at}"))
}

/// An application on `db` with a finished, a failed, a queued-and-finished, a still-queued
/// (on a queue nobody serves) and a waiting workflow — `ok-1`, `fail-1`, `paid-1`,
/// `queued-1`, `wait-1` — the queue `payments` (with limits) and the schedule `nightly`.
async fn populate(db: &TestDb) -> Cairn {
    let app = Cairn::builder("cli-test")
        .database_url(&db.url)
        .queue(
            Queue::new("payments")
                .concurrency(4)
                .worker_concurrency(2)
                .rate_limit(10, Duration::from_secs(1)),
        )
        .schedule(
            "nightly",
            nightly,
            "0 3 * * *",
            "ctx".to_owned(),
            ScheduleOptions::default(),
        )
        .launch()
        .await
        .expect("launch");
    common::finish_ok_and_fail(&app).await;
    common::finish_paid(&app).await;
    app.enqueue_with(EnqueueOptions::id("queued-1"), "idle", checkout, 2)
        .await
        .expect("enqueue queued-1");
    app.start_with(StartOptions::id("wait-1"), waiting, ())
        .await
        .expect("start wait-1");
    app
}

/// The ids in a JSON array of workflows, in order.
fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("an array")
        .iter()
        .map(|w| w["workflow_id"].as_str().expect("an id").to_owned())
        .collect()
}

/// The workflow with `id` in a JSON array.
fn find<'a>(list: &'a Value, key: &str, id: &str) -> &'a Value {
    list.as_array()
        .expect("an array")
        .iter()
        .find(|w| w[key] == id)
        .unwrap_or_else(|| panic!("{id} in {list:#}"))
}

/// `workflow list`, `get` and `steps` show the workflows in aligned tables without colours
/// off a terminal, and as one JSON document with the documented fields; the filters narrow
/// the list, newest first.
async fn listing_shows_workflows_in_tables_and_json(db: &TestDb) {
    let app = populate(db).await;

    let table = db.cairn(&["workflow", "list"]).await;
    table.assert_ok();
    assert!(table.stdout.starts_with("WORKFLOW ID"), "{}", table.stdout);
    for needle in [
        "ok-1", "fail-1", "wait-1", "SUCCESS", "ERROR", "PENDING", "just now",
    ] {
        assert!(table.stdout.contains(needle), "{needle}: {}", table.stdout);
    }
    assert!(!table.stdout.contains('\x1b'), "no colours off a terminal");

    let all = db.cairn_json(&["workflow", "list"]).await;
    let mut listed = ids(&all);
    assert_eq!(listed.len(), 5, "{all:#}");
    let created: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["created_at"].as_str().unwrap())
        .collect();
    let mut newest_first = created.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(created, newest_first, "newest first");
    listed.sort();
    assert_eq!(listed, ["fail-1", "ok-1", "paid-1", "queued-1", "wait-1"]);
    let ok = find(&all, "workflow_id", "ok-1");
    assert_eq!(ok["status"], "SUCCESS");
    assert!(ok["name"].as_str().unwrap().contains("checkout"), "{ok:#}");
    assert_eq!(ok["input"], json!([7]));
    assert_eq!(ok["output"], json!(28));
    assert!(ok["duration_ms"].is_u64(), "{ok:#}");
    assert_eq!(
        find(&all, "workflow_id", "paid-1")["queue_name"],
        "payments"
    );

    let errors = db
        .cairn_json(&["workflow", "list", "--status", "error"])
        .await;
    assert_eq!(ids(&errors), ["fail-1"]);
    let finished = db
        .cairn_json(&["workflow", "list", "--status", "SUCCESS,ERROR"])
        .await;
    assert_eq!(ids(&finished).len(), 3);
    let repeated = db
        .cairn_json(&[
            "workflow", "list", "--status", "SUCCESS", "--status", "PENDING",
        ])
        .await;
    assert_eq!(ids(&repeated).len(), 3, "{repeated:#}");
    let queued = db
        .cairn_json(&["workflow", "list", "--queue", "payments"])
        .await;
    assert_eq!(ids(&queued), ["paid-1"]);
    let name = ok["name"].as_str().unwrap();
    let by_name = db.cairn_json(&["workflow", "list", "--name", name]).await;
    assert_eq!(ids(&by_name).len(), 3, "ok-1, paid-1, queued-1");
    let recent = db.cairn_json(&["workflow", "list", "--since", "1h"]).await;
    assert_eq!(ids(&recent).len(), 5);
    let old = db.cairn_json(&["workflow", "list", "--until", "1h"]).await;
    assert_eq!(ids(&old).len(), 0);
    let page = db
        .cairn_json(&["workflow", "list", "--limit", "2", "--offset", "1"])
        .await;
    assert_eq!(ids(&page), ids(&all)[1..3]);
    db.cairn(&["workflow", "list", "--status", "bogus"])
        .await
        .assert_fails(2, "unknown status `bogus`");

    let get = db.cairn(&["workflow", "get", "ok-1"]).await;
    get.assert_ok();
    for needle in ["ok-1", "SUCCESS", "28", "checkout"] {
        assert!(get.stdout.contains(needle), "{needle}: {}", get.stdout);
    }
    let failed = db.cairn_json(&["workflow", "get", "fail-1"]).await;
    assert_eq!(failed["status"], "ERROR");
    assert_eq!(failed["error"]["name"], "CardDeclined");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("declined")
    );

    let steps = db.cairn(&["workflow", "steps", "ok-1"]).await;
    steps.assert_ok();
    assert!(steps.stdout.starts_with("ID"), "{}", steps.stdout);
    assert!(steps.stdout.contains("double"), "{}", steps.stdout);
    let steps = db.cairn_json(&["workflow", "steps", "ok-1"]).await;
    let steps = steps.as_array().unwrap();
    assert_eq!(steps.len(), 2, "{steps:#?}");
    assert_eq!(steps[0]["function_id"], 1);
    assert_eq!(steps[0]["output"], 14);
    assert_eq!(steps[1]["output"], 28);
    assert_eq!(steps[1]["status"], "SUCCESS");
    let failed_steps = db.cairn_json(&["workflow", "steps", "fail-1"]).await;
    let last = failed_steps.as_array().unwrap().last().cloned().unwrap();
    assert_eq!(last["status"], "ERROR", "{failed_steps:#}");

    app.shutdown().await.expect("shutdown");
}

/// `cancel`, `resume`, `fork` and `delete` take effect (as the client sees them); an unknown
/// id among several changes nothing and fails with exit 1 naming it.
async fn management_commands_take_effect(db: &TestDb) {
    let app = populate(db).await;
    let client = db.client().await;

    let refused = db.cairn(&["workflow", "cancel", "wait-1", "nope-2"]).await;
    refused.assert_fails(1, "unknown workflow id nope-2");
    let state = client.status("wait-1").await.unwrap().state;
    assert_eq!(state, WorkflowState::Pending);

    let cancel = db.cairn(&["workflow", "cancel", "wait-1"]).await;
    cancel.assert_ok();
    assert!(cancel.stdout.contains("cancelled 1 workflow"), "{cancel:?}");
    let state = client.status("wait-1").await.unwrap().state;
    assert_eq!(state, WorkflowState::Cancelled);
    let again = db.cairn_json(&["workflow", "cancel", "ok-1"]).await;
    assert_eq!(
        again,
        json!({ "cancelled": [] }),
        "a finished workflow stays"
    );

    let resumed = db.cairn_json(&["workflow", "resume", "wait-1"]).await;
    assert_eq!(resumed, json!({ "resumed": ["wait-1"] }));
    let state = client.status("wait-1").await.unwrap().state;
    assert_ne!(state, WorkflowState::Cancelled);

    let fork = db
        .cairn_json(&["workflow", "fork", "ok-1", "--step", "2", "--id", "fork-1"])
        .await;
    assert_eq!(fork["workflow_id"], "fork-1");
    assert_eq!(fork["forked_from"], "ok-1");
    let forked = client.status("fork-1").await.expect("the fork exists");
    assert_eq!(forked.forked_from.as_deref(), Some("ok-1"));
    let handle = client.retrieve::<u32>("fork-1").await.unwrap();
    assert_eq!(handle.result().await.expect("the fork runs"), 28);
    let human = db.cairn(&["workflow", "fork", "ok-1", "--step", "1"]).await;
    human.assert_ok();
    assert!(
        human.stdout.starts_with("forked ok-1 from step 1 as "),
        "{human:?}"
    );
    db.cairn(&["workflow", "fork", "nope", "--step", "1"])
        .await
        .assert_fails(1, "unknown workflow id nope");

    let deleted = db.cairn_json(&["workflow", "delete", "fail-1"]).await;
    assert_eq!(deleted, json!({ "deleted": ["fail-1"] }));
    assert!(matches!(
        client.status("fail-1").await,
        Err(Error::NotFound(_))
    ));
    db.cairn(&["workflow", "delete", "fail-1"])
        .await
        .assert_fails(1, "unknown workflow id fail-1");
    db.cairn(&["workflow", "get", "nope-3"])
        .await
        .assert_fails(1, "unknown workflow id nope-3");
    db.cairn(&["workflow", "steps", "nope-4"])
        .await
        .assert_fails(1, "unknown workflow id nope-4");

    db.cairn(&["workflow", "cancel", "wait-1"])
        .await
        .assert_ok();
    client.close().await;
    app.shutdown().await.expect("shutdown");
}

/// Cancelling and deleting more ids than one call takes (in several calls, with a progress
/// bar on a terminal) reaches every one of them.
async fn bulk_operations_reach_every_id(db: &TestDb) {
    let app = populate(db).await;
    let mut many = Vec::new();
    for i in 0..150 {
        let id = format!("bulk-{i:03}");
        app.enqueue_with(EnqueueOptions::id(&id), "idle", checkout, i)
            .await
            .expect("enqueue");
        many.push(id);
    }
    let mut args = vec!["workflow", "cancel"];
    args.extend(many.iter().map(String::as_str));
    let cancelled = db.cairn_json(&args).await;
    assert_eq!(cancelled["cancelled"].as_array().unwrap().len(), 150);
    let listed = db
        .cairn_json(&[
            "workflow",
            "list",
            "--status",
            "CANCELLED",
            "--limit",
            "500",
        ])
        .await;
    assert_eq!(ids(&listed).len(), 150);
    let mut args = vec!["workflow", "delete"];
    args.extend(many.iter().map(String::as_str));
    let deleted = db.cairn_json(&args).await;
    assert_eq!(deleted["deleted"].as_array().unwrap().len(), 150);
    let left = db.cairn_json(&["workflow", "list", "--limit", "500"]).await;
    assert_eq!(ids(&left).len(), 5);
    app.shutdown().await.expect("shutdown");
}

/// `queue list` shows depth and limits; `schedule list`, `pause`, `resume`, `trigger` and
/// `backfill` work on the schedule, as the client sees it.
async fn queues_and_schedules_are_shown_and_managed(db: &TestDb) {
    let app = populate(db).await;
    let client = db.client().await;

    let queues = db.cairn_json(&["queue", "list"]).await;
    let payments = find(&queues, "name", "payments");
    assert_eq!(payments["concurrency"], 4);
    assert_eq!(payments["worker_concurrency"], 2);
    assert_eq!(
        payments["rate_limit"],
        json!({ "limit": 10, "period_ms": 1000 })
    );
    let idle = find(&queues, "name", "idle");
    assert_eq!(idle["enqueued"], 1);
    assert_eq!(idle["concurrency"], Value::Null);
    let table = db.cairn(&["queue", "list"]).await;
    table.assert_ok();
    for needle in ["QUEUE", "payments", "idle", "10 per 1s"] {
        assert!(table.stdout.contains(needle), "{needle}: {}", table.stdout);
    }

    let schedules = db.cairn_json(&["schedule", "list"]).await;
    let schedule = find(&schedules, "name", "nightly");
    assert_eq!(schedule["status"], "ACTIVE");
    assert_eq!(schedule["cron"], "0 3 * * *");
    assert_eq!(schedule["context"], "ctx");

    db.cairn(&["schedule", "pause", "nightly"])
        .await
        .assert_ok();
    let stored = client.get_schedule("nightly").await.unwrap().unwrap();
    assert_eq!(stored.status, ScheduleStatus::Paused);
    let table = db.cairn(&["schedule", "list"]).await;
    assert!(table.stdout.contains("PAUSED"), "{}", table.stdout);
    let resumed = db.cairn_json(&["schedule", "resume", "nightly"]).await;
    assert_eq!(resumed["status"], "ACTIVE");
    let stored = client.get_schedule("nightly").await.unwrap().unwrap();
    assert_eq!(stored.status, ScheduleStatus::Active);

    let triggered = db.cairn_json(&["schedule", "trigger", "nightly"]).await;
    let id = triggered["workflow_id"].as_str().unwrap();
    client
        .status(id)
        .await
        .expect("the triggered workflow exists");

    let backfill = db
        .cairn_json(&[
            "schedule", "backfill", "nightly", "--from", "3d", "--to", "now",
        ])
        .await;
    let ticks = backfill["workflow_ids"].as_array().unwrap();
    assert_eq!(ticks.len(), 3, "one tick a day: {backfill:#}");
    for tick in ticks {
        client.status(tick.as_str().unwrap()).await.expect("tick");
    }
    db.cairn(&[
        "schedule", "backfill", "nightly", "--from", "now", "--to", "1d",
    ])
    .await
    .assert_fails(2, "must be before");
    db.cairn(&["schedule", "pause", "nope"])
        .await
        .assert_fails(1, "unknown schedule nope");

    client.close().await;
    app.shutdown().await.expect("shutdown");
}

/// `retention --keep N` deletes the finished workflows beyond the newest N and leaves
/// unfinished ones; `--older-than` spares recent ones.
async fn retention_deletes_old_finished_workflows(db: &TestDb) {
    let app = populate(db).await;
    let recent = db.cairn_json(&["retention", "--older-than", "30d"]).await;
    assert_eq!(recent, json!({ "deleted": 0 }));
    let kept = db.cairn_json(&["retention", "--keep", "1"]).await;
    assert_eq!(kept, json!({ "deleted": 2 }));
    let left = db.cairn_json(&["workflow", "list"]).await;
    assert_eq!(ids(&left).len(), 3, "{left:#}");
    db.cairn(&["retention"]).await.assert_code(2);
    app.shutdown().await.expect("shutdown");
}

/// `migrate --check` refuses an empty database (exit 3, saying what to run); `migrate`
/// creates the schema, reports it, and is a no-op the second time.
async fn migrate_creates_and_checks_the_schema(db: &TestDb) {
    db.cairn(&["migrate", "--check"])
        .await
        .assert_fails(3, "cairn migrate");
    db.cairn(&["workflow", "list"])
        .await
        .assert_fails(3, "holds no system database");
    let created = db.cairn_json(&["migrate"]).await;
    assert_eq!(created["created"], true);
    assert_eq!(created["before"], Value::Null);
    assert_eq!(created["after"], 125);
    let checked = db.cairn_json(&["migrate", "--check"]).await;
    assert_eq!(checked, json!({ "ok": true, "version": 125 }));
    let again = db.cairn(&["migrate"]).await;
    again.assert_ok();
    assert!(again.stdout.contains("nothing to do"), "{again:?}");
    let listed = db.cairn_json(&["workflow", "list"]).await;
    assert_eq!(listed, json!([]));
    if db.backend == common::Backend::Sqlite {
        // A path to an existing SQLite file works as its URL.
        let run = common::cairn_in(
            &db.dir(),
            &["--db", "system.sqlite", "--json", "migrate", "--check"],
        )
        .await;
        run.assert_ok();
    }
    if db.backend == common::Backend::Postgres {
        let other = db.cairn_json(&["--schema", "cli_other", "migrate"]).await;
        assert_eq!(other["created"], true, "another schema is created beside");
        let checked = db
            .cairn_json(&["--schema", "cli_other", "migrate", "--check"])
            .await;
        assert_eq!(checked["version"], 125);
    }
}

/// A schema older than DBOS 3.4's is refused by `migrate` and `migrate --check` alike (exit
/// 3, naming `dbos migrate`), and left as it was.
async fn an_older_schema_is_refused_and_left_alone(db: &TestDb) {
    db.cairn_json(&["migrate"]).await;
    db.execute("UPDATE dbos_migrations SET version = 100").await;
    db.cairn(&["migrate", "--check"])
        .await
        .assert_fails(3, "dbos migrate");
    db.cairn(&["migrate"]).await.assert_fails(3, "version 100");
    db.cairn(&["workflow", "list"])
        .await
        .assert_fails(3, "version 100");
    let err = cairn::check_system_database(&db.url, cairn::ClientOptions::default()).await;
    assert!(
        matches!(err, Err(Error::SchemaVersion { found: 100, .. })),
        "{err:?}"
    );
}

/// `reset` refuses without `--yes` when stdin is not a terminal (nothing changes); with it,
/// the database is empty and current afterwards.
async fn reset_empties_the_database(db: &TestDb) {
    let app = populate(db).await;
    app.shutdown().await.expect("shutdown");
    db.cairn(&["reset"]).await.assert_fails(2, "--yes");
    assert_eq!(ids(&db.cairn_json(&["workflow", "list"]).await).len(), 5);
    let reset = db.cairn_json(&["reset", "--yes"]).await;
    assert_eq!(reset, json!({ "reset": true }));
    assert_eq!(db.cairn_json(&["workflow", "list"]).await, json!([]));
    assert_eq!(db.cairn_json(&["schedule", "list"]).await, json!([]));
    db.cairn(&["migrate", "--check"]).await.assert_ok();
}

/// `dashboard` prints its URL and answers `GET /api/health` until stopped; a non-loopback
/// address without a token is refused.
async fn dashboard_serves_until_stopped(db: &TestDb) {
    cairn::migrate_system_database(&db.url, cairn::ClientOptions::default())
        .await
        .expect("migrate");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["--db", &db.url, "dashboard", "--addr", "127.0.0.1:0"])
        .env_remove("DBOS_SYSTEM_DATABASE_URL")
        .env_remove("CAIRN_DASHBOARD_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn cairn dashboard");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("the dashboard starts in time")
    .expect("read its first line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("a URL in {line:?}"));
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stream
        .write_all(
            format!("GET /api/health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Ctrl-C (SIGINT) stops it cleanly.
    let pid = child.id().expect("a pid").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("run kill");
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the dashboard stops in time")
        .expect("wait for the dashboard");
    assert!(status.success(), "{status:?}");

    db.cairn(&["dashboard", "--addr", "0.0.0.0:0"])
        .await
        .assert_fails(2, "token");
}

both_backends!(
    listing_shows_workflows_in_tables_and_json,
    management_commands_take_effect,
    bulk_operations_reach_every_id,
    queues_and_schedules_are_shown_and_managed,
    retention_deletes_old_finished_workflows,
    migrate_creates_and_checks_the_schema,
    an_older_schema_is_refused_and_left_alone,
    reset_empties_the_database,
    dashboard_serves_until_stopped,
);

/// Without `--db` or `DBOS_SYSTEM_DATABASE_URL`, one line says what to pass and lists the
/// SQLite files here as candidates (exit 2).
#[tokio::test]
async fn a_missing_database_lists_the_sqlite_files_here() {
    let dir = std::env::temp_dir().join(format!("cairn_cli_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = common::cairn_in(&dir, &["workflow", "list"]).await;
    run.assert_fails(2, "--db URL or set DBOS_SYSTEM_DATABASE_URL");
    std::fs::write(dir.join("shop.sqlite"), b"").unwrap();
    let run = common::cairn_in(&dir, &["workflow", "list"]).await;
    run.assert_fails(2, "sqlite:///shop.sqlite");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An unreachable server, a malformed URL, a missing SQLite file and unknown arguments each
/// give one error line and their exit code; a password is never printed.
#[tokio::test]
async fn bad_databases_and_arguments_give_one_line_and_an_exit_code() {
    let here = std::env::temp_dir();
    common::cairn_in(
        &here,
        &[
            "--db",
            "postgres://postgres@127.0.0.1:1/x",
            "--connect-timeout",
            "1s",
            "workflow",
            "list",
        ],
    )
    .await
    .assert_fails(3, "cannot connect to postgres://postgres@127.0.0.1:1/x");
    common::cairn_in(&here, &["--db", "nonsense", "workflow", "list"])
        .await
        .assert_fails(2, "malformed system database URL `nonsense`");
    common::cairn_in(
        &here,
        &["--db", "mysql://root@localhost/x", "queue", "list"],
    )
    .await
    .assert_fails(2, "malformed system database URL");
    let secret = common::cairn_in(
        &here,
        &["--db", "postgres://u:hunter2@[bad/x", "workflow", "list"],
    )
    .await;
    secret.assert_fails(2, "postgres://u:***@");
    assert!(!secret.stderr.contains("hunter2"), "{secret:?}");
    common::cairn_in(
        &here,
        &["--db", "sqlite:///no/such/dir/x.sqlite", "workflow", "list"],
    )
    .await
    .assert_fails(3, "holds no system database");
    let unknown = common::cairn_in(&here, &["frobnicate"]).await;
    unknown.assert_code(2);
    let missing = common::cairn_in(
        &here,
        &["--db", "sqlite:///x.sqlite", "workflow", "fork", "id"],
    )
    .await;
    missing.assert_code(2);
}
