//! The admin HTTP server: the dashboard's JSON API over real workflows, the bearer-token
//! rule, and DBOS's admin endpoints — each on SQLite and on Postgres.
#![cfg(feature = "admin")]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use cairn::admin::{AdminOptions, serve_dashboard};
use cairn::{Cairn, Client, Error, StartOptions, WorkflowState};
use common::TestDb;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ── A small HTTP/1.1 client ─────────────────────────────────────────────────────────────

/// An HTTP response.
struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

/// Send one request (a new connection each time) and read the whole response.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = body.unwrap_or("");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let raw = String::from_utf8(raw).expect("UTF-8");
    let (head, rest) = raw.split_once("\r\n\r\n").expect("a header block");
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    let chunked = headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        unchunk(rest)
    } else {
        rest.to_owned()
    };
    Reply {
        status,
        headers: headers.to_owned(),
        body,
    }
}

/// Decode a chunked body.
fn unchunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    body
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    http(addr, "GET", path, None, None).await
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> Reply {
    http(addr, "POST", path, None, Some(body)).await
}

/// A loopback address with a free port.
fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

// ── Workflows ───────────────────────────────────────────────────────────────────────────

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum ReportError {
    #[error("report {0} is broken")]
    Broken(u32),
}

#[cairn::step]
async fn admin_add_one(n: u32) -> Result<u32, ReportError> {
    Ok(n + 1)
}

/// Succeeds, with a step and an event.
#[cairn::workflow]
async fn admin_report(n: u32) -> Result<u32, ReportError> {
    let m = admin_add_one(n).await?;
    cairn::set_event("stage", &"done").await.ok();
    Ok(m)
}

/// Fails.
#[cairn::workflow]
async fn admin_broken(n: u32) -> Result<u32, ReportError> {
    Err(ReportError::Broken(n))
}

/// Starts `admin_report` as its child, sets an event and writes a stream.
#[cairn::workflow]
async fn admin_parent(n: u32) -> Result<u32, ReportError> {
    let child = admin_report(n).await?;
    cairn::set_event("child", &child).await.ok();
    cairn::write_stream("progress", &child).await.ok();
    cairn::close_stream("progress").await.ok();
    Ok(child * 10)
}

/// Waits for a message `go`, then succeeds with it.
#[cairn::workflow]
async fn admin_waiter() -> Result<String, cairn::Error> {
    let go: Option<String> = cairn::recv("go", Duration::from_secs(600)).await?;
    Ok(go.unwrap_or_default())
}

/// Announces that it runs at the gate `gate`, then waits for a message `go`.
#[cairn::workflow]
async fn admin_gated(gate: String) -> Result<String, cairn::Error> {
    common::reached(&gate);
    let go: Option<String> = cairn::recv("go", Duration::from_secs(600)).await?;
    Ok(go.unwrap_or_default())
}

/// A scheduled workflow (never due in a test).
#[cairn::workflow]
async fn admin_tick(_at: chrono::DateTime<chrono::Utc>, _context: ()) -> Result<(), cairn::Error> {
    Ok(())
}

/// An application on `db` (optionally with options of its own).
async fn launch(db: &TestDb) -> Cairn {
    db.builder("admin-test").launch().await.expect("launch")
}

/// A dashboard over the application's database.
async fn dashboard(app: &Cairn) -> cairn::admin::AdminServer {
    serve_dashboard((**app).clone(), AdminOptions::default().addr(any_port()))
        .await
        .expect("serve the dashboard")
}

/// Ids of the listed workflows.
fn ids(page: &Value) -> Vec<String> {
    page["workflows"]
        .as_array()
        .expect("a workflows array")
        .iter()
        .map(|w| w["workflow_id"].as_str().expect("an id").to_owned())
        .collect()
}

// ── Tests ───────────────────────────────────────────────────────────────────────────────

/// The health endpoint names the backend, and the dashboard's page and assets are served
/// with their content types; an unknown path is a JSON 404.
async fn health_names_the_backend_and_the_dashboard_is_served(db: &TestDb) {
    let app = launch(db).await;
    let server = dashboard(&app).await;
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);

    let health = get(addr, "/api/health").await;
    assert_eq!(health.status, 200, "{}", health.body);
    let backend = match db.backend {
        common::Backend::Sqlite => "sqlite",
        common::Backend::Postgres => "postgres",
    };
    assert_eq!(health.json()["ok"], json!(true));
    assert_eq!(health.json()["backend"], json!(backend));

    let page = get(addr, "/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let script = get(addr, "/assets/app.js").await;
    assert_eq!(script.status, 200);
    assert!(
        script
            .header("content-type")
            .unwrap()
            .contains("javascript")
    );
    let css = get(addr, "/assets/app.css").await;
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
    let missing = get(addr, "/nowhere").await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].is_string());

    server.shutdown().await;
    app.shutdown().await.unwrap();
}

/// The list answers real workflows (succeeded, failed, cancelled, a child), newest first,
/// filtered by status, name, id prefix and parent, paged with `has_more`, and without inputs
/// or outputs; bad parameters are 400 with an error.
async fn the_list_filters_and_pages_real_workflows(db: &TestDb) {
    let app = launch(db).await;
    for n in 0..3 {
        let id = format!("ok-{n}");
        let handle = app
            .start_with(StartOptions::id(&id), admin_report, n)
            .await
            .unwrap();
        handle.result().await.unwrap();
    }
    let failed = app
        .start_with(StartOptions::id("failed"), admin_broken, 7)
        .await
        .unwrap();
    assert!(failed.result().await.is_err());
    let waiting = app
        .start_with(StartOptions::id("cancelled"), admin_waiter, ())
        .await
        .unwrap();
    assert!(app.cancel("cancelled").await.unwrap());
    assert!(matches!(waiting.result().await, Err(Error::Cancelled(_))));
    let parent = app
        .start_with(StartOptions::id("parent"), admin_parent, 1)
        .await
        .unwrap();
    assert_eq!(parent.result().await.unwrap(), 20);

    let server = dashboard(&app).await;
    let addr = server.local_addr();

    let all = get(addr, "/api/workflows").await;
    assert_eq!(all.status, 200, "{}", all.body);
    let all = all.json();
    assert_eq!(all["limit"], json!(50));
    assert_eq!(all["offset"], json!(0));
    assert_eq!(all["has_more"], json!(false));
    let listed = ids(&all);
    assert_eq!(listed.len(), 7, "{listed:?}");
    assert_eq!(listed[listed.len() - 1], "ok-0", "newest first: {listed:?}");
    let first = &all["workflows"][listed.len() - 1];
    assert_eq!(first["status"], json!("SUCCESS"));
    assert_eq!(first["name"], json!("admin_report"));
    assert!(first["created_at"].is_i64());
    assert!(first["duration_ms"].is_i64());
    assert!(first.get("input").is_none() && first.get("output").is_none());

    let page = get(addr, "/api/workflows?status=ERROR,CANCELLED&order=asc")
        .await
        .json();
    assert_eq!(ids(&page), ["failed", "cancelled"]);
    let page = get(
        addr,
        "/api/workflows?status=success&name=admin_report&order=asc",
    )
    .await
    .json();
    assert_eq!(ids(&page), ["ok-0", "ok-1", "ok-2", "parent-1"]);
    let page = get(addr, "/api/workflows?id_prefix=ok-&limit=2&order=asc")
        .await
        .json();
    assert_eq!(ids(&page), ["ok-0", "ok-1"]);
    assert_eq!(page["has_more"], json!(true));
    let page = get(
        addr,
        "/api/workflows?id_prefix=ok-&limit=2&offset=2&order=asc",
    )
    .await
    .json();
    assert_eq!(ids(&page), ["ok-2"]);
    assert_eq!(page["has_more"], json!(false));
    let page = get(addr, "/api/workflows?parent=parent").await.json();
    assert_eq!(ids(&page), ["parent-1"]);
    let page = get(addr, "/api/workflows?created_after=0&created_before=1")
        .await
        .json();
    assert_eq!(ids(&page), Vec::<String>::new());

    for bad in [
        "/api/workflows?status=SLEEPING",
        "/api/workflows?limit=lots",
        "/api/workflows?limit=100000",
        "/api/workflows?created_after=yesterday",
        "/api/workflows?order=sideways",
    ] {
        let reply = get(addr, bad).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
        assert!(reply.json()["error"].is_string(), "{bad}");
    }

    server.shutdown().await;
    app.shutdown().await.unwrap();
}

/// A workflow's page has its input, output, error, children, events and event history, the
/// messages sent to it (received or waiting, an undecodable one with its reason), and its
/// steps (with the child's start); an unknown id is 404.
async fn a_workflow_page_has_its_children_events_and_steps(db: &TestDb) {
    let app = launch(db).await;
    let parent = app
        .start_with(StartOptions::id("parent"), admin_parent, 4)
        .await
        .unwrap();
    assert_eq!(parent.result().await.unwrap(), 50);
    let failed = app
        .start_with(StartOptions::id("failed"), admin_broken, 3)
        .await
        .unwrap();
    assert!(failed.result().await.is_err());
    let inbox = app
        .start_with(StartOptions::id("inbox"), admin_waiter, ())
        .await
        .unwrap();
    app.send("inbox", None, &json!({ "later": true }))
        .await
        .unwrap();
    db.execute(
        "INSERT INTO notifications (destination_uuid, topic, message, message_uuid, \
             serialization) VALUES ('inbox', 'pickled', 'gASVBQAAAAAAAACMAXiULg==', \
             'pickled-1', 'py_pickle')",
    )
    .await;
    app.send("inbox", "go", &"hello").await.unwrap();
    assert_eq!(inbox.result().await.unwrap(), "hello");
    let server = dashboard(&app).await;
    let addr = server.local_addr();

    let page = get(addr, "/api/workflows/inbox").await.json();
    let messages = page["messages"].as_array().expect("a messages array");
    assert_eq!(messages.len(), 3, "{page}");
    let on = |topic: Value| {
        messages
            .iter()
            .find(|m| m["topic"] == topic)
            .unwrap_or_else(|| panic!("a message on {topic}: {page}"))
    };
    let received = on(json!("go"));
    assert_eq!(received["value"], json!("hello"));
    assert_eq!(received["consumed"], json!(true));
    assert_eq!(received["decode_error"], Value::Null);
    assert!(received["message_id"].is_string() && received["created_at"].is_i64());
    let waiting = on(Value::Null);
    assert_eq!(waiting["value"], json!({ "later": true }));
    assert_eq!(waiting["consumed"], json!(false));
    let pickled = on(json!("pickled"));
    assert_eq!(pickled["message_id"], json!("pickled-1"));
    assert_eq!(pickled["value"], Value::Null);
    assert_eq!(pickled["consumed"], json!(false));
    assert!(
        pickled["decode_error"]
            .as_str()
            .unwrap()
            .contains("py_pickle"),
        "{pickled}"
    );
    let idle = get(addr, "/api/workflows/failed").await.json();
    assert_eq!(idle["messages"], json!([]));

    let reply = get(addr, "/api/workflows/parent").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let page = reply.json();
    assert_eq!(page["status"], json!("SUCCESS"));
    assert_eq!(page["input"], json!([4]));
    assert_eq!(page["output"], json!(50));
    assert_eq!(page["error"], Value::Null);
    let children = page["children"].as_array().unwrap();
    assert_eq!(children.len(), 1);
    assert_eq!(children[0]["workflow_id"], json!("parent-1"));
    assert_eq!(children[0]["parent_workflow_id"], json!("parent"));
    assert_eq!(page["events"], json!([{ "key": "child", "value": 5 }]));
    assert_eq!(page["event_history"][0]["key"], json!("child"));
    assert_eq!(page["event_history"][0]["value"], json!(5));
    assert_eq!(
        page["streams"],
        json!([{ "key": "progress", "values": 1, "closed": true }])
    );

    let failed = get(addr, "/api/workflows/failed").await.json();
    assert_eq!(failed["status"], json!("ERROR"));
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("report 3 is broken"),
        "{failed}"
    );

    let steps = get(addr, "/api/workflows/parent/steps").await;
    assert_eq!(steps.status, 200, "{}", steps.body);
    let steps = steps.json();
    let steps = steps.as_array().unwrap();
    assert_eq!(steps[0]["function_id"], json!(1));
    assert_eq!(steps[0]["child_workflow_id"], json!("parent-1"));
    let child_steps = get(addr, "/api/workflows/parent-1/steps").await.json();
    assert_eq!(child_steps[0]["function_name"], json!("admin_add_one"));
    assert_eq!(child_steps[0]["output"], json!(5));
    assert_eq!(child_steps[0]["error"], Value::Null);
    assert!(child_steps[0]["started_at"].is_i64());

    for path in ["/api/workflows/nobody", "/api/workflows/nobody/steps"] {
        let reply = get(addr, path).await;
        assert_eq!(reply.status, 404, "{path}: {}", reply.body);
        assert!(reply.json()["error"].is_string());
    }
    let reply = post(addr, "/api/workflows/nobody/cancel", "").await;
    assert_eq!(reply.status, 404);

    server.shutdown().await;
    app.shutdown().await.unwrap();
}

/// A cancel through the API takes effect (the waiting workflow ends `CANCELLED`), a second
/// cancel answers `ok: false`, and a resume answers the id.
async fn a_cancel_through_the_api_takes_effect(db: &TestDb) {
    let app = launch(db).await;
    let handle = app
        .start_with(StartOptions::id("waiter"), admin_waiter, ())
        .await
        .unwrap();
    let server = dashboard(&app).await;
    let addr = server.local_addr();

    let reply = post(addr, "/api/workflows/waiter/cancel", "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json(), json!({ "ok": true }));
    assert!(matches!(handle.result().await, Err(Error::Cancelled(_))));
    assert_eq!(
        app.status("waiter").await.unwrap().state,
        WorkflowState::Cancelled
    );
    let again = post(addr, "/api/workflows/waiter/cancel", "").await.json();
    assert_eq!(again, json!({ "ok": false }));

    let resumed = post(addr, "/api/workflows/waiter/resume", "").await;
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    assert_eq!(resumed.json(), json!({ "workflow_id": "waiter" }));
    app.send("waiter", "go", &"resumed").await.unwrap();
    let resumed = app.retrieve::<String>("waiter").await.unwrap();
    assert_eq!(resumed.result().await.unwrap(), "resumed");

    server.shutdown().await;
    app.shutdown().await.unwrap();
}

/// A fork through the API answers the new id, and the fork runs to its result.
async fn a_fork_through_the_api_runs_under_its_new_id(db: &TestDb) {
    let app = launch(db).await;
    let original = app
        .start_with(StartOptions::id("original"), admin_report, 41)
        .await
        .unwrap();
    assert_eq!(original.result().await.unwrap(), 42);
    let server = dashboard(&app).await;
    let addr = server.local_addr();

    let reply = post(
        addr,
        "/api/workflows/original/fork",
        r#"{"step": 2, "new_id": "forked"}"#,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json(), json!({ "workflow_id": "forked" }));
    let fork = app.retrieve::<u32>("forked").await.unwrap();
    assert_eq!(fork.result().await.unwrap(), 42);
    assert_eq!(
        app.status("forked").await.unwrap().forked_from.as_deref(),
        Some("original")
    );

    let generated = post(addr, "/api/workflows/original/fork", r#"{"step": 1}"#)
        .await
        .json();
    let generated = generated["workflow_id"].as_str().unwrap().to_owned();
    assert_ne!(generated, "original");
    let fork = app.retrieve::<u32>(&generated).await.unwrap();
    assert_eq!(fork.result().await.unwrap(), 42);

    for body in ["", "{}", r#"{"step": "two"}"#] {
        let reply = post(addr, "/api/workflows/original/fork", body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
    }
    let reply = post(addr, "/api/workflows/nobody/fork", r#"{"step": 1}"#).await;
    assert_eq!(reply.status, 404, "{}", reply.body);

    server.shutdown().await;
    app.shutdown().await.unwrap();
}

/// Queue statistics count what waits on each queue and what finished in the last minutes,
/// and list defined queues with their limits; schedules are listed and can be paused through the API.
async fn queues_and_schedules_are_listed(db: &TestDb) {
    let app = db
        .builder("admin-test")
        .queue(cairn::Queue::new("served").concurrency(3))
        .launch()
        .await
        .expect("launch");
    let client = Client::connect(&db.url).await.unwrap();
    for _ in 0..2 {
        client
            .enqueue("nobody-serves", admin_report, 1)
            .await
            .unwrap();
    }
    for n in 0..3 {
        let handle = app.enqueue("served", admin_report, n).await.unwrap();
        handle.result().await.unwrap();
    }
    let later = cairn::EnqueueOptions::default().with_delay(Duration::from_secs(3600));
    client
        .enqueue_with(later, "served", admin_report, 9)
        .await
        .unwrap();
    // A workflow running on the queue: it waits for a message until the test ends.
    let gate = format!("admin-running-{}", uuid::Uuid::new_v4());
    app.enqueue("served", admin_gated, gate.clone())
        .await
        .unwrap();
    common::wait_reached(&gate).await;
    let server = dashboard(&app).await;
    let addr = server.local_addr();

    let reply = get(addr, "/api/queues").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let queues = reply.json();
    let find = |name: &str| {
        queues
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == json!(name))
            .cloned()
            .unwrap_or_else(|| panic!("queue {name} in {queues}"))
    };
    let idle = find("nobody-serves");
    assert_eq!(idle["enqueued"], json!(2));
    assert_eq!(idle["running"], json!(0));
    assert_eq!(idle["finished_per_minute"].as_array().unwrap().len(), 10);
    assert_eq!(idle["definition"], Value::Null);
    let served = find("served");
    assert_eq!(served["definition"]["concurrency"], json!(3));
    assert_eq!(served["enqueued"], json!(0));
    assert_eq!(served["delayed"], json!(1));
    assert_eq!(served["running"], json!(1));
    let finished: u64 = served["finished_per_minute"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(finished, 3, "{served}");

    let stats = client.queue_stats().await.unwrap();
    let idle = stats.iter().find(|q| q.name == "nobody-serves").unwrap();
    assert_eq!((idle.enqueued, idle.delayed, idle.running), (2, 0, 0));

    let schedules = get(addr, "/api/schedules").await;
    assert_eq!(schedules.status, 200, "{}", schedules.body);
    assert_eq!(schedules.json(), json!([]));
    let missing = post(addr, "/api/schedules/nightly/pause", "").await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    let yearly = cairn::ScheduleOptions::default().timezone("Europe/Berlin");
    app.create_schedule("yearly", admin_tick, "0 0 1 1 *", (), yearly)
        .await
        .unwrap();
    let listed = get(addr, "/api/schedules").await.json();
    assert_eq!(listed[0]["name"], json!("yearly"));
    assert_eq!(listed[0]["workflow_name"], json!("admin_tick"));
    assert_eq!(listed[0]["status"], json!("ACTIVE"));
    assert_eq!(listed[0]["timezone"], json!("Europe/Berlin"));
    assert!(listed[0]["next_fire_at"].as_i64().unwrap() > 0);
    let paused = post(addr, "/api/schedules/yearly/pause", "").await;
    assert_eq!(paused.json(), json!({ "ok": true }));
    let listed = get(addr, "/api/schedules").await.json();
    assert_eq!(listed[0]["status"], json!("PAUSED"));
    assert_eq!(listed[0]["next_fire_at"], Value::Null);
    let triggered = post(addr, "/api/schedules/yearly/trigger", "").await.json();
    let tick = triggered["workflow_id"].as_str().unwrap().to_owned();
    assert!(tick.starts_with("sched-yearly-"), "{tick}");
    app.retrieve::<()>(&tick)
        .await
        .unwrap()
        .result()
        .await
        .unwrap();
    let resumed = post(addr, "/api/schedules/yearly/resume", "").await;
    assert_eq!(resumed.json(), json!({ "ok": true }));

    server.shutdown().await;
    client.close().await;
    app.shutdown().await.unwrap();
}

/// With a token, an API request without it (or with a wrong one) gets 401 and changes
/// nothing, and one with it gets through. The dashboard's page and assets (which hold no
/// data) load without it: a browser sends no header for them, and the page sends the token.
async fn with_a_token_requests_without_it_get_401_and_change_nothing(db: &TestDb) {
    let app = launch(db).await;
    let handle = app
        .start_with(StartOptions::id("waiter"), admin_waiter, ())
        .await
        .unwrap();
    let options = AdminOptions::default().addr(any_port()).token("s3cret");
    let server = serve_dashboard((*app).clone(), options).await.unwrap();
    let addr = server.local_addr();

    for path in ["/", "/assets/app.js"] {
        assert_eq!(
            http(addr, "GET", path, None, None).await.status,
            200,
            "{path}"
        );
    }
    for (method, path) in [
        ("GET", "/api/health"),
        ("GET", "/api/workflows"),
        ("POST", "/api/workflows/waiter/cancel"),
    ] {
        for token in [None, Some("wrong"), Some("")] {
            let reply = http(addr, method, path, token, None).await;
            assert_eq!(reply.status, 401, "{method} {path} with {token:?}");
        }
    }
    assert_eq!(
        app.status("waiter").await.unwrap().state,
        WorkflowState::Pending
    );

    let reply = http(addr, "GET", "/api/health", Some("s3cret"), None).await;
    assert_eq!(reply.status, 200);
    let reply = http(addr, "GET", "/", Some("s3cret"), None).await;
    assert_eq!(reply.status, 200);
    let reply = http(
        addr,
        "POST",
        "/api/workflows/waiter/cancel",
        Some("s3cret"),
        None,
    )
    .await;
    assert_eq!(reply.json(), json!({ "ok": true }));
    assert!(matches!(handle.result().await, Err(Error::Cancelled(_))));

    server.shutdown().await;
    app.shutdown().await.unwrap();
}

/// Without a token, a request for another host name (a rebound DNS name) and a change from
/// another origin (a forged cross-site request) get 403 and change nothing; the dashboard's
/// own origin and loopback names get through.
async fn cross_site_and_rebound_requests_are_refused(db: &TestDb) {
    let app = launch(db).await;
    let handle = app
        .start_with(StartOptions::id("waiter"), admin_waiter, ())
        .await
        .unwrap();
    let server = dashboard(&app).await;
    let addr = server.local_addr();
    let raw = |request: String| async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        reply
    };
    let rebound = raw(format!(
        "GET /api/workflows HTTP/1.1\r\nHost: evil.example:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    ))
    .await;
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
    let forged = raw(format!(
        "POST /api/workflows/waiter/cancel HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert!(forged.starts_with("HTTP/1.1 403"), "{forged}");
    assert_eq!(
        app.status("waiter").await.unwrap().state,
        WorkflowState::Pending
    );
    let named = raw(format!(
        "GET /api/health HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    ))
    .await;
    assert!(named.starts_with("HTTP/1.1 200"), "{named}");
    let own = raw(format!(
        "POST /api/workflows/waiter/cancel HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert!(own.starts_with("HTTP/1.1 200"), "{own}");
    assert!(matches!(handle.result().await, Err(Error::Cancelled(_))));
    server.shutdown().await;
    app.shutdown().await.unwrap();
}

/// A client that stalls in the middle of a request does not hold the server's shutdown (nor
/// the application's) for longer than the grace period.
async fn a_stalled_client_does_not_hold_shutdown(db: &TestDb) {
    let app = db
        .builder("admin-test")
        .admin_server(any_port())
        .launch()
        .await
        .expect("launch");
    let addr = app.admin_addr().unwrap();
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), app.shutdown())
        .await
        .expect("shutdown within the grace period")
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    drop((stalled, idle));
}

/// Binding to an address other hosts can reach without a token is refused, by
/// `serve_dashboard` and by `launch`; with a token it is allowed.
async fn a_non_loopback_address_without_a_token_is_refused(db: &TestDb) {
    let app = launch(db).await;
    let open: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let refused = serve_dashboard((*app).clone(), AdminOptions::default().addr(open)).await;
    assert!(
        matches!(
            refused,
            Err(Error::InvalidArgument {
                argument: "addr",
                ..
            })
        ),
        "{refused:?}"
    );
    let launched = db.builder("admin-open").admin_server(open).launch().await;
    assert!(
        matches!(
            launched,
            Err(Error::InvalidArgument {
                argument: "addr",
                ..
            })
        ),
        "{:?}",
        launched.err()
    );
    let with_token = AdminOptions::default().addr(open).token("t");
    let server = serve_dashboard((*app).clone(), with_token).await.unwrap();
    let port = server.local_addr().port();
    let local: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(get(local, "/api/health").await.status, 401);
    server.shutdown().await;
    app.shutdown().await.unwrap();
}

/// A launched application's admin server answers DBOS's health check and queue metadata,
/// and `POST /dbos-workflow-recovery` recovers another executor's `PENDING` workflow here,
/// which then finishes; the server stops with the application.
async fn dbos_recovery_recovers_a_given_executors_pending_workflow(db: &TestDb) {
    let first = db
        .builder("admin-recovery")
        .executor_id("exec-a")
        .app_version("v1")
        .launch()
        .await
        .expect("launch the first executor");
    first
        .start_with(StartOptions::id("stranded"), admin_waiter, ())
        .await
        .unwrap();
    first.shutdown().await.unwrap();

    let second = db
        .builder("admin-recovery")
        .executor_id("exec-b")
        .app_version("v1")
        .takeover(false)
        .queue(
            cairn::Queue::new("reports")
                .concurrency(2)
                .worker_concurrency(1),
        )
        .admin_server(any_port())
        .launch()
        .await
        .expect("launch the second executor");
    let addr = second.admin_addr().expect("an admin server");
    assert_eq!(
        second.status("stranded").await.unwrap().state,
        WorkflowState::Pending
    );

    let health = get(addr, "/dbos-healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "healthy"));
    let metadata = get(addr, "/dbos-workflow-queues-metadata").await.json();
    let reports = metadata
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == json!("reports"))
        .cloned()
        .unwrap_or_else(|| panic!("reports in {metadata}"));
    assert_eq!(reports["concurrency"], json!(2));
    assert_eq!(reports["workerConcurrency"], json!(1));
    assert!(reports.get("rateLimit").is_none());

    let reply = post(addr, "/dbos-workflow-recovery", r#"["exec-a"]"#).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json(), json!(["stranded"]));
    second.send("stranded", "go", &"recovered").await.unwrap();
    let handle = second.retrieve::<String>("stranded").await.unwrap();
    assert_eq!(handle.result().await.unwrap(), "recovered");

    let workflow = get(addr, "/workflows/stranded").await.json();
    assert_eq!(workflow["status"], json!("SUCCESS"));
    assert_eq!(workflow["output"], json!("recovered"));
    let steps = get(addr, "/workflows/stranded/steps").await.json();
    assert_eq!(steps[0]["function_name"], json!("DBOS.recv"));
    let listed = post(addr, "/workflows", r#"{"workflow_ids": ["stranded"]}"#)
        .await
        .json();
    assert_eq!(listed[0]["workflow_id"], json!("stranded"));
    assert_eq!(get(addr, "/workflows/nobody").await.status, 404);
    assert_eq!(get(addr, "/deactivate").await.body, "deactivated");
    assert_eq!(
        get(addr, "/api/health").await.json()["executor_id"],
        json!("exec-b")
    );

    second.shutdown().await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

both_backends!(
    health_names_the_backend_and_the_dashboard_is_served,
    the_list_filters_and_pages_real_workflows,
    a_workflow_page_has_its_children_events_and_steps,
    a_cancel_through_the_api_takes_effect,
    a_fork_through_the_api_runs_under_its_new_id,
    queues_and_schedules_are_listed,
    with_a_token_requests_without_it_get_401_and_change_nothing,
    a_non_loopback_address_without_a_token_is_refused,
    cross_site_and_rebound_requests_are_refused,
    a_stalled_client_does_not_hold_shutdown,
    dbos_recovery_recovers_a_given_executors_pending_workflow,
);
