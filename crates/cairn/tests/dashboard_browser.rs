//! The web dashboard in a real browser: headless Chromium (through chromedriver) over a
//! dashboard serving a database of real workflows — succeeded, failed, cancelled, queued on a
//! queue nobody serves, a parent with children, a step that retried, one that received a
//! message and has another waiting — on SQLite and on
//! Postgres. Each test saves screenshots to `target/dashboard-screenshots/<backend>-<page>.png`.
//!
//! Needs Chromium and chromedriver: `scripts/chromium.sh` installs them (the test fails, and
//! says so, when they are missing).
#![cfg(feature = "admin")]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use cairn::admin::{AdminOptions, AdminServer};
use cairn::{
    Cairn, Client, EnqueueOptions, Error, ScheduleOptions, ScheduleStatus, StartOptions,
    WorkflowState,
};
use common::browser::{Browser, screenshot_dir};
use common::{Backend, TestDb, count};

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum ShopError {
    #[error("card declined for order {0}")]
    Declined(u32),
    #[error("try again: {0}")]
    Busy(String),
}

#[cairn::step]
async fn price(order: u32) -> Result<u32, ShopError> {
    Ok(order * 10)
}

/// Succeeds with one step.
#[cairn::workflow]
async fn checkout(order: u32) -> Result<u32, ShopError> {
    price(order).await
}

/// Fails with the application's error.
#[cairn::workflow]
async fn declined(order: u32) -> Result<u32, ShopError> {
    price(order).await?;
    Err(ShopError::Declined(order))
}

/// Waits for a message that never comes (until cancelled).
#[cairn::workflow]
async fn waiting() -> Result<Option<String>, cairn::Error> {
    cairn::recv("never", Duration::from_secs(600)).await
}

/// Receives one message on `order` and succeeds with it.
#[cairn::workflow]
async fn inbox() -> Result<Option<String>, cairn::Error> {
    cairn::recv("order", Duration::from_secs(600)).await
}

/// Fails its first attempt, succeeds on the second.
#[cairn::step(max_attempts = 3, interval_ms = 1)]
async fn flaky(key: String) -> Result<u32, ShopError> {
    if count(&key) == 1 {
        return Err(ShopError::Busy(key));
    }
    Ok(2)
}

/// A workflow whose step retried once.
#[cairn::workflow]
async fn retried(key: String) -> Result<u32, ShopError> {
    flaky(key).await
}

/// The child of `fulfil`.
#[cairn::workflow]
async fn ship(order: u32) -> Result<u32, ShopError> {
    price(order).await
}

/// A parent: a step, two children, an event.
#[cairn::workflow]
async fn fulfil(order: u32) -> Result<u32, ShopError> {
    let total = price(order).await?;
    let first = ship(order).await?;
    let second = ship(order + 1).await?;
    cairn::set_event("stage", &"shipped")
        .await
        .map_err(|e| ShopError::Busy(e.to_string()))?;
    Ok(total + first + second)
}

/// What the test's schedule would start (it is never due during the test).
#[cairn::workflow]
async fn report(at: chrono::DateTime<chrono::Utc>, label: String) -> Result<String, ShopError> {
    Ok(format!("{label} at {at}"))
}

/// The queue no process of the test serves: what is enqueued there stays ENQUEUED.
const UNSERVED: &str = "dash-unserved";

/// A database holding one workflow of each kind, the application that ran them, a client,
/// and a dashboard serving it.
struct Scene {
    app: Cairn,
    client: Client,
    server: AdminServer,
    backend: &'static str,
}

impl Scene {
    async fn build(db: &TestDb) -> Self {
        let app = db.builder("dashboard").launch().await.expect("launch");
        let client = Client::connect(&db.url).await.expect("connect a client");

        let ok = app
            .start_with(StartOptions::id("dash-ok"), checkout, 7)
            .await
            .unwrap();
        assert_eq!(ok.result().await.unwrap(), 70);

        let failed = app
            .start_with(StartOptions::id("dash-error"), declined, 8)
            .await
            .unwrap();
        assert!(failed.result().await.is_err());

        let cancelled = app
            .start_with(StartOptions::id("dash-cancelled"), waiting, ())
            .await
            .unwrap();
        assert!(client.cancel("dash-cancelled").await.unwrap());
        assert!(matches!(cancelled.result().await, Err(Error::Cancelled(_))));

        let key = format!("dash-flaky-{}", uuid::Uuid::new_v4());
        let retry = app
            .start_with(StartOptions::id("dash-retried"), retried, key.clone())
            .await
            .unwrap();
        assert_eq!(retry.result().await.unwrap(), 2);
        assert_eq!(common::counted(&key), 2, "the step ran twice");

        let parent = app
            .start_with(StartOptions::id("dash-parent"), fulfil, 1)
            .await
            .unwrap();
        assert_eq!(parent.result().await.unwrap(), 10 + 10 + 20);

        let inbox = app
            .start_with(StartOptions::id("dash-inbox"), inbox, ())
            .await
            .unwrap();
        client
            .send("dash-inbox", "note", &serde_json::json!({ "gift": true }))
            .await
            .unwrap();
        client.send("dash-inbox", "order", &"book").await.unwrap();
        assert_eq!(inbox.result().await.unwrap().as_deref(), Some("book"));

        for id in ["dash-queued-1", "dash-queued-2"] {
            client
                .enqueue_with(EnqueueOptions::default().with_id(id), UNSERVED, checkout, 9)
                .await
                .unwrap();
        }

        app.create_schedule(
            "dash-yearly",
            report,
            "0 0 1 1 *",
            "yearly".to_owned(),
            ScheduleOptions::default().timezone("Europe/Paris"),
        )
        .await
        .unwrap();

        let options = AdminOptions::default().addr("127.0.0.1:0".parse().unwrap());
        let server = cairn::admin::serve_dashboard(client.clone(), options)
            .await
            .expect("serve the dashboard");
        let backend = match db.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        };
        Self {
            app,
            client,
            server,
            backend,
        }
    }

    /// The dashboard's address, with a route (`#/queues`, …).
    fn url(&self, route: &str) -> String {
        format!("http://{}/{route}", self.server.local_addr())
    }

    /// Where the screenshot of `page` goes.
    fn screenshot(&self, page: &str) -> PathBuf {
        screenshot_dir().join(format!("{}-{page}.png", self.backend))
    }

    async fn close(self) {
        self.server.shutdown().await;
        self.client.close().await;
        self.app.shutdown().await.unwrap();
    }
}

/// The CSS selector of the workflows page's row for `id` in `status`.
fn row(id: &str, status: &str) -> String {
    format!(r#"tr[data-testid="workflow-row"][data-workflow-id="{id}"][data-status="{status}"]"#)
}

/// The workflows page lists every workflow with its status, a status filter and an id-prefix
/// filter narrow the list, the parent's page shows its steps as a timeline and links to its
/// children, a workflow's page lists the messages sent to it (received or waiting), and the
/// list updates itself while it is open.
async fn the_workflows_pages_show_real_workflows_their_steps_and_children(db: &TestDb) {
    let scene = Scene::build(db).await;
    let browser = Browser::open().await;

    browser.goto(&scene.url("")).await;
    let expected = [
        ("dash-ok", "SUCCESS"),
        ("dash-error", "ERROR"),
        ("dash-cancelled", "CANCELLED"),
        ("dash-retried", "SUCCESS"),
        ("dash-parent", "SUCCESS"),
        ("dash-parent-2", "SUCCESS"),
        ("dash-parent-3", "SUCCESS"),
        ("dash-inbox", "SUCCESS"),
        ("dash-queued-1", "ENQUEUED"),
        ("dash-queued-2", "ENQUEUED"),
    ];
    for (id, status) in expected {
        browser.wait(&row(id, status)).await;
    }
    let listed = browser
        .attributes(r#"[data-testid="workflow-row"]"#, "data-workflow-id")
        .await;
    assert_eq!(listed.len(), expected.len(), "{listed:?}");
    let position = |id: &str| listed.iter().position(|listed| listed == id);
    assert!(
        position("dash-queued-2") < position("dash-ok"),
        "newest first: {listed:?}"
    );
    browser
        .wait(&format!(
            r#"{} [data-testid="status-badge"][data-status="ERROR"]"#,
            row("dash-error", "ERROR")
        ))
        .await;
    browser.screenshot(&scene.screenshot("workflows")).await;

    // A status filter: only the failed workflow is left.
    browser
        .click(r#"[data-testid="status-filter"][data-status="ERROR"]"#)
        .await;
    browser
        .wait(r#"tbody[data-testid="workflow-rows"][data-query*="status=ERROR"]"#)
        .await;
    let statuses = browser
        .attributes(r#"[data-testid="workflow-row"]"#, "data-status")
        .await;
    assert_eq!(statuses, ["ERROR"]);
    browser
        .click(r#"[data-testid="status-filter"][data-status="ERROR"]"#)
        .await;

    // An id prefix: the parent and its children.
    let prefix = browser.wait(r#"[data-testid="filter-id-prefix"]"#).await;
    prefix.send_keys("dash-parent").await.unwrap();
    browser
        .wait(r#"tbody[data-testid="workflow-rows"][data-query*="id_prefix=dash-parent"]:not([data-query*="status="])"#)
        .await;
    let mut ids = browser
        .attributes(r#"[data-testid="workflow-row"]"#, "data-workflow-id")
        .await;
    ids.sort();
    assert_eq!(ids, ["dash-parent", "dash-parent-2", "dash-parent-3"]);
    browser
        .screenshot(&scene.screenshot("workflows-filtered"))
        .await;

    // The parent's page: a bar per step, links to both children.
    browser.click(&row("dash-parent", "SUCCESS")).await;
    browser
        .wait(r#"[data-testid="workflow-status"][data-status="SUCCESS"]"#)
        .await;
    browser
        .wait(r#"[data-testid="step-bar"][data-step-name*="price"]"#)
        .await;
    let bars = browser
        .attributes(r#"[data-testid="step-bar"]"#, "data-function-id")
        .await;
    assert!(bars.len() >= 3, "a bar per step and child start: {bars:?}");
    for child in ["dash-parent-2", "dash-parent-3"] {
        browser
            .wait(&format!(
                r#"a[data-testid="child-link"][data-workflow-id="{child}"]"#
            ))
            .await;
    }
    browser.wait(r#"[data-testid="event-row"]"#).await;
    let output = browser.text(r#"[data-testid="workflow-output"]"#).await;
    assert_eq!(output, "40");
    browser.screenshot(&scene.screenshot("workflow")).await;

    // A child link leads to the child's page, which links back to its parent.
    browser
        .click(r#"a[data-testid="child-link"][data-workflow-id="dash-parent-2"]"#)
        .await;
    let id = browser.text(r#"[data-testid="workflow-id"]"#).await;
    browser
        .wait(r##"a[data-testid="parent-link"][href="#/workflows/dash-parent"]"##)
        .await;
    assert_eq!(id, "dash-parent-2");

    // The failed workflow's page shows its error.
    browser.goto(&scene.url("#/workflows/dash-error")).await;
    let error = browser
        .text(r#"[data-testid="workflow-error-value"]"#)
        .await;
    assert!(error.contains("card declined for order 8"), "{error}");

    // The retried workflow's step shows once, successful.
    browser.goto(&scene.url("#/workflows/dash-retried")).await;
    browser
        .wait(r#"[data-testid="step-bar"][data-step-name*="flaky"][data-failed="false"]"#)
        .await;

    // The inbox's page: the message it received and the one still waiting.
    browser.goto(&scene.url("#/workflows/dash-inbox")).await;
    let received = r#"tr[data-testid="message-row"][data-consumed="true"]"#;
    let waiting = r#"tr[data-testid="message-row"][data-consumed="false"]"#;
    browser.wait(received).await;
    browser.wait(waiting).await;
    let consumed = browser
        .attributes(r#"[data-testid="message-row"]"#, "data-consumed")
        .await;
    assert_eq!(consumed.len(), 2, "{consumed:?}");
    let topic = browser
        .text(&format!(r#"{received} [data-testid="message-topic"]"#))
        .await;
    assert_eq!(topic, "order");
    let value = browser
        .text(&format!(r#"{received} [data-testid="message-value"]"#))
        .await;
    assert_eq!(value, r#""book""#);
    let state = browser
        .text(&format!(r#"{received} [data-testid="message-state"]"#))
        .await;
    assert_eq!(state, "CONSUMED");
    let topic = browser
        .text(&format!(r#"{waiting} [data-testid="message-topic"]"#))
        .await;
    assert_eq!(topic, "note");
    let value = browser
        .text(&format!(r#"{waiting} [data-testid="message-value"]"#))
        .await;
    let value: serde_json::Value = serde_json::from_str(&value).unwrap();
    assert_eq!(value, serde_json::json!({ "gift": true }));
    let state = browser
        .text(&format!(r#"{waiting} [data-testid="message-state"]"#))
        .await;
    assert_eq!(state, "WAITING");
    browser
        .screenshot(&scene.screenshot("workflow-messages"))
        .await;

    // The list updates itself: a workflow enqueued now shows up without a reload.
    browser.goto(&scene.url("#/workflows")).await;
    browser.wait(&row("dash-ok", "SUCCESS")).await;
    scene
        .client
        .enqueue_with(
            EnqueueOptions::default().with_id("dash-late"),
            UNSERVED,
            checkout,
            3,
        )
        .await
        .unwrap();
    browser.wait(&row("dash-late", "ENQUEUED")).await;

    browser.close().await;
    scene.close().await;
}

/// The queues page shows the unserved queue's depth; Cancel then Confirm on a queued
/// workflow's page cancels it (the client sees it CANCELLED) and the queue's depth drops on
/// the live-updating queues page; Resume runs it to completion; Fork from step 1 starts a
/// new workflow forked from the old one; a schedule pauses and resumes.
async fn actions_from_the_dashboard_take_effect_and_queues_show_their_depth(db: &TestDb) {
    let scene = Scene::build(db).await;
    let browser = Browser::open().await;

    let unserved = format!(r#"tr[data-testid="queue-row"][data-queue="{UNSERVED}"]"#);
    browser.goto(&scene.url("#/queues")).await;
    browser
        .wait(&format!(r#"{unserved}[data-enqueued="2"]"#))
        .await;
    let depth = browser
        .text(&format!(r#"{unserved} [data-testid="queue-enqueued"]"#))
        .await;
    assert_eq!(depth, "2");
    browser.wait(r#"[data-testid="sparkline"]"#).await;
    browser.screenshot(&scene.screenshot("queues")).await;

    browser.goto(&scene.url("#/workflows/dash-queued-1")).await;
    browser
        .wait(r#"[data-testid="workflow-status"][data-status="ENQUEUED"]"#)
        .await;
    browser
        .click(r#"button[data-testid="cancel-button"]:not([disabled])"#)
        .await;
    browser
        .click(r#"dialog[open] [data-testid="confirm-button"]"#)
        .await;
    browser
        .wait(r#"[data-testid="workflow-status"][data-status="CANCELLED"]"#)
        .await;
    browser
        .wait(r#"button[data-testid="cancel-button"][disabled]"#)
        .await;
    browser
        .screenshot(&scene.screenshot("workflow-cancelled"))
        .await;
    let status = scene.client.status("dash-queued-1").await.unwrap();
    assert_eq!(status.state, WorkflowState::Cancelled);
    let other = scene.client.status("dash-queued-2").await.unwrap();
    assert_eq!(
        other.state,
        WorkflowState::Enqueued,
        "only the one asked for"
    );

    browser.goto(&scene.url("#/queues")).await;
    browser
        .wait(&format!(r#"{unserved}[data-enqueued="1"]"#))
        .await;

    // Resume: the workflow goes to the internal queue, which the application serves.
    browser.goto(&scene.url("#/workflows/dash-queued-1")).await;
    browser
        .click(r#"button[data-testid="resume-button"]:not([disabled])"#)
        .await;
    browser
        .click(r#"dialog[open] [data-testid="confirm-button"]"#)
        .await;
    browser
        .wait(r#"[data-testid="workflow-status"][data-status="SUCCESS"]"#)
        .await;
    let output = browser.text(r#"[data-testid="workflow-output"]"#).await;
    assert_eq!(output, "90");

    // Fork from step 1: a new workflow, linked to the one it was forked from.
    browser.goto(&scene.url("#/workflows/dash-ok")).await;
    browser
        .wait(r#"[data-testid="workflow-status"][data-status="SUCCESS"]"#)
        .await;
    browser.click(r#"button[data-testid="fork-button"]"#).await;
    let step = browser
        .wait(r#"dialog[open] [data-testid="confirm-input"]"#)
        .await;
    assert_eq!(step.prop("value").await.unwrap().as_deref(), Some("1"));
    browser
        .click(r#"dialog[open] [data-testid="confirm-button"]"#)
        .await;
    browser
        .wait(r##"a[data-testid="forked-from-link"][href="#/workflows/dash-ok"]"##)
        .await;
    browser
        .wait(r#"[data-testid="workflow-status"][data-status="SUCCESS"]"#)
        .await;
    let forked = browser.text(r#"[data-testid="workflow-id"]"#).await;
    assert_ne!(forked, "dash-ok");
    let status = scene.client.status(&forked).await.unwrap();
    assert_eq!(status.forked_from.as_deref(), Some("dash-ok"));

    // A schedule pauses and resumes.
    let schedule = r#"tr[data-testid="schedule-row"][data-schedule="dash-yearly"]"#;
    browser.goto(&scene.url("#/schedules")).await;
    browser
        .click(&format!(
            r#"{schedule}[data-status="ACTIVE"] [data-testid="schedule-pause"]"#
        ))
        .await;
    browser
        .wait(&format!(r#"{schedule}[data-status="PAUSED"]"#))
        .await;
    let paused = scene.client.get_schedule("dash-yearly").await.unwrap();
    assert_eq!(paused.map(|s| s.status), Some(ScheduleStatus::Paused));
    browser.screenshot(&scene.screenshot("schedules")).await;
    browser
        .click(&format!(r#"{schedule} [data-testid="schedule-resume"]"#))
        .await;
    browser
        .wait(&format!(r#"{schedule}[data-status="ACTIVE"]"#))
        .await;
    let active = scene.client.get_schedule("dash-yearly").await.unwrap();
    assert_eq!(active.map(|s| s.status), Some(ScheduleStatus::Active));

    browser.close().await;
    scene.close().await;
}

both_backends!(
    the_workflows_pages_show_real_workflows_their_steps_and_children,
    actions_from_the_dashboard_take_effect_and_queues_show_their_depth,
);
