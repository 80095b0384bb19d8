//! Reaching the server: URL parsing, database creation and the schema migration.
//!
//! Failures are classified as everywhere else (see [`super::error`]): a server that refuses
//! connections, is starting up or has too many clients is transient, so `store::open` keeps
//! trying for its connect timeout; a failed authentication or a bad URL is permanent.

use std::pin::Pin;
use std::time::Duration;

use tokio_postgres::config::SslMode as DriverSslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::{failure, words};
use super::tls::{self, SslMode};
use crate::error::{Error, Result};
use crate::store::{SCHEMA_VERSION, redact};

/// The DDL of schema version 125; `{{schema}}` stands for the quoted schema name.
const SCHEMA_SQL: &str = include_str!("schema.sql");

/// What to tell a user whose database is older than Cairn's schema.
const UPGRADE_HINT: &str = "run `dbos migrate` with dbos>=3.4, or start from an empty database";

/// What to tell a client (which never creates a schema) about a database without one.
pub(crate) const MISSING_HINT: &str = "launch a Cairn application on it first (it creates the schema), or run `dbos migrate` with dbos>=3.4";

/// How long opening one connection may take unless the URL says (`connect_timeout`): a host
/// that drops packets fails this attempt instead of hanging for the OS's SYN timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The driver's default TCP keepalive idle time, which a URL that sets none leaves in place.
const DRIVER_KEEPALIVE_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// A parsed system database URL: the driver's config and the TLS connector for its `sslmode`.
pub(crate) struct Target {
    /// The driver's configuration (password filled in from `PGPASSWORD` if the URL has none).
    pub config: Config,
    /// The connector, whatever the mode (unused when TLS is disabled).
    pub tls: MakeRustlsConnect,
    /// The URL with its password masked, for messages.
    pub redacted: String,
}

impl Target {
    /// Parse a `postgres://` or `postgresql://` URL. An unknown `sslmode` is a config error.
    /// Unless the URL says otherwise, connecting times out after [`CONNECT_TIMEOUT`] and TCP
    /// keepalives notice a silently lost server within about half a minute.
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let redacted = redact(url);
        let (rest, sslmode) = split_sslmode(url);
        let sslmode = match sslmode.or_else(|| std::env::var("PGSSLMODE").ok()) {
            Some(value) => SslMode::parse(&value)?,
            None => SslMode::Prefer,
        };
        let mut config: Config = rest.parse().map_err(|e| {
            Error::Config(format!(
                "cannot parse the system database URL `{redacted}`: {e}"
            ))
        })?;
        let env_password = std::env::var("PGPASSWORD")
            .ok()
            .filter(|_| config.get_password().is_none());
        if let Some(password) = env_password {
            config.password(password);
        }
        config.ssl_mode(sslmode.driver_mode());
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_keepalives_idle() == DRIVER_KEEPALIVE_IDLE {
            config
                .keepalives(true)
                .keepalives_idle(Duration::from_secs(15))
                .keepalives_interval(Duration::from_secs(5))
                .keepalives_retries(3);
        }
        Ok(Self {
            config,
            tls: tls::connector(sslmode)?,
            redacted,
        })
    }

    /// Open one connection for setup, creating the database if it does not exist yet (when
    /// `create`; otherwise a missing database is [`Error::SchemaVersion`] with `found: 0`).
    ///
    /// With `sslmode=prefer`, a server that accepts TLS but fails the handshake is retried in
    /// plain text, and the pool then uses plain text too.
    pub(crate) async fn bootstrap(&mut self, create: bool) -> Result<Client> {
        let context = |redacted: &str| format!("connecting to {redacted}");
        match self.open().await {
            Ok(client) => Ok(client),
            Err(e) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) && !create => {
                Err(Error::SchemaVersion {
                    found: 0,
                    expected: SCHEMA_VERSION,
                    hint: format!(
                        "the database of {} does not exist; {MISSING_HINT}",
                        self.redacted
                    ),
                })
            }
            Err(e) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
                self.create_database().await?;
                self.open()
                    .await
                    .map_err(|e| failure(e, context(&self.redacted)))
            }
            Err(e) => Err(failure(e, context(&self.redacted))),
        }
    }

    /// Connect once, falling back to plain text under `prefer` when TLS fails.
    async fn open(&mut self) -> std::result::Result<Client, tokio_postgres::Error> {
        match open_client(&self.config, &self.tls).await {
            Err(e) if e.code().is_none() && self.config.get_ssl_mode() == DriverSslMode::Prefer => {
                let mut plain = self.config.clone();
                plain.ssl_mode(DriverSslMode::Disable);
                match open_client(&plain, &self.tls).await {
                    Ok(client) => {
                        tracing::info!(url = %self.redacted, error = %e, "TLS failed under sslmode=prefer; using plain text");
                        self.config = plain;
                        Ok(client)
                    }
                    Err(_) => Err(e),
                }
            }
            other => other,
        }
    }

    /// `CREATE DATABASE` through the `postgres` database, tolerating a concurrent creator.
    async fn create_database(&self) -> Result<()> {
        let name = self
            .config
            .get_dbname()
            .or_else(|| self.config.get_user())
            .ok_or_else(|| {
                Error::Config(format!(
                    "the system database URL `{}` names no database",
                    self.redacted
                ))
            })?
            .to_owned();
        let context = || format!("creating database {name} on {}", self.redacted);
        let mut admin = self.config.clone();
        admin.dbname("postgres");
        let client = open_client(&admin, &self.tls)
            .await
            .map_err(|e| failure(e, context()))?;
        tracing::info!(database = %name, "creating the system database");
        match client
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&name)))
            .await
        {
            Ok(()) => Ok(()),
            // Two processes creating it at once: one gets 42P04, or 23505 from the catalogue index.
            Err(e)
                if e.code() == Some(&SqlState::DUPLICATE_DATABASE)
                    || e.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
            {
                Ok(())
            }
            Err(e) => Err(failure(e, context())),
        }
    }
}

/// Split `sslmode` off the URL's query (the driver knows only three of libpq's five values).
fn split_sslmode(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut mode = None;
    let mut kept = Vec::new();
    for segment in query.split('&').filter(|s| !s.is_empty()) {
        match url::form_urlencoded::parse(segment.as_bytes()).next() {
            Some((key, value)) if key == "sslmode" => mode = Some(value.into_owned()),
            _ => kept.push(segment),
        }
    }
    if kept.is_empty() {
        (base.to_owned(), mode)
    } else {
        (format!("{base}?{}", kept.join("&")), mode)
    }
}

/// Opens the pool's connections: the driver's connect, with the connection driven on a task
/// that logs its end at debug level, in the server's words. (deadpool's own connector warns
/// once per connection with only "db error"; the statement that fails with the connection
/// reports it, and the store's retry loop logs the outage once.)
pub(super) struct PoolConnector {
    /// The TLS connector `bootstrap` settled on.
    pub tls: MakeRustlsConnect,
}

impl deadpool_postgres::Connect for PoolConnector {
    fn connect(&self, config: &Config) -> Pin<Box<dyn Future<Output = Connected> + Send + '_>> {
        let (config, tls) = (config.clone(), self.tls.clone());
        Box::pin(async move {
            let (client, connection) = config.connect(tls).await?;
            let task = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %words(&e), "a pooled connection ended");
                }
            });
            Ok((client, task))
        })
    }
}

/// What [`PoolConnector`] answers: the client and the task driving its connection.
type Connected = std::result::Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>;

/// Connect one client and drive its connection on a task.
pub(crate) async fn open_client(
    config: &Config,
    tls: &MakeRustlsConnect,
) -> std::result::Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(tls.clone()).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %words(&e), "setup connection ended");
        }
    });
    Ok(client)
}

/// A Postgres identifier, double-quoted.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Bring the schema to version 125, or refuse (`create: false`: only check, and refuse a
/// missing schema too).
///
/// One transaction under an advisory lock, so processes launching together migrate once: an
/// empty schema gets the whole DDL and `125`; `125` is used as is; an older version is refused
/// without touching anything; a newer one is used with a warning.
pub(super) async fn migrate(client: &mut Client, schema: &str, create: bool) -> Result<()> {
    let context = || format!("migrating the system database schema `{schema}`");
    // A connection lost mid-migration is transient: the transaction rolled back, and the
    // caller's next attempt starts over.
    let err = |e| failure(e, context());
    let tx = client.transaction().await.map_err(err)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("cairn.migrate.{schema}")],
    )
    .await
    .map_err(err)?;
    let exists: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = 'dbos_migrations')",
            &[&schema],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(err)?;
    let quoted = quote_ident(schema);
    if !exists && !create {
        return Err(Error::SchemaVersion {
            found: 0,
            expected: SCHEMA_VERSION,
            hint: format!("the schema `{schema}` has no system database tables; {MISSING_HINT}"),
        });
    }
    if !exists {
        tracing::info!(
            schema,
            version = SCHEMA_VERSION,
            "creating the system database schema"
        );
        tx.batch_execute(&SCHEMA_SQL.replace("{{schema}}", &quoted))
            .await
            .map_err(err)?;
        tx.execute(
            &format!("INSERT INTO {quoted}.dbos_migrations (version) VALUES ($1)"),
            &[&SCHEMA_VERSION],
        )
        .await
        .map_err(err)?;
        return tx.commit().await.map_err(err);
    }
    let found: Option<i64> = tx
        .query_one(
            &format!("SELECT max(version) FROM {quoted}.dbos_migrations"),
            &[],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(err)?;
    let found = found.unwrap_or(0);
    if found < SCHEMA_VERSION {
        // Dropping the transaction rolls it back: nothing was written.
        return Err(Error::SchemaVersion {
            found,
            expected: SCHEMA_VERSION,
            hint: UPGRADE_HINT.to_owned(),
        });
    }
    if found > SCHEMA_VERSION {
        tracing::warn!(
            schema,
            found,
            expected = SCHEMA_VERSION,
            "the system database schema is newer than this Cairn; continuing"
        );
    }
    tx.commit().await.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sslmode` is taken out of the query and the other parameters stay.
    #[test]
    fn sslmode_is_split_from_the_query() {
        let (rest, mode) =
            split_sslmode("postgres://u:p@h/db?sslmode=verify-full&application_name=x");
        assert_eq!(rest, "postgres://u:p@h/db?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        let (rest, mode) = split_sslmode("postgresql://h/db?sslmode=disable");
        assert_eq!(rest, "postgresql://h/db");
        assert_eq!(mode.as_deref(), Some("disable"));
        assert_eq!(
            split_sslmode("postgres://h/db"),
            ("postgres://h/db".to_owned(), None)
        );
    }

    /// Quotes inside an identifier are doubled.
    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("dbos"), "\"dbos\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
