//! Creating and checking the schema at open: all or nothing, in one `BEGIN IMMEDIATE`.

use rusqlite::{Connection, OptionalExtension};

use super::database_error;
use crate::error::{Error, Result};
use crate::store::SCHEMA_VERSION;

/// DBOS 3.4's SQLite schema, verbatim (see the file's header).
const SCHEMA_SQL: &str = include_str!("schema.sql");

/// What to tell the user when the database predates the schema Cairn speaks.
const UPGRADE_HINT: &str =
    "run `dbos migrate` with dbos>=3.4 on this database, or start from an empty database";

/// What to tell a client (which never creates a schema) about a database without one.
const MISSING_HINT: &str = "launch a Cairn application on it first (it creates the schema), or run `dbos migrate` with dbos>=3.4";

/// Bring the database to [`SCHEMA_VERSION`]: create everything in an empty database (only if
/// `create`; otherwise refuse it), accept the current version as is, refuse an older one
/// without writing, warn about a newer one.
pub(super) fn migrate(conn: &Connection, create: bool) -> Result<()> {
    let db_err = |e| database_error("migrating the SQLite system database", e);
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
    match migrate_in_transaction(conn, create) {
        Ok(changed) => {
            let end = if changed { "COMMIT" } else { "ROLLBACK" };
            conn.execute_batch(end).map_err(db_err)
        }
        Err(e) => {
            // The refusal or failure must leave the file as it was.
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// The body of [`migrate`]; returns whether it wrote anything.
fn migrate_in_transaction(conn: &Connection, create: bool) -> Result<bool> {
    let db_err = |e| database_error("migrating the SQLite system database", e);
    let has_table: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dbos_migrations')",
            [],
            |row| row.get(0),
        )
        .map_err(db_err)?;
    if !has_table && !create {
        return Err(Error::SchemaVersion {
            found: 0,
            expected: SCHEMA_VERSION,
            hint: format!("the database has no system database tables; {MISSING_HINT}"),
        });
    }
    if !has_table {
        conn.execute_batch(SCHEMA_SQL)
            .map_err(|e| database_error("creating the SQLite system database schema", e))?;
        conn.execute(
            "INSERT INTO dbos_migrations (version) VALUES (?1)",
            [SCHEMA_VERSION],
        )
        .map_err(db_err)?;
        tracing::info!(
            version = SCHEMA_VERSION,
            "created the SQLite system database schema"
        );
        return Ok(true);
    }
    let found: i64 = conn
        .query_row("SELECT MAX(version) FROM dbos_migrations", [], |row| {
            row.get::<_, Option<i64>>(0)
        })
        .optional()
        .map_err(db_err)?
        .flatten()
        .unwrap_or(0);
    if found < SCHEMA_VERSION {
        return Err(Error::SchemaVersion {
            found,
            expected: SCHEMA_VERSION,
            hint: UPGRADE_HINT.to_owned(),
        });
    }
    if found > SCHEMA_VERSION {
        tracing::warn!(
            found,
            expected = SCHEMA_VERSION,
            "the SQLite system database schema is newer than this version of Cairn knows; continuing"
        );
    }
    Ok(false)
}
