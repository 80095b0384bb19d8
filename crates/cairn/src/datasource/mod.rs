//! Transactional steps on the application's own database: its writes happen exactly once.
//!
//! A plain step that writes to a database can commit twice: if the process dies after the
//! write commits and before the step's checkpoint does, recovery runs the step again. A
//! *transactional step* closes that window. Its body gets a live transaction on the
//! application's database, and Cairn writes the step's output into that same transaction, in
//! a completion table (`dbos.transaction_completion`, the layout DBOS Go uses, created when
//! missing). The writes and the record of them commit together or not at all, so after a
//! crash recovery finds the record and returns the recorded output instead of running the
//! body again.
//!
//! When the application database *is* the system database, there is no completion table:
//! the writes and the step's checkpoint commit in one transaction.
//!
//! | Data source | Body gets | Cargo feature |
//! |---|---|---|
//! | [`PostgresDatasource`] (deadpool-postgres / tokio-postgres) | a [`PgTransaction`] | `postgres` |
//! | [`SqliteDatasource`] (rusqlite) | a [`rusqlite::Transaction`] | `sqlite` |
//! | [`SqlxPgDatasource`] (sqlx, Postgres) | a `&mut sqlx::Transaction<'static, Postgres>` | `sqlx-postgres` |
//! | [`SqlxSqliteDatasource`] (sqlx, SQLite) | a `&mut sqlx::Transaction<'static, Sqlite>` | `sqlx-sqlite` |
//!
//! A transaction that fails with a serialization failure or a deadlock (or loses its
//! connection) is rolled back and run again with backoff ([`TransactionOptions`]); any other
//! error of the body rolls it back and is the step's error, recorded like any step's. The
//! isolation level is an option (default: serializable, as in DBOS).
//!
//! ```no_run
//! use cairn::datasource::PostgresDatasource;
//!
//! #[cairn::workflow]
//! async fn place_order(item: String) -> Result<i64, cairn::Error> {
//!     let orders = cairn::state::<PostgresDatasource>()?;
//!     let item = &item;
//!     orders
//!         .transaction("insert_order", move |tx| async move {
//!             let row = tx
//!                 .query_one("INSERT INTO orders (item) VALUES ($1) RETURNING id", &[item])
//!                 .await?;
//!             Ok::<i64, cairn::Error>(row.get(0))
//!         })
//!         .await
//! }
//!
//! # async fn launch(pool: deadpool_postgres::Pool) -> cairn::Result<()> {
//! // The pool the application already has; Cairn creates `dbos.transaction_completion`
//! // in its database on first use (unless it is the system database itself).
//! let app = cairn::Cairn::builder("shop")
//!     .state(PostgresDatasource::new(pool).name("orders"))
//!     .launch()
//!     .await?;
//! # let _ = app; Ok(()) }
//! //! ```

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(any(feature = "sqlx-postgres", feature = "sqlx-sqlite"))]
mod sqlx;

use std::any::Any;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{DatabaseErrorKind, DurableError, Error};
use crate::serialization;

#[cfg(feature = "sqlx-postgres")]
pub use self::sqlx::SqlxPgDatasource;
#[cfg(feature = "sqlx-sqlite")]
pub use self::sqlx::SqlxSqliteDatasource;
#[cfg(feature = "postgres")]
pub use postgres::{PgTransaction, PostgresDatasource};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteDatasource;

/// The completion table's name, in the data source's `dbos` schema (Postgres) or the
/// database itself (SQLite): DBOS Go's name, so its tools read the same rows.
pub(crate) const COMPLETION_TABLE: &str = "transaction_completion";

/// The schema Postgres data sources keep the completion table in. Default of DBOS Go too.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) const DEFAULT_SCHEMA: &str = "dbos";

/// How a transaction is isolated from concurrent ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Isolation {
    /// Each statement sees what was committed before it began.
    ReadCommitted,
    /// The transaction sees one snapshot; a conflicting update fails it (Postgres).
    RepeatableRead,
    /// As if transactions ran one after another; a conflict fails one of them, and Cairn runs
    /// it again. The default, as in DBOS.
    #[default]
    Serializable,
}

impl Isolation {
    /// The SQL of Postgres's `BEGIN ISOLATION LEVEL …`.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn sql(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "READ COMMITTED",
            Isolation::RepeatableRead => "REPEATABLE READ",
            Isolation::Serializable => "SERIALIZABLE",
        }
    }
}

/// How a transactional step runs its transaction.
///
/// ```
/// use std::time::Duration;
/// use cairn::datasource::{Isolation, TransactionOptions};
/// let options = TransactionOptions::default()
///     .isolation(Isolation::ReadCommitted)
///     .max_attempts(20)
///     .interval(Duration::from_millis(5));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TransactionOptions {
    /// The isolation level. Default: [`Isolation::Serializable`]. SQLite transactions are
    /// always serializable (it has one writer); there the level is ignored.
    pub isolation: Isolation,
    /// How many times the transaction runs while it keeps failing with a serialization
    /// failure, a deadlock or a lost connection; the last failure is then the step's error.
    /// Default: 10.
    pub max_attempts: u32,
    /// The wait before the first retry; it doubles after each. Default: 10 ms.
    pub interval: Duration,
    /// The longest wait between two attempts. Default: 1 second.
    pub max_interval: Duration,
}

impl Default for TransactionOptions {
    fn default() -> Self {
        Self {
            isolation: Isolation::Serializable,
            max_attempts: 10,
            interval: Duration::from_millis(10),
            max_interval: Duration::from_secs(1),
        }
    }
}

impl TransactionOptions {
    /// Set [`TransactionOptions::isolation`].
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// Set [`TransactionOptions::max_attempts`] (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Set [`TransactionOptions::interval`].
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Set [`TransactionOptions::max_interval`].
    pub fn max_interval(mut self, max: Duration) -> Self {
        self.max_interval = max;
        self
    }

    /// The wait after failed attempt number `attempt` (1-based), with up to 50% jitter so
    /// that transactions that conflicted do not meet again at once.
    pub(crate) fn delay_after(&self, attempt: u32) -> Duration {
        let doubled = self
            .interval
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let base = doubled.min(self.max_interval);
        let jitter = f64::from(uuid::Uuid::new_v4().as_fields().0) / f64::from(u32::MAX);
        base.mul_f64(0.5 + jitter / 2.0)
    }
}

/// Where a transactional step writes its record: the workflow and the operation id.
#[derive(Debug, Clone)]
pub(crate) struct Completion {
    pub workflow_id: String,
    pub function_id: i32,
}

/// A row of the completion table, as read back.
pub(crate) struct Recorded {
    pub output: Option<String>,
    pub error: Option<String>,
    pub serialization: Option<String>,
}

impl Recorded {
    /// The step's outcome as the body first returned it.
    pub(crate) fn decode<T, E>(&self, at: &Completion) -> Result<T, E>
    where
        T: DeserializeOwned,
        E: DurableError + From<Error>,
    {
        let column = |c: &str| format!("{COMPLETION_TABLE}.{c}");
        let format = self.serialization.as_deref();
        if let Some(error) = &self.error {
            let portable =
                serialization::decode_error(error, format, &at.workflow_id, &column("error"))?;
            return Err(match serialization::typed_error::<E>(portable.clone()) {
                Some(Ok(typed)) => typed,
                _ => E::from(Error::from_portable(portable)),
            });
        }
        let output = self.output.as_deref().unwrap_or("null");
        Ok(serialization::decode(
            output,
            format,
            &at.workflow_id,
            &column("output"),
        )?)
    }
}

/// The output of a transaction's body as the completion table stores it.
pub(crate) fn encode_output<T: Serialize>(value: &T, step: &str) -> Result<String, Error> {
    serialization::encode(value, || {
        format!("the output of transactional step `{step}`")
    })
}

/// What the step's retry loop does with a failed attempt.
pub(crate) enum Failed<E> {
    /// A conflict or an outage: roll back, wait, run the transaction again.
    Retry(E),
    /// The step's error.
    Final(E),
}

impl<E: std::fmt::Display> Failed<E> {
    /// After failed attempt `attempt` of step `step` on data source `datasource`: wait and
    /// count the next attempt when the failure is retryable and attempts remain; otherwise the
    /// step's error.
    pub(crate) async fn back_off(
        self,
        options: &TransactionOptions,
        datasource: &str,
        step: &str,
        attempt: &mut u32,
    ) -> Result<(), E> {
        match self {
            Failed::Retry(error) if *attempt < options.max_attempts => {
                let wait = options.delay_after(*attempt);
                tracing::debug!(datasource, step, attempt = *attempt, error = %error, "transaction conflicted; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                *attempt += 1;
                Ok(())
            }
            Failed::Retry(error) | Failed::Final(error) => Err(error),
        }
    }
}

/// Whether the body's error is a conflict (serialization failure, deadlock) or a lost
/// connection, found by its type: Cairn's own [`Error::Transaction`], or the driver error
/// `D` itself, judged by `transient`.
pub(crate) fn classify<E: 'static, D: 'static>(
    error: E,
    transient: impl Fn(&D) -> bool,
) -> Failed<E> {
    let any: &dyn Any = &error;
    let retry = match (any.downcast_ref::<Error>(), any.downcast_ref::<D>()) {
        (Some(own), _) => own.is_transient(),
        (_, Some(driver)) => transient(driver),
        _ => false,
    };
    if retry {
        Failed::Retry(error)
    } else {
        Failed::Final(error)
    }
}

/// A failure of the data source's own statements (begin, the completion record, commit).
pub(crate) fn transaction_error(
    datasource: &str,
    kind: DatabaseErrorKind,
    source: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::Transaction {
        datasource: datasource.to_owned(),
        kind,
        source: Box::new(source),
    }
}
