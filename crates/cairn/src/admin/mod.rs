//! The admin HTTP server and web dashboard (cargo feature `admin`, off by default).
//!
//! One axum server serves:
//!
//! - **The dashboard** at `/`: plain HTML, JavaScript and CSS compiled into the binary (no
//!   build step, no network access at run time), over the JSON API below.
//! - **The dashboard's JSON API** under `/api/`: `GET /api/health`; `GET /api/workflows`
//!   (filters `status` (comma-separated), `name`, `queue`, `executor`, `version`,
//!   `id_prefix`, `parent`, `created_after`/`created_before` (epoch ms), paging `limit`
//!   (default 50, at most 1000), `offset`, `order` (`desc`, the default, or `asc`); answers
//!   `{"workflows": [...], "limit", "offset", "has_more"}`); `GET /api/workflows/{id}` (with
//!   input, output, error, children, events, event history and streams (`{"key", "values",
//!   "closed"}`)); `GET
//!   /api/workflows/{id}/steps`; `POST /api/workflows/{id}/cancel`, `…/resume`, `…/fork`
//!   (body `{"step": n, "new_id"?, "app_version"?}`); `GET /api/queues`
//!   ([`QueueStats`](crate::QueueStats)); `GET /api/schedules`; `POST
//!   /api/schedules/{name}/pause`, `…/resume`, `…/trigger`. Times are epoch milliseconds;
//!   errors are `{"error": "…"}` with 400 (bad input), 404 (unknown id) or 500.
//! - **DBOS's admin endpoints**, when the server belongs to a launched application
//!   ([`CairnBuilder::admin_server`](crate::CairnBuilder::admin_server)), with the paths and
//!   shapes of DBOS Python's admin server, so DBOS tooling works against a Cairn process:
//!   `GET /dbos-healthz`; `POST /dbos-workflow-recovery` (a JSON list of executor ids: their
//!   `PENDING` workflows of this application version are recovered here; answers their
//!   ids); `GET /deactivate` (also `/dbos-deactivate`: this process stops firing schedules,
//!   as DBOS's deactivation stops its schedulers; it keeps claiming queued work and finishes
//!   what runs — shut the process down to stop that); `GET /dbos-workflow-queues-metadata`;
//!   `POST /workflows` and `POST /queues` (listing with DBOS's filters), `GET
//!   /workflows/{id}`, `GET /workflows/{id}/steps`, `POST /workflows/{id}/cancel`,
//!   `…/resume`, `…/restart`, `…/fork`.
//!
//! Everything goes through the [`Client`] management API: the server never writes SQL.
//!
//! # Security
//!
//! The server binds to `127.0.0.1:3001` unless told otherwise. Binding to any address that
//! is not loopback requires a bearer token ([`AdminOptions::token`]): without one, starting
//! the server fails with [`Error::InvalidArgument`]. With a token, every API request must
//! carry `Authorization: Bearer <token>`; one without it gets 401 and changes nothing. Only
//! the dashboard's page and its embedded assets (which hold no data) load without it: open
//! `http://host:3001/?token=<token>` once, and the page keeps the token for the browser tab
//! and sends it with every API call. Without a token, the server answers only requests addressed to a loopback host
//! name (`localhost`, `127.0.0.1`, `[::1]`), so a web page cannot reach it through a
//! rebound DNS name; and a request that changes something (`POST`) carrying an `Origin`
//! other than the server's own gets 403, so a web page cannot forge one.
//!
//! # Example
//!
//! ```no_run
//! use cairn::admin::{AdminOptions, serve_dashboard};
//!
//! # async fn demo() -> cairn::Result<()> {
//! // A dashboard over a system database, without running workflows.
//! let client = cairn::Client::connect("sqlite:///shop.sqlite").await?;
//! let server = serve_dashboard(client, AdminOptions::default()).await?;
//! println!("dashboard at http://{}/", server.local_addr());
//! # server.shutdown().await;
//!
//! // Or inside an application, with DBOS's admin endpoints too, reachable from other hosts.
//! let options = AdminOptions::default()
//!     .addr("0.0.0.0:3001".parse().expect("an address"))
//!     .token(std::env::var("ADMIN_TOKEN").unwrap_or_default());
//! let app = cairn::Cairn::builder("shop").admin_options(options).launch().await?;
//! println!("admin server at {:?}", app.admin_addr());
//! app.shutdown().await
//! # }
//! ```

mod api;
mod dbos;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::oneshot;

use crate::Client;
use crate::engine::runtime::Runtime;
use crate::error::{Error, Result};

/// The dashboard's page.
const INDEX_HTML: &str = include_str!("assets/index.html");
/// The dashboard's script.
const APP_JS: &str = include_str!("assets/app.js");
/// The dashboard's style sheet.
const APP_CSS: &str = include_str!("assets/app.css");

/// DBOS's admin port.
const DEFAULT_PORT: u16 = 3001;

/// How long a graceful shutdown waits for requests in progress.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How the admin server listens and who may use it. Every option has a default.
#[derive(Clone)]
#[must_use = "options do nothing until passed to serve_dashboard or CairnBuilder::admin_options"]
pub struct AdminOptions {
    addr: SocketAddr,
    token: Option<String>,
}

impl std::fmt::Debug for AdminOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminOptions")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Default for AdminOptions {
    fn default() -> Self {
        AdminOptions {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
            token: None,
        }
    }
}

impl AdminOptions {
    /// The address to listen on; port 0 picks a free port ([`AdminServer::local_addr`] says
    /// which). An address that is not loopback requires [`AdminOptions::token`]. Default:
    /// `127.0.0.1:3001` (DBOS's admin port).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Require `Authorization: Bearer <token>` on every request (401 otherwise). An empty
    /// token is no token. Default: none (allowed on loopback addresses only).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.token = (!token.is_empty()).then_some(token);
        self
    }

    /// Refuse an address reachable from other hosts without a token.
    pub(crate) fn check(&self) -> Result<()> {
        if self.token.is_none() && !self.addr.ip().is_loopback() {
            return Err(Error::InvalidArgument {
                argument: "addr",
                reason: format!(
                    "the admin server would listen on {}, which other hosts can reach, without \
                     a token; set AdminOptions::token (requests must then carry \
                     `Authorization: Bearer <token>`) or bind to 127.0.0.1",
                    self.addr
                ),
            });
        }
        Ok(())
    }
}

/// A running admin server. Dropping it stops it too (gracefully, without waiting).
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl AdminServer {
    /// The address the server listens on (with the port picked when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop accepting connections, let requests in progress finish (for up to 5 seconds;
    /// then their connections are closed), and return when the server has stopped.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serve the dashboard and its JSON API over `client`'s system database, without running
/// workflows (what `cairn dashboard` does). DBOS's admin endpoints, which act on a running
/// application, are served only by [`CairnBuilder::admin_server`](crate::CairnBuilder::admin_server).
/// Fails with [`Error::InvalidArgument`] for a non-loopback address without a token, and
/// with [`Error::Config`] when the address cannot be bound.
pub async fn serve_dashboard(client: Client, options: AdminOptions) -> Result<AdminServer> {
    start(client, options, None).await
}

/// What DBOS's admin endpoints need from a launched application.
pub(crate) struct AppHooks {
    /// The application's runtime (recovery, its queues).
    pub rt: Arc<Runtime>,
    /// Stops the scheduler task (deactivation).
    pub scheduler: tokio::task::AbortHandle,
}

/// The state every handler sees.
#[derive(Clone)]
pub(crate) struct AdminState {
    client: Client,
    app: Option<Arc<AppHooks>>,
    token: Option<Arc<str>>,
}

/// Start a server: the dashboard and its API, and DBOS's endpoints when `app` is given.
pub(crate) async fn start(
    client: Client,
    options: AdminOptions,
    app: Option<AppHooks>,
) -> Result<AdminServer> {
    options.check()?;
    let state = AdminState {
        client,
        app: app.map(Arc::new),
        token: options.token.map(Arc::from),
    };
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .map_err(|e| {
            Error::Config(format!(
                "cannot listen on {} for the admin server: {e}",
                options.addr
            ))
        })?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("cannot read the admin server's address: {e}")))?;
    let router = router(state);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
        if let Err(error) = serve.await {
            tracing::warn!(%error, "the admin server stopped");
        }
    });
    tracing::info!(addr = %local_addr, "admin server listening");
    Ok(AdminServer {
        local_addr,
        stop: Some(stop),
        task: Some(task),
    })
}

/// Every route, behind the token check.
fn router(state: AdminState) -> Router {
    let mut router = Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .merge(api::routes());
    if state.app.is_some() {
        router = router.merge(dbos::routes());
    }
    router
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// Let a request through only with the bearer token, when one is set; without a token, only
/// for a loopback host name (no DNS rebinding); and a change only from the page's own origin
/// (no cross-site request forgery).
async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if state.token.is_none() && host.is_some_and(|host| !loopback_host(host)) {
        return api::error(
            StatusCode::FORBIDDEN,
            "this admin server has no token and answers requests for a loopback host name only",
        );
    }
    let reads = matches!(request.method().as_str(), "GET" | "HEAD" | "OPTIONS");
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !reads && let Some(origin) = origin {
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        if host != Some(origin_host) {
            return api::error(
                StatusCode::FORBIDDEN,
                "a change must come from the dashboard's own origin",
            );
        }
    }
    // The page and its assets hold no data: a browser loads them without a header, and
    // the page then sends the token with every API call.
    let shell = reads && is_page_asset(request.uri().path());
    if let Some(token) = state.token.as_ref().filter(|_| !shell) {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|given| same_secret(given.as_bytes(), token.as_bytes())) {
            let mut response =
                api::error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"cairn\""),
            );
            return response;
        }
    }
    next.run(request).await
}

/// Whether `path` is the dashboard's page or one of its embedded assets.
fn is_page_asset(path: &str) -> bool {
    matches!(path, "/" | "/index.html") || path.starts_with("/assets/")
}

/// Whether a `Host` header names this machine: `localhost` or a loopback address, with or
/// without a port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Compare two secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A static file with its content type.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

async fn not_found() -> Response {
    api::error(StatusCode::NOT_FOUND, "no such page")
}
