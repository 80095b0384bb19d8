#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod args;
mod ops;
mod output;
mod workflow;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::output::Output;

/// Why a command failed, and so the exit code.
#[derive(Debug)]
pub enum Failure {
    /// The operation was refused or failed (an unknown id, a refused fork): exit 1.
    Operation(String),
    /// The command line cannot be used (no database given, a malformed URL): exit 2.
    Usage(String),
    /// The database is unreachable, or holds no (current) system database: exit 3.
    Database(String),
}

impl Failure {
    /// The process exit code of this failure.
    fn code(&self) -> u8 {
        match self {
            Failure::Operation(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Database(_) => 3,
        }
    }

    /// The message, on one line.
    fn message(&self) -> String {
        let (Failure::Operation(m) | Failure::Usage(m) | Failure::Database(m)) = self;
        m.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// A failure of an operation on a database the command reached.
    pub fn of(error: cairn::Error) -> Self {
        match error {
            cairn::Error::NotFound(what) => Failure::Operation(unknown(&what)),
            cairn::Error::SchemaVersion { .. } => Failure::Database(error.to_string()),
            cairn::Error::Config(m) => Failure::Usage(m),
            e if e.is_transient() => Failure::Database(e.to_string()),
            cairn::Error::Shutdown => Failure::Database(error.to_string()),
            e => Failure::Operation(e.to_string()),
        }
    }
}

/// What `Error::NotFound` names, as a sentence: `unknown workflow id X`, `unknown schedule S`.
fn unknown(what: &str) -> String {
    match what.split_once(' ') {
        Some((kind @ ("schedule" | "queue"), name)) => format!("unknown {kind} {name}"),
        _ => format!("unknown workflow id {what}"),
    }
}

/// The result of a command.
pub type Outcome<T = ()> = Result<T, Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message());
            ExitCode::from(failure.code())
        }
    }
}

/// Run one command.
async fn run(cli: Cli) -> Outcome {
    let output = Output::detect(cli.json);
    let db = Database::of(&cli)?;
    match cli.command {
        Command::Workflow(command) => {
            let client = db.connect().await?;
            let result = workflow::run(&client, command, &output).await;
            client.close().await;
            result
        }
        Command::Queue(command) => {
            let client = db.connect().await?;
            let result = ops::queue(&client, command, &output).await;
            client.close().await;
            result
        }
        Command::Schedule(command) => {
            let client = db.connect().await?;
            let result = ops::schedule(&client, command, &output).await;
            client.close().await;
            result
        }
        Command::Retention(args) => {
            let client = db.connect().await?;
            let result = ops::retention(&client, args, &output).await;
            client.close().await;
            result
        }
        Command::Migrate(args) => ops::migrate(&db, args, &output).await,
        Command::Reset(args) => ops::reset(&db, args, &output).await,
        Command::Dashboard(args) => {
            let client = db.connect().await?;
            ops::dashboard(client, args, &output).await
        }
    }
}

/// The system database a command works on.
pub struct Database {
    /// Its URL.
    pub url: String,
    /// The URL with its password masked, for messages.
    pub shown: String,
    /// How to connect.
    pub options: cairn::ClientOptions,
}

impl Database {
    /// The database `--db` or `DBOS_SYSTEM_DATABASE_URL` names; an existing SQLite file's
    /// path is taken as its `sqlite:` URL. Neither given is a usage error listing the
    /// `*.sqlite` files in the current directory.
    fn of(cli: &Cli) -> Outcome<Self> {
        let Some(given) = cli.db.as_deref().filter(|u| !u.is_empty()) else {
            return Err(Failure::Usage(no_database_message()));
        };
        let url = if given.contains("://") || given.starts_with("sqlite:") {
            given.to_owned()
        } else if std::path::Path::new(given).is_file()
            || [".sqlite", ".sqlite3", ".db"]
                .iter()
                .any(|suffix| given.ends_with(suffix))
        {
            format!("sqlite:///{given}")
        } else {
            return Err(Failure::Usage(format!(
                "malformed system database URL `{}`: expected postgres://user@host/database or sqlite:///path/to/file.sqlite",
                redact(given)
            )));
        };
        if !(url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.starts_with("sqlite:"))
        {
            return Err(Failure::Usage(format!(
                "malformed system database URL `{}`: expected postgres://user@host/database or sqlite:///path/to/file.sqlite",
                redact(&url)
            )));
        }
        let options = cairn::ClientOptions::default()
            .schema(cli.schema.clone())
            .pool_size(2)
            .connect_timeout(cli.connect_timeout);
        Ok(Self {
            shown: redact(&url),
            url,
            options,
        })
    }

    /// Connect a client. Failing to is a database failure that names the URL.
    async fn connect(&self) -> Outcome<cairn::Client> {
        cairn::Client::connect_with(&self.url, self.options.clone())
            .await
            .map_err(|e| self.connect_failure(e))
    }

    /// A failure to reach or use the database, naming it.
    pub fn connect_failure(&self, error: cairn::Error) -> Failure {
        match error {
            cairn::Error::Config(m) => Failure::Usage(m.replace(&self.url, &self.shown)),
            cairn::Error::SchemaVersion { found: 0, .. } => Failure::Database(format!(
                "{} holds no system database; create it with `cairn migrate --db {}` (or launch a Cairn application on it)",
                self.shown, self.shown
            )),
            cairn::Error::SchemaVersion { .. } => Failure::Database(error.to_string()),
            cairn::Error::Database { source, .. } => {
                Failure::Database(format!("cannot connect to {}: {source}", self.shown))
            }
            e => Failure::Database(format!("cannot connect to {}: {e}", self.shown)),
        }
    }
}

/// The error when no database is given: what to pass, and the SQLite files here.
fn no_database_message() -> String {
    let mut candidates: Vec<String> = std::fs::read_dir(".")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.ends_with(".sqlite")
                .then(|| format!("sqlite:///{name}"))
        })
        .collect();
    candidates.sort();
    let mut message =
        "no system database given: pass --db URL or set DBOS_SYSTEM_DATABASE_URL".to_owned();
    if candidates.is_empty() {
        message.push_str(" (no *.sqlite file in the current directory)");
    } else {
        message.push_str(&format!(
            " (candidates in the current directory: {})",
            candidates.join(", ")
        ));
    }
    message
}

/// A URL with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Passwords are masked; URLs without one are left alone.
    #[test]
    fn passwords_are_masked_in_urls() {
        assert_eq!(
            redact("postgres://u:secret@host:5432/db?sslmode=require"),
            "postgres://u:***@host:5432/db?sslmode=require"
        );
        assert_eq!(redact("postgres://u@host/db"), "postgres://u@host/db");
        assert_eq!(redact("sqlite:///x.sqlite"), "sqlite:///x.sqlite");
        assert_eq!(redact("postgres://u:p@[bad/x"), "postgres://u:***@[bad/x");
    }

    /// `Error::NotFound` becomes a sentence naming the kind of thing.
    #[test]
    fn unknown_things_are_named() {
        assert_eq!(unknown("abc"), "unknown workflow id abc");
        assert_eq!(unknown("schedule nightly"), "unknown schedule nightly");
    }

    /// Messages are printed on one line, whatever the error's own line breaks.
    #[test]
    fn messages_fit_on_one_line() {
        let failure = Failure::Operation("a\n  b\tc".to_owned());
        assert_eq!(failure.message(), "a b c");
        assert_eq!(failure.code(), 1);
    }
}
