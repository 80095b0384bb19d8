//! The commit floor: what one durable single-row commit costs on the run's database, one
//! client at a time. A step cannot be cheaper than the commit that records it.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::database::{self, BenchDatabase};
use crate::error::{BenchError, Context};
use crate::report::median;

/// Inserts before timing starts (statement caches, file growth, connection warm-up).
const WARM_UP: usize = 20;

/// Timed inserts.
const SAMPLES: usize = 200;

/// How long the SQLite connection waits for Cairn's writer, as Cairn does.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The median latency of a single-row autocommit INSERT into a scratch table
/// `cairn_bench_floor`, created for the measurement and dropped after it.
pub async fn commit_latency(database: &BenchDatabase) -> Result<Duration, BenchError> {
    let mut samples = match database {
        BenchDatabase::Sqlite { path, .. } => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || sqlite_inserts(&path))
                .await
                .context("measuring the SQLite commit floor")??
        }
        BenchDatabase::Postgres { .. } => postgres_inserts(&database.url()).await?,
    };
    Ok(median(&mut samples))
}

/// Time single-row commits on the SQLite file, with the pragmas Cairn uses (WAL,
/// `synchronous = FULL`).
fn sqlite_inserts(path: &Path) -> Result<Vec<Duration>, BenchError> {
    let doing = "measuring the SQLite commit floor";
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .context(format!("opening {}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT).context(doing)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
        row.get::<_, String>(0)
    })
    .context(doing)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .context(doing)?;
    conn.execute_batch("CREATE TABLE cairn_bench_floor (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .context(doing)?;
    let mut insert = conn
        .prepare("INSERT INTO cairn_bench_floor (v) VALUES (?1)")
        .context(doing)?;
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..WARM_UP + SAMPLES {
        let started = Instant::now();
        insert.execute([format!("row {i}")]).context(doing)?;
        if i >= WARM_UP {
            samples.push(started.elapsed());
        }
    }
    drop(insert);
    conn.execute_batch("DROP TABLE cairn_bench_floor")
        .context(doing)?;
    Ok(samples)
}

/// Time single-row commits on the Postgres database, one prepared INSERT per round trip.
async fn postgres_inserts(url: &str) -> Result<Vec<Duration>, BenchError> {
    let doing = "measuring the Postgres commit floor";
    let client = database::connect(url).await?;
    client
        .batch_execute("CREATE TABLE cairn_bench_floor (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)")
        .await
        .context(doing)?;
    let insert = client
        .prepare("INSERT INTO cairn_bench_floor (v) VALUES ($1)")
        .await
        .context(doing)?;
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..WARM_UP + SAMPLES {
        let row = format!("row {i}");
        let started = Instant::now();
        client.execute(&insert, &[&row]).await.context(doing)?;
        if i >= WARM_UP {
            samples.push(started.elapsed());
        }
    }
    client
        .batch_execute("DROP TABLE cairn_bench_floor")
        .await
        .context(doing)?;
    Ok(samples)
}
