//! Postgres failures: whether they pass by themselves, and what the server said.
//!
//! Every driver and pool error the backend returns goes through [`failure`] or
//! [`pool_failure`], which classify it (see [`kind_of`]) and wrap it in a [`PostgresError`]
//! whose message is the server's own (`ERROR 54000: index row requires …`), not the driver's
//! bare "db error".

use std::fmt;
use std::io;

use deadpool_postgres::PoolError;
use tokio_postgres::error::{DbError, SqlState};

use crate::error::{DatabaseErrorKind, Error};

/// The longest message, detail or hint quoted in an error, in characters. Longer ones are cut
/// with `…`: a detail may quote a stored value (`Key (workflow_uuid)=(…) already exists`).
const MAX_QUOTED: usize = 500;

/// A Postgres failure in the server's own words: `ERROR 54000: index row requires 100016
/// bytes, maximum size is 8191 (detail: …; hint: …)`, or for a failure below SQL the driver's
/// description and its cause (`error connecting to server: Connection refused (os error 111)`).
/// The driver's (or the pool's) error is its [`source`](std::error::Error::source).
pub(crate) struct PostgresError {
    /// The message, bounded (see [`MAX_QUOTED`]).
    text: String,
    /// The driver's or the pool's error.
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl PostgresError {
    /// The error of a failed driver call.
    fn of_driver(e: tokio_postgres::Error) -> Self {
        Self {
            text: words(&e),
            source: Box::new(e),
        }
    }

    /// The error of a pool failure that is not the driver's (a timeout, a failed hook).
    fn of_pool(e: PoolError) -> Self {
        Self {
            text: bounded(&chain(&e)).into_owned(),
            source: Box::new(e),
        }
    }
}

impl fmt::Display for PostgresError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Shows the bounded message only: the driver's own `Debug` would print a detail in full.
impl fmt::Debug for PostgresError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PostgresError").field(&self.text).finish()
    }
}

impl std::error::Error for PostgresError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// The error of a failed driver call while doing `context`, classified.
pub(crate) fn failure(e: tokio_postgres::Error, context: String) -> Error {
    Error::database_of(kind_of(&e), context, PostgresError::of_driver(e))
}

/// The error of a failed pool checkout while doing `context`, classified: the pool's own
/// timeouts and a failure to connect (refused, server starting up) are transient, a pool
/// closed by [`PostgresStore::close`](super::PostgresStore::close) is [`Error::Shutdown`].
pub(super) fn pool_failure(e: PoolError, context: impl FnOnce() -> String) -> Error {
    match e {
        PoolError::Closed => Error::Shutdown,
        PoolError::Backend(e) => failure(e, context()),
        PoolError::Timeout(_) => Error::database_of(
            DatabaseErrorKind::Transient,
            context(),
            PostgresError::of_pool(e),
        ),
        other => Error::database(context(), PostgresError::of_pool(other)),
    }
}

/// Whether a driver error can pass by itself.
///
/// Transient: no SQLSTATE and a connection-level cause (the connection was closed, refused,
/// reset or timed out), SQLSTATE class 08 (connection exception), `57P01`–`57P03` (the
/// server is shutting down or starting up), `53300` (too many connections), `40001`
/// (serialization failure) and `40P01` (deadlock). Everything else is permanent: a
/// constraint, the schema, a value that does not decode, a failed authentication (`28P01`),
/// a TLS certificate that does not verify, a malformed message.
pub(crate) fn kind_of(e: &tokio_postgres::Error) -> DatabaseErrorKind {
    if let Some(code) = e.code() {
        return kind_of_code(code);
    }
    if e.is_closed() {
        return DatabaseErrorKind::Transient;
    }
    // The driver's own kinds are private; a connection-level failure is the one that carries
    // an I/O error. `InvalidInput`/`InvalidData` are a message that did not parse or encode,
    // or a certificate rustls refused: retrying would fail the same way.
    match io_cause(e) {
        Some(io)
            if !matches!(
                io.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData
            ) =>
        {
            DatabaseErrorKind::Transient
        }
        _ => DatabaseErrorKind::Permanent,
    }
}

/// Whether a SQLSTATE can pass by itself (see [`kind_of`]).
fn kind_of_code(code: &SqlState) -> DatabaseErrorKind {
    let code = code.code();
    if code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01"
        )
    {
        DatabaseErrorKind::Transient
    } else {
        DatabaseErrorKind::Permanent
    }
}

/// Whether the connection that returned `e` is unusable: it failed below SQL (closed, I/O,
/// a message that did not parse), or the server ended the session (class 08, `57P0x`).
pub(super) fn connection_lost(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || code.starts_with("57P")
        }
    }
}

/// The I/O error a driver error wraps, if it is one.
fn io_cause(e: &tokio_postgres::Error) -> Option<&io::Error> {
    std::error::Error::source(e).and_then(|cause| cause.downcast_ref::<io::Error>())
}

/// What a driver error says, bounded: the server's words for a server error (see
/// [`PostgresError`]), the driver's description and its causes otherwise.
pub(super) fn words(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => server_words(db),
        None => bounded(&chain(e)).into_owned(),
    }
}

/// `SEVERITY CODE: message (detail: …; hint: …)`, each part bounded.
fn server_words(db: &DbError) -> String {
    let mut text = format!(
        "{} {}: {}",
        db.severity(),
        db.code().code(),
        bounded(db.message())
    );
    let extra: Vec<String> = [("detail", db.detail()), ("hint", db.hint())]
        .into_iter()
        .filter_map(|(label, value)| value.map(|v| format!("{label}: {}", bounded(v))))
        .collect();
    if !extra.is_empty() {
        text.push_str(" (");
        text.push_str(&extra.join("; "));
        text.push(')');
    }
    text
}

/// An error and its causes, `outer: inner: innermost`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// `text`, cut to [`MAX_QUOTED`] characters with an ellipsis if it is longer.
fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(MAX_QUOTED) {
        Some((end, _)) => format!("{}…", &text[..end]).into(),
        None => text.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SQLSTATEs an outage or a busy server produce are transient; the rest are not.
    #[test]
    fn sqlstates_are_classified_as_the_issue_lists_them() {
        let transient = [
            SqlState::CONNECTION_EXCEPTION,
            SqlState::CONNECTION_FAILURE,
            SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
        ];
        for code in transient {
            assert_eq!(
                kind_of_code(&code),
                DatabaseErrorKind::Transient,
                "{code:?}"
            );
        }
        let permanent = [
            SqlState::UNIQUE_VIOLATION,
            SqlState::FOREIGN_KEY_VIOLATION,
            SqlState::UNDEFINED_TABLE,
            SqlState::PROGRAM_LIMIT_EXCEEDED,
            SqlState::INVALID_PASSWORD,
            SqlState::INVALID_CATALOG_NAME,
            SqlState::QUERY_CANCELED,
        ];
        for code in permanent {
            assert_eq!(
                kind_of_code(&code),
                DatabaseErrorKind::Permanent,
                "{code:?}"
            );
        }
    }

    /// A long text is cut at a character boundary, with an ellipsis; a short one is kept.
    #[test]
    fn long_texts_are_cut_with_an_ellipsis() {
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(MAX_QUOTED + 10);
        let cut = bounded(&long);
        assert_eq!(cut.chars().count(), MAX_QUOTED + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(bounded(&"x".repeat(MAX_QUOTED)).len(), MAX_QUOTED);
    }

    /// A refused connection is transient and its message names the cause.
    #[tokio::test]
    async fn a_refused_connection_is_transient_and_says_why() {
        // Port 1 on loopback: nothing listens there.
        let e = tokio_postgres::connect("host=127.0.0.1 port=1 user=x", tokio_postgres::NoTls)
            .await
            .err()
            .expect("nothing listens on port 1");
        assert_eq!(kind_of(&e), DatabaseErrorKind::Transient);
        let error = failure(e, "connecting".to_owned());
        assert!(error.is_transient());
        assert!(error.to_string().contains("refused"), "{error}");
    }
}
