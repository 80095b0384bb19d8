//! `dashboard`: the dashboard's workflows page, `GET /api/workflows` on Cairn's admin server
//! (`cairn::admin::serve_dashboard`), over the same 100,000 workflows as `list`: the latency
//! of one page as the browser sees it, HTTP included (a new loopback connection per call).
//!
//! Each measured call asks for the first page of 50 (the dashboard's default), newest first,
//! without inputs or outputs, in turn unfiltered and filtered on one status of `list`'s mix.

use std::net::SocketAddr;

use cairn::Client;
use cairn::admin::{AdminOptions, serve_dashboard};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::{Options, Workload};
use crate::database::BenchDatabase;
use crate::error::{BenchError, Context};
use crate::list;
use crate::report::{self, Report};

/// The pages asked for, in turn.
const PAGES: [&str; 4] = [
    "/api/workflows?limit=50",
    "/api/workflows?limit=50&status=ERROR",
    "/api/workflows?limit=50&status=ENQUEUED,PENDING",
    "/api/workflows?limit=50&status=SUCCESS&name=checkout",
];

/// Fill a fresh database with `list`'s rows, serve the dashboard over a standalone client,
/// and time `options.n` page requests.
pub async fn run(options: &Options, database: &BenchDatabase) -> Result<Report, BenchError> {
    let floor = list::prepare(options, database).await?;
    let client = Client::connect(&database.url())
        .await
        .context("connecting the client")?;
    let local: SocketAddr = ([127, 0, 0, 1], 0).into();
    let server = serve_dashboard(client.clone(), AdminOptions::default().addr(local))
        .await
        .context("serving the dashboard")?;
    let addr = server.local_addr();
    let measured =
        report::time_calls(options.workload.warm_up(), options.n, |k| page(addr, k)).await;
    server.shutdown().await;
    client.close().await;
    let measurement = measured?;
    Ok(Report::new(
        Workload::Dashboard,
        database.backend(),
        &measurement,
        floor,
    ))
}

/// Request `k`: the next page in turn, which must answer 200 with 50 workflows.
async fn page(addr: SocketAddr, k: usize) -> Result<(), BenchError> {
    let path = PAGES[k % PAGES.len()];
    let doing = format!("requesting {path}");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .context(doing.clone())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .context(doing.clone())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .context(doing.clone())?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(BenchError::new(
            doing,
            head.lines().next().unwrap_or("").to_owned(),
        ));
    }
    let listed = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|page| page["workflows"].as_array().map(Vec::len));
    if listed != Some(50) {
        return Err(BenchError::new(
            doing,
            format!("expected 50 workflows, got {listed:?}"),
        ));
    }
    Ok(())
}
