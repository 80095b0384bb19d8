//! Schedules: ticks start exactly one workflow each, with DBOS's ids and the scheduled time;
//! pause, resume, trigger, backfill, time zones, several processes, automatic backfill after
//! downtime, schedules declared on the builder — each on SQLite and on Postgres.

mod common;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use cairn::{Cairn, Error, ScheduleOptions, ScheduleStatus};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use common::TestDb;
use tokio::sync::watch;

/// One execution of a scheduled workflow: `(workflow id, scheduled time)`.
type Run = (String, DateTime<Utc>);

/// The executions of scheduled workflows, by context key.
static RUNS: LazyLock<Mutex<HashMap<String, Vec<Run>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Bumped at every execution, so tests wait on executions instead of sleeping.
static RAN: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

#[cairn::workflow]
async fn tick(at: DateTime<Utc>, key: String) -> Result<(), Error> {
    let id = cairn::workflow_id().unwrap_or_default();
    RUNS.lock().unwrap().entry(key).or_default().push((id, at));
    RAN.send_modify(|n| *n += 1);
    Ok(())
}

/// The executions recorded for `key` so far.
fn runs(key: &str) -> Vec<Run> {
    RUNS.lock().unwrap().get(key).cloned().unwrap_or_default()
}

/// Wait until the executions of `key` satisfy `done` (failing after a generous limit).
async fn wait_for(key: &str, what: &str, done: impl Fn(&[Run]) -> bool) {
    let mut ran = RAN.subscribe();
    let wait = async {
        loop {
            if done(&runs(key)) {
                return;
            }
            ran.changed().await.expect("sender lives");
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .is_err()
    {
        panic!("timed out waiting for {what}; runs: {:?}", runs(key));
    }
}

/// A unique name for this test's schedule (tests share the executions table above).
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("time")
        .with_timezone(&Utc)
}

/// The id of a tick of a UTC schedule (DBOS's format).
fn utc_tick_id(name: &str, at: DateTime<Utc>) -> String {
    format!("sched-{name}-{}", at.format("%Y-%m-%dT%H:%M:%S+00:00"))
}

/// Whether a workflow exists.
async fn exists(app: &Cairn, workflow_id: &str) -> bool {
    match app.status(workflow_id).await {
        Ok(_) => true,
        Err(Error::NotFound(_)) => false,
        Err(other) => panic!("status of {workflow_id}: {other}"),
    }
}

async fn fires_pauses_resumes_and_triggers(db: &TestDb) {
    let app = db.launch().await;
    let name = unique("every-second");
    app.create_schedule(
        &name,
        tick,
        "* * * * * *",
        name.clone(),
        ScheduleOptions::default(),
    )
    .await
    .expect("create");
    let again = app
        .create_schedule(
            &name,
            tick,
            "* * * * *",
            name.clone(),
            ScheduleOptions::default(),
        )
        .await;
    assert!(
        matches!(again, Err(Error::InvalidArgument { .. })),
        "{again:?}"
    );
    wait_for(&name, "two ticks", |runs| runs.len() >= 2).await;
    for (id, at) in runs(&name) {
        assert_eq!(at.timestamp_subsec_nanos(), 0, "{at}");
        assert_eq!(id, utc_tick_id(&name, at));
    }
    let stored = app.get_schedule(&name).await.expect("get").expect("exists");
    assert_eq!(stored.status, ScheduleStatus::Active);
    assert_eq!(stored.cron, "* * * * * *");
    assert_eq!(stored.context, serde_json::json!(name));
    assert_eq!(stored.workflow_name, "tick");
    assert!(stored.last_fired_at.is_some());
    let listed = app.list_schedules().await.expect("list");
    assert!(listed.iter().any(|s| s.name == name));

    // Paused: no tick after the pause is fired. (Observing that nothing happens takes a
    // wait; two ticks' worth.)
    app.pause_schedule(&name).await.expect("pause");
    let paused_at = Utc::now();
    assert_eq!(
        app.get_schedule(&name)
            .await
            .expect("get")
            .expect("exists")
            .status,
        ScheduleStatus::Paused
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let next = paused_at
        .duration_trunc(TimeDelta::seconds(1))
        .expect("trunc");
    for later in [next + TimeDelta::seconds(1), next + TimeDelta::seconds(2)] {
        assert!(
            !exists(&app, &utc_tick_id(&name, later)).await,
            "tick {later} fired while paused"
        );
    }
    assert!(runs(&name).iter().all(|(_, at)| *at <= paused_at));

    app.resume_schedule(&name).await.expect("resume");
    let resumed_at = Utc::now();
    wait_for(&name, "a tick after the resume", |runs| {
        runs.iter().any(|(_, at)| *at > resumed_at)
    })
    .await;

    let triggered = app.trigger_schedule(&name).await.expect("trigger");
    assert!(
        triggered.starts_with(&format!("sched-{name}-trigger-")),
        "{triggered}"
    );
    wait_for(&name, "the triggered run", |runs| {
        runs.iter().any(|(id, _)| *id == triggered)
    })
    .await;

    // Every tick ran once.
    let all = runs(&name);
    let mut ids: Vec<&String> = all.iter().map(|(id, _)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all.len(), "{all:?}");

    assert!(app.delete_schedule(&name).await.expect("delete"));
    assert!(app.get_schedule(&name).await.expect("get").is_none());
    assert!(!app.delete_schedule(&name).await.expect("delete again"));
    assert!(matches!(
        app.pause_schedule(&name).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        app.trigger_schedule(&name).await,
        Err(Error::NotFound(_))
    ));
    app.shutdown().await.expect("shutdown");
}

async fn backfill_creates_each_tick_once(db: &TestDb) {
    let app = db.launch().await;
    let name = unique("new-year");
    app.create_schedule(
        &name,
        tick,
        "0 0 0 1 1 *",
        name.clone(),
        ScheduleOptions::default(),
    )
    .await
    .expect("create");
    let (start, end) = (utc("2020-06-01T00:00:00Z"), utc("2024-06-01T00:00:00Z"));
    let ids = app
        .backfill_schedule(&name, start, end)
        .await
        .expect("backfill");
    let expected: Vec<String> = (2021..=2024)
        .map(|y| utc_tick_id(&name, utc(&format!("{y}-01-01T00:00:00Z"))))
        .collect();
    assert_eq!(ids, expected);
    wait_for(&name, "the backfilled ticks", |runs| runs.len() >= 4).await;
    // Each tick's status row names its schedule, as DBOS's scheduler records it.
    let tagged = db
        .query_text(&format!(
            "SELECT schedule_name FROM workflow_status WHERE workflow_uuid = '{}'",
            expected[0]
        ))
        .await;
    assert_eq!(tagged.as_deref(), Some(name.as_str()));
    // Again, and over a range holding one more tick: only that one is new.
    let again = app
        .backfill_schedule(&name, start, end)
        .await
        .expect("backfill again");
    assert_eq!(again, expected);
    let wider = app
        .backfill_schedule(&name, start, utc("2025-06-01T00:00:00Z"))
        .await
        .expect("wider backfill");
    assert_eq!(wider.len(), 5);
    wait_for(&name, "the fifth tick", |runs| runs.len() >= 5).await;
    let mut ran: Vec<(String, DateTime<Utc>)> = runs(&name);
    ran.sort();
    let expected: Vec<(String, DateTime<Utc>)> = (2021..=2025)
        .map(|y| {
            let at = utc(&format!("{y}-01-01T00:00:00Z"));
            (utc_tick_id(&name, at), at)
        })
        .collect();
    assert_eq!(ran, expected);

    // A time zone: the ticks' ids carry the local offset, across New York's spring change.
    let local = unique("nine-in-new-york");
    app.create_schedule(
        &local,
        tick,
        "0 9 * * *",
        local.clone(),
        ScheduleOptions::default().timezone("America/New_York"),
    )
    .await
    .expect("create");
    let ids = app
        .backfill_schedule(
            &local,
            utc("2026-03-07T00:00:00Z"),
            utc("2026-03-10T00:00:00Z"),
        )
        .await
        .expect("backfill");
    assert_eq!(
        ids,
        [
            format!("sched-{local}-2026-03-07T09:00:00-05:00"),
            format!("sched-{local}-2026-03-08T09:00:00-04:00"),
            format!("sched-{local}-2026-03-09T09:00:00-04:00"),
        ]
    );
    wait_for(&local, "the local ticks", |runs| runs.len() >= 3).await;
    let mut times: Vec<DateTime<Utc>> = runs(&local).into_iter().map(|(_, at)| at).collect();
    times.sort();
    assert_eq!(
        times,
        [
            utc("2026-03-07T14:00:00Z"),
            utc("2026-03-08T13:00:00Z"),
            utc("2026-03-09T13:00:00Z"),
        ]
    );
    let bad = app
        .create_schedule(
            &unique("bad"),
            tick,
            "every tuesday",
            String::new(),
            ScheduleOptions::default(),
        )
        .await;
    assert!(matches!(bad, Err(Error::InvalidArgument { .. })), "{bad:?}");
    let bad_zone = app
        .create_schedule(
            &unique("bad"),
            tick,
            "* * * * *",
            String::new(),
            ScheduleOptions::default().timezone("Mars/Olympus"),
        )
        .await;
    assert!(
        matches!(bad_zone, Err(Error::InvalidArgument { .. })),
        "{bad_zone:?}"
    );
    app.shutdown().await.expect("shutdown");
}

async fn two_processes_fire_each_tick_once(db: &TestDb) {
    let a = db
        .builder("cairn-test")
        .executor_id("a")
        .launch()
        .await
        .expect("launch a");
    let b = db
        .builder("cairn-test")
        .executor_id("b")
        .launch()
        .await
        .expect("launch b");
    let name = unique("shared");
    a.create_schedule(
        &name,
        tick,
        "* * * * * *",
        name.clone(),
        ScheduleOptions::default(),
    )
    .await
    .expect("create");
    let created = Utc::now();
    // b reads the schedules every 2 seconds: by 3 seconds on, both fire every tick.
    wait_for(&name, "ticks while both fire", |runs| {
        runs.iter()
            .filter(|(_, at)| *at > created + TimeDelta::seconds(3))
            .count()
            >= 3
    })
    .await;
    a.pause_schedule(&name).await.expect("pause");
    b.pause_schedule(&name).await.expect("pause in b too");
    let all = runs(&name);
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for (id, at) in &all {
        assert_eq!(*id, utc_tick_id(&name, *at));
        *by_id.entry(id).or_default() += 1;
    }
    assert!(by_id.values().all(|&n| n == 1), "{all:?}");
    a.shutdown().await.expect("shutdown a");
    b.shutdown().await.expect("shutdown b");
}

async fn automatic_backfill_after_downtime_is_bounded(db: &TestDb) {
    let name = unique("hourly");
    let first = db
        .builder("cairn-test")
        .executor_id("first")
        .launch()
        .await
        .expect("launch");
    first
        .create_schedule(
            &name,
            tick,
            "0 0 * * * *",
            name.clone(),
            ScheduleOptions::default().automatic_backfill(true),
        )
        .await
        .expect("create");
    first.shutdown().await.expect("shutdown");
    // The last tick was 30 hours ago: 30 ticks were missed while no process ran.
    let now = Utc::now();
    let hour = now.duration_trunc(TimeDelta::hours(1)).expect("trunc");
    let last = hour - TimeDelta::hours(30);
    db.execute(&format!(
        "UPDATE workflow_schedules SET last_fired_at = '{}' WHERE schedule_name = '{name}'",
        last.format("%Y-%m-%dT%H:%M:%S+00:00")
    ))
    .await;
    let app = db
        .builder("cairn-test")
        .executor_id("second")
        .max_automatic_backfill(5)
        .launch()
        .await
        .expect("launch");
    wait_for(&name, "the backfilled ticks", |runs| runs.len() >= 5).await;
    let mut times: Vec<DateTime<Utc>> = runs(&name).into_iter().map(|(_, at)| at).collect();
    times.sort();
    // The latest five, consecutive (one more if an hour passed since `now`).
    let oldest = times[0];
    assert!(oldest >= hour - TimeDelta::hours(4), "{times:?}");
    for (i, at) in times.iter().take(5).enumerate() {
        assert_eq!(*at, oldest + TimeDelta::hours(i as i64), "{times:?}");
    }
    for skipped in [5, 6, 29] {
        let at = hour - TimeDelta::hours(skipped);
        assert!(
            !exists(&app, &utc_tick_id(&name, at)).await,
            "tick {at} is older than the bound"
        );
    }
    let stored = app.get_schedule(&name).await.expect("get").expect("exists");
    assert!(stored.last_fired_at.expect("last tick") >= hour - TimeDelta::hours(1));
    app.shutdown().await.expect("shutdown");
}

async fn declared_schedules_are_upserted_at_launch(db: &TestDb) {
    let name = unique("declared");
    let builder = || {
        db.builder("cairn-test").schedule(
            &name,
            tick,
            "* * * * * *",
            name.clone(),
            ScheduleOptions::default(),
        )
    };
    let app = builder().launch().await.expect("launch");
    wait_for(&name, "a tick of the declared schedule", |runs| {
        !runs.is_empty()
    })
    .await;
    app.pause_schedule(&name).await.expect("pause");
    app.shutdown().await.expect("shutdown");
    // Declared again at the next launch: the definition is kept up to date, the pause too.
    let app = builder().launch().await.expect("relaunch");
    let stored = app.get_schedule(&name).await.expect("get").expect("exists");
    assert_eq!(stored.status, ScheduleStatus::Paused);
    assert_eq!(app.list_schedules().await.expect("list").len(), 1);
    app.shutdown().await.expect("shutdown");

    let bad = db
        .builder("cairn-test")
        .schedule(
            unique("bad"),
            tick,
            "61 * * * *",
            String::new(),
            ScheduleOptions::default(),
        )
        .launch()
        .await;
    assert!(matches!(bad, Err(Error::InvalidArgument { .. })), "{bad:?}");
}

async fn a_schedule_with_a_queue_enqueues_there(db: &TestDb) {
    let queue = unique("scheduled");
    let app = db
        .builder("cairn-test")
        .queue(cairn::Queue::new(&queue).concurrency(1))
        .launch()
        .await
        .expect("launch");
    let name = unique("queued");
    app.create_schedule(
        &name,
        tick,
        "0 0 12 * * *",
        name.clone(),
        ScheduleOptions::default().queue(&queue),
    )
    .await
    .expect("create");
    assert_eq!(
        app.get_schedule(&name)
            .await
            .expect("get")
            .expect("exists")
            .queue
            .as_deref(),
        Some(queue.as_str())
    );
    let ids = app
        .backfill_schedule(
            &name,
            utc("2026-01-01T00:00:00Z"),
            utc("2026-01-03T00:00:00Z"),
        )
        .await
        .expect("backfill");
    assert_eq!(ids.len(), 2);
    let triggered = app.trigger_schedule(&name).await.expect("trigger");
    wait_for(&name, "the queued ticks", |runs| runs.len() >= 3).await;
    for id in ids.iter().chain([&triggered]) {
        let status = app.status(id).await.expect("status");
        assert_eq!(status.queue_name.as_deref(), Some(queue.as_str()), "{id}");
    }
    app.shutdown().await.expect("shutdown");
}

// ---- Several real processes --------------------------------------------------------------

const PROCESS_APP: &str = "schedules-processes";

/// A tick run in a worker process: logged to the side file the test reads.
#[cairn::workflow]
async fn logged_tick(at: DateTime<Utc>, key: String) -> Result<(), Error> {
    let id = cairn::workflow_id().unwrap_or_default();
    let executor = std::env::var("CAIRN_SCHED_EXECUTOR").unwrap_or_default();
    // Only workers log (the test's own applications may run a tick too).
    if std::env::var_os("CAIRN_SCHED_LOG").is_some() {
        common::side_log::append(
            "CAIRN_SCHED_LOG",
            &format!("ran {id} {at} {key} {executor}"),
        );
    }
    Ok(())
}

/// A worker process of [`processes_fire_each_tick_once`]: launches the application under
/// `CAIRN_SCHED_EXECUTOR` (so it fires the application's schedules) and runs until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a worker process of processes_fire_each_tick_once, started by it"]
async fn schedules_worker() {
    let url = std::env::var("CAIRN_SCHED_URL").expect("CAIRN_SCHED_URL");
    let executor = std::env::var("CAIRN_SCHED_EXECUTOR").expect("CAIRN_SCHED_EXECUTOR");
    let app = Cairn::builder(PROCESS_APP)
        .database_url(url)
        .executor_id(&executor)
        .launch()
        .await
        .expect("launch");
    common::side_log::append(
        "CAIRN_SCHED_LOG",
        &format!("launched {}", app.executor_id()),
    );
    std::future::pending::<()>().await;
}

fn spawn_schedules_worker(url: &str, log: &std::path::Path, executor: &str) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "schedules_worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env_remove("DBOS__VMID")
        .env("CAIRN_SCHED_URL", url)
        .env("CAIRN_SCHED_LOG", log)
        .env("CAIRN_SCHED_EXECUTOR", executor)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn a worker")
}

/// Two processes fire the same every-second schedule: every tick runs exactly once.
async fn processes_fire_each_tick_once(db: &TestDb) {
    let name = unique("processes");
    let creator = db
        .builder(PROCESS_APP)
        .executor_id("creator")
        .launch()
        .await
        .expect("launch");
    creator
        .create_schedule(
            &name,
            logged_tick,
            "* * * * * *",
            name.clone(),
            ScheduleOptions::default(),
        )
        .await
        .expect("create");
    // The creator stops firing; from here on only the two workers do.
    creator.shutdown().await.expect("shutdown");
    let log = std::env::temp_dir().join(format!("{name}.log"));
    let mut workers = [
        spawn_schedules_worker(&db.url, &log, "w1"),
        spawn_schedules_worker(&db.url, &log, "w2"),
    ];
    // An application of another name neither fires these schedules nor claims their ticks:
    // it only watches for the tick 8 seconds from now to finish (the workers fire from
    // their launch on).
    let observer = db
        .builder("schedules-observer")
        .executor_id("observer")
        .launch()
        .await
        .expect("launch the observer");
    let until = (Utc::now() + TimeDelta::seconds(8))
        .duration_trunc(TimeDelta::seconds(1))
        .expect("trunc");
    let last = utc_tick_id(&name, until);
    let finished = async {
        loop {
            // The tick's row appears when it fires; its result is then awaited (notified).
            match observer.retrieve::<()>(&last).await {
                Ok(handle) => return handle.result().await,
                Err(Error::NotFound(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(other) => panic!("retrieve {last}: {other}"),
            }
        }
    };
    let result = tokio::time::timeout(Duration::from_secs(60), finished).await;
    for worker in &mut workers {
        let _ = worker.kill();
        let _ = worker.wait();
    }
    observer.shutdown().await.expect("shutdown the observer");
    result
        .expect("the tick finishes")
        .expect("the tick succeeds");
    let lines = common::side_log::read(&log);
    let _ = std::fs::remove_file(&log);
    assert!(lines.iter().any(|l| l == "launched w1"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "launched w2"), "{lines:?}");
    let ran: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("ran "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(ran.contains(&last.as_str()), "{lines:?}");
    assert!(ran.len() >= 2, "{lines:?}");
    let mut unique_ids = ran.clone();
    unique_ids.sort();
    unique_ids.dedup();
    assert_eq!(unique_ids.len(), ran.len(), "a tick ran twice: {lines:?}");
}

both_backends!(
    fires_pauses_resumes_and_triggers,
    backfill_creates_each_tick_once,
    two_processes_fire_each_tick_once,
    automatic_backfill_after_downtime_is_bounded,
    declared_schedules_are_upserted_at_launch,
    a_schedule_with_a_queue_enqueues_there,
    processes_fire_each_tick_once,
);
