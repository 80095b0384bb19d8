//! The database a run benchmarks on: fresh before, removed after.

use std::path::{Path, PathBuf};

use tokio_postgres::{Client, NoTls};

use crate::error::{BenchError, Context};

/// The backend a run measured, as named in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A Postgres server.
    Postgres,
}

impl Backend {
    /// `"sqlite"` or `"postgres"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// The database a run uses.
#[derive(Debug)]
pub enum BenchDatabase {
    /// A SQLite file.
    Sqlite {
        /// The file.
        path: PathBuf,
        /// Whether the harness created it (and so deletes it afterwards).
        temporary: bool,
    },
    /// A database the harness created on a Postgres server.
    Postgres {
        /// The URL given on the command line, whose server hosts the database.
        server_url: String,
        /// The database's name, `cairn_bench_<uuid>`.
        name: String,
    },
}

impl BenchDatabase {
    /// Prepare the database `--db` asks for: a fresh Postgres database on the server a
    /// `postgres://` URL names, the file a `sqlite:` URL names, or by default a new temporary
    /// SQLite file.
    pub async fn create(db: Option<&str>) -> Result<Self, BenchError> {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        match db {
            None => Ok(Self::Sqlite {
                path: std::env::temp_dir().join(format!("cairn-bench-{unique}.sqlite")),
                temporary: true,
            }),
            Some(url) if url.starts_with("sqlite:") => Ok(Self::Sqlite {
                path: sqlite_path(url)?,
                temporary: false,
            }),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let database = Self::Postgres {
                    server_url: url.to_owned(),
                    name: format!("cairn_bench_{unique}"),
                };
                database.create_postgres().await?;
                Ok(database)
            }
            Some(url) => Err(BenchError::new(
                "reading --db",
                format!("`{url}` is neither a postgres:// nor a sqlite: URL"),
            )),
        }
    }

    /// The system database URL to give Cairn.
    pub fn url(&self) -> String {
        match self {
            // `sqlite:///` + an absolute path: four slashes, absolute in every URL convention.
            Self::Sqlite { path, .. } => format!("sqlite:///{}", path.display()),
            Self::Postgres { server_url, name } => with_database(server_url, name),
        }
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite { .. } => Backend::Sqlite,
            Self::Postgres { .. } => Backend::Postgres,
        }
    }

    /// Delete the temporary SQLite file (with its `-wal` and `-shm`) or drop the Postgres
    /// database. A SQLite file named on the command line is kept.
    pub async fn remove(self) -> Result<(), BenchError> {
        match self {
            Self::Sqlite {
                path,
                temporary: true,
            } => remove_sqlite_files(&path),
            Self::Sqlite {
                temporary: false, ..
            } => Ok(()),
            Self::Postgres { server_url, name } => {
                let admin = connect_maintenance(&server_url).await?;
                // FORCE: a connection Cairn's pool failed to close must not keep the database alive.
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .context(format!("dropping the database {name}"))
            }
        }
    }

    /// Create this (Postgres) database, dropping any leftover of the same name first.
    async fn create_postgres(&self) -> Result<(), BenchError> {
        let Self::Postgres { server_url, name } = self else {
            return Ok(());
        };
        let admin = connect_maintenance(server_url).await?;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\""))
            .await
            .context(format!("dropping a leftover database {name}"))?;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .context(format!("creating the database {name}"))
    }
}

/// The absolute path of the file a `sqlite:` URL names (`sqlite:path`, `sqlite:///relative`,
/// `sqlite:////absolute`), so the URL given to Cairn cannot be read two ways.
fn sqlite_path(url: &str) -> Result<PathBuf, BenchError> {
    let rest = &url["sqlite:".len()..];
    let path = rest
        .strip_prefix("///")
        .or_else(|| rest.strip_prefix("//"))
        .unwrap_or(rest);
    if path.is_empty() || path == ":memory:" {
        return Err(BenchError::new(
            "reading --db",
            format!("`{url}` names no file; the commit floor needs one"),
        ));
    }
    std::path::absolute(path).context(format!("resolving the path in `{url}`"))
}

/// Connect to a Postgres server's `postgres` maintenance database, to create or drop others.
async fn connect_maintenance(server_url: &str) -> Result<Client, BenchError> {
    connect(&with_database(server_url, "postgres")).await
}

/// Open one plain-text Postgres connection, driven by a task of its own.
pub async fn connect(url: &str) -> Result<Client, BenchError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context(format!("connecting to {}", redact(url)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("cairn-bench: Postgres connection closed: {e}");
        }
    });
    Ok(client)
}

/// `url` with its database (the path after the host) replaced by `database`; the query,
/// if any, is kept.
fn with_database(url: &str, database: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let (base, query) = match url.find('?') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    format!("{}/{database}{query}", &base[..authority_end])
}

/// `url` with any password masked, for messages.
fn redact(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[authority_start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!(
                "{}{user}:***@{host}{}",
                &url[..authority_start],
                &url[authority_end..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Delete a SQLite database file and its `-wal` and `-shm` companions, if present.
fn remove_sqlite_files(path: &Path) -> Result<(), BenchError> {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).context(format!("deleting {}", PathBuf::from(file).display()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The database is swapped whether the URL names one, none, or carries a query.
    #[test]
    fn with_database_replaces_only_the_database() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432",
                "postgres://postgres@127.0.0.1:5432/x",
            ),
            (
                "postgres://postgres@127.0.0.1:5432/",
                "postgres://postgres@127.0.0.1:5432/x",
            ),
            ("postgres://u:p@h/cairn", "postgres://u:p@h/x"),
            (
                "postgres://h/cairn?sslmode=disable",
                "postgres://h/x?sslmode=disable",
            ),
            (
                "postgresql://h?sslmode=disable",
                "postgresql://h/x?sslmode=disable",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(with_database(url, "x"), expected, "for {url}");
        }
    }

    /// A password never reaches a message.
    #[test]
    fn redact_masks_the_password() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
