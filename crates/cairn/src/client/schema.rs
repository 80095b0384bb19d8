//! Creating, checking and resetting a system database from outside an application: what
//! `cairn migrate`, `cairn migrate --check` and `cairn reset` do, and what tests use to start
//! from a clean database.
//!
//! Each call reuses the store's own connect and migrate code (the same DDL, the same
//! advisory lock, the same refusal of an older schema), so a database these functions
//! create is exactly the one an application's `launch()` would have created.

use crate::error::{Error, Result};
use crate::store::{self, SCHEMA_VERSION, StoreOptions, redact};

use super::ClientOptions;

/// What [`migrate_system_database`] found and left: the schema version before and after.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct MigrateReport {
    /// The backend the URL selected: `"sqlite"` or `"postgres"`.
    pub backend: &'static str,
    /// The schema version found, or `None` when there was no system database (no file, no
    /// database or no schema).
    pub before: Option<i64>,
    /// The schema version afterwards.
    pub after: i64,
}

impl MigrateReport {
    /// Whether the call created the schema (there was none before).
    pub fn created(&self) -> bool {
        self.before.is_none()
    }
}

/// Create the system database `url` names, or bring it to the schema version this Cairn
/// uses, as an application's `launch()` would: a missing SQLite file, a missing Postgres
/// database and a missing schema ([`ClientOptions::schema`], default `dbos`) are created; a
/// current one is left as it is. Answers the schema version before and after.
///
/// A schema older than DBOS 3.4's (version 125) is refused with [`Error::SchemaVersion`]
/// and left untouched: its upgrade is DBOS's (`dbos migrate` with dbos>=3.4). While the
/// database is unreachable, connecting is retried for [`ClientOptions::connect_timeout`].
///
/// ```no_run
/// # async fn example() -> cairn::Result<()> {
/// let report = cairn::migrate_system_database(
///     "sqlite:///shop.sqlite",
///     cairn::ClientOptions::default(),
/// )
/// .await?;
/// assert_eq!(report.after, 125);
/// # Ok(())
/// # }
/// ```
pub async fn migrate_system_database(url: &str, options: ClientOptions) -> Result<MigrateReport> {
    let backend = backend_of(url)?;
    let before = schema_version(url, &options.store).await?;
    let store_options = StoreOptions {
        pool_size: 1,
        create: true,
        ..options.store.clone()
    };
    let opened = store::open(url, &store_options).await?;
    opened.close().await;
    let after = schema_version(url, &options.store)
        .await?
        .unwrap_or(SCHEMA_VERSION);
    Ok(MigrateReport {
        backend,
        before,
        after,
    })
}

/// Check, without writing anything, that `url` holds a system database at the schema version
/// this Cairn uses (or a newer one), and answer that version. A missing database or schema,
/// or an older one, is [`Error::SchemaVersion`] whose hint says what to run. What
/// `cairn migrate --check` does.
pub async fn check_system_database(url: &str, options: ClientOptions) -> Result<i64> {
    backend_of(url)?;
    match schema_version(url, &options.store).await? {
        None => Err(Error::SchemaVersion {
            found: 0,
            expected: SCHEMA_VERSION,
            hint: format!(
                "{} holds no system database; run `cairn migrate --db {}` (or launch a Cairn application on it) to create it",
                redact(url),
                redact(url)
            ),
        }),
        Some(found) if found < SCHEMA_VERSION => Err(Error::SchemaVersion {
            found,
            expected: SCHEMA_VERSION,
            hint: "run `dbos migrate` with dbos>=3.4 on it, or start from an empty database"
                .to_owned(),
        }),
        Some(found) => Ok(found),
    }
}

/// Drop the system database `url` names and create it again, empty, at the current schema
/// version (as DBOS's `reset_system_database`, which tests and development use to start
/// over). SQLite: the file and its `-wal` and `-shm` companions are removed. Postgres: the
/// whole database is dropped — its other sessions are terminated first (`WITH (FORCE)` on
/// Postgres 13 and later) — then created with the schema ([`ClientOptions::schema`]).
/// Everything in it is lost; nothing asks for confirmation here.
///
/// Refuses (with [`Error::InvalidArgument`]) to drop Postgres's `postgres` database or a
/// template database, and an in-memory SQLite URL (nothing to reset).
pub async fn reset_system_database(url: &str, options: ClientOptions) -> Result<()> {
    match backend_of(url)? {
        #[cfg(feature = "sqlite")]
        "sqlite" => sqlite::remove_files(url)?,
        #[cfg(feature = "postgres")]
        "postgres" => postgres::drop_database(url, &options.store).await?,
        _ => {}
    }
    migrate_system_database(url, options).await.map(drop)
}

/// The backend a URL selects, or the same configuration error `Client::connect` gives.
fn backend_of(url: &str) -> Result<&'static str> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        if cfg!(feature = "postgres") {
            return Ok("postgres");
        }
        return Err(Error::Config(format!(
            "system database URL `{}` needs Postgres, but cairn was built without its `postgres` feature",
            redact(url)
        )));
    }
    if url.starts_with("sqlite:") {
        if cfg!(feature = "sqlite") {
            return Ok("sqlite");
        }
        return Err(Error::Config(format!(
            "system database URL `{url}` needs SQLite, but cairn was built without its `sqlite` feature"
        )));
    }
    Err(Error::Config(format!(
        "system database URL `{}` is neither postgres:// nor sqlite:",
        redact(url)
    )))
}

/// The schema version recorded in the database, or `None` when there is no system database
/// there (no file, no database, no schema). Writes nothing.
async fn schema_version(url: &str, options: &StoreOptions) -> Result<Option<i64>> {
    match backend_of(url)? {
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            let url = url.to_owned();
            tokio::task::spawn_blocking(move || sqlite::schema_version(&url))
                .await
                .map_err(|e| Error::database("reading the SQLite schema version", e))?
        }
        #[cfg(feature = "postgres")]
        "postgres" => postgres::schema_version(url, options).await,
        _ => {
            let _ = options;
            Ok(None)
        }
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use rusqlite::{Connection, OpenFlags, OptionalExtension};

    use crate::error::{Error, Result};
    use crate::store::sqlite::Location;

    /// The version in `dbos_migrations`, reading the file without creating it.
    pub(super) fn schema_version(url: &str) -> Result<Option<i64>> {
        let path = match Location::parse(url)? {
            Location::Memory => return Ok(None),
            Location::File(path) => path,
        };
        if !path.exists() {
            return Ok(None);
        }
        let context = format!("reading the schema version of {}", path.display());
        let db_err = |e| Error::database(context.clone(), e);
        // Read-write at the file level (a WAL reader needs the shared-memory file), without
        // CREATE, and read-only in SQL.
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db_err)?;
        conn.pragma_update(None, "query_only", "ON")
            .map_err(db_err)?;
        let has_table: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dbos_migrations')",
                [],
                |row| row.get(0),
            )
            .map_err(db_err)?;
        if !has_table {
            return Ok(None);
        }
        let found = conn
            .query_row("SELECT MAX(version) FROM dbos_migrations", [], |row| {
                row.get::<_, Option<i64>>(0)
            })
            .optional()
            .map_err(db_err)?
            .flatten()
            .unwrap_or(0);
        Ok(Some(found))
    }

    /// Remove the database file and its `-wal`, `-shm` and `-journal` companions.
    pub(super) fn remove_files(url: &str) -> Result<()> {
        let path = match Location::parse(url)? {
            Location::Memory => {
                return Err(Error::InvalidArgument {
                    argument: "url",
                    reason: "an in-memory SQLite database has nothing to reset".to_owned(),
                });
            }
            Location::File(path) => path,
        };
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = path.clone().into_os_string();
            name.push(suffix);
            match std::fs::remove_file(&name) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::database(
                        format!("removing {}", std::path::Path::new(&name).display()),
                        e,
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use crate::error::{Error, Result};
    use crate::store::StoreOptions;
    use crate::store::postgres::connect::{Target, quote_ident};
    use crate::store::postgres::error::failure;
    use crate::store::retry::Retry;

    /// Open one setup connection to `url` (to its `postgres` database with `admin`), retrying
    /// while the server is unreachable for `options.connect_timeout`. A missing database is
    /// `Ok(None)`.
    async fn connect(
        url: &str,
        options: &StoreOptions,
        admin: bool,
    ) -> Result<Option<(tokio_postgres::Client, Target)>> {
        let what = format!("connecting to {}", crate::store::redact(url));
        let attempt = || async move {
            let mut target = Target::parse(url)?;
            if admin {
                target.config.dbname("postgres");
            }
            let client = target.bootstrap(false).await?;
            Ok((client, target))
        };
        match Retry::default()
            .run_for(options.connect_timeout, &what, attempt)
            .await
        {
            Ok(connected) => Ok(Some(connected)),
            Err(Error::SchemaVersion { found: 0, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The version in `<schema>.dbos_migrations`, or `None` without the database or schema.
    pub(super) async fn schema_version(url: &str, options: &StoreOptions) -> Result<Option<i64>> {
        let Some((client, target)) = connect(url, options, false).await? else {
            return Ok(None);
        };
        let schema = &options.schema;
        let context = || {
            format!(
                "reading the schema version of `{schema}` on {}",
                target.redacted
            )
        };
        let exists: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = 'dbos_migrations')",
                &[schema],
            )
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| failure(e, context()))?;
        if !exists {
            return Ok(None);
        }
        let found: Option<i64> = client
            .query_one(
                &format!(
                    "SELECT max(version) FROM {}.dbos_migrations",
                    quote_ident(schema)
                ),
                &[],
            )
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| failure(e, context()))?;
        Ok(Some(found.unwrap_or(0)))
    }

    /// Drop the database `url` names, ending its other sessions first.
    pub(super) async fn drop_database(url: &str, options: &StoreOptions) -> Result<()> {
        let target = Target::parse(url)?;
        let name = target
            .config
            .get_dbname()
            .or_else(|| target.config.get_user())
            .ok_or_else(|| {
                Error::Config(format!(
                    "the system database URL `{}` names no database",
                    target.redacted
                ))
            })?
            .to_owned();
        if name == "postgres" || name.starts_with("template") {
            return Err(Error::InvalidArgument {
                argument: "url",
                reason: format!("refusing to drop the `{name}` database, which Postgres needs"),
            });
        }
        let Some((client, admin)) = connect(url, options, true).await? else {
            return Err(Error::Config(format!(
                "{} has no `postgres` database to connect to while dropping `{name}`",
                target.redacted
            )));
        };
        let context = || format!("dropping database {name} on {}", admin.redacted);
        let version: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| failure(e, context()))?;
        let quoted = quote_ident(&name);
        tracing::info!(database = %name, "dropping the system database");
        if version >= 130_000 {
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
                .await
                .map_err(|e| failure(e, context()))?;
        } else {
            client
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&name],
                )
                .await
                .map_err(|e| failure(e, context()))?;
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {quoted}"))
                .await
                .map_err(|e| failure(e, context()))?;
        }
        Ok(())
    }
}
