//! The command line, as clap reads it.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Inspect and manage the workflows, queues and schedules of a Cairn or DBOS system database.
#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about,
    propagate_version = true,
    after_help = "Examples:\n  cairn --db sqlite:///app.sqlite workflow list --status ERROR --since 1h\n  cairn --db postgres://postgres@localhost/app workflow get <ID>\n  cairn workflow cancel <ID>... --with-descendants      (database from DBOS_SYSTEM_DATABASE_URL)\n  cairn --json queue list | jq '.[] | {name, enqueued, running}'\n\nExit codes: 0 done, 1 the operation failed, 2 bad usage, 3 database unreachable or without a system database."
)]
pub struct Cli {
    /// The system database: postgres://… or sqlite:///path (a path to a SQLite file works
    /// too). Default: $DBOS_SYSTEM_DATABASE_URL.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "DBOS_SYSTEM_DATABASE_URL",
        hide_env_values = true
    )]
    pub db: Option<String>,

    /// Print one JSON document on stdout instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// The Postgres schema holding the system tables.
    #[arg(long, global = true, value_name = "NAME", default_value = "dbos")]
    pub schema: String,

    /// How long to keep trying while the database is unreachable (e.g. 5s, 1m).
    #[arg(long, global = true, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List, inspect, cancel, resume, fork and delete workflows.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// Show queues: depth, running workflows, limits.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// List, pause, resume, trigger and backfill schedules.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Create the system database (or check it with --check).
    Migrate(MigrateArgs),
    /// Drop the system database and create it again, empty.
    Reset(ResetArgs),
    /// Serve the web dashboard until Ctrl-C.
    Dashboard(DashboardArgs),
    /// Delete old finished workflows.
    Retention(RetentionArgs),
}

/// `cairn workflow …`
#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// List workflows, newest first.
    List(ListArgs),
    /// Show one workflow: its status, inputs, output or error.
    Get {
        /// The workflow id.
        id: String,
    },
    /// List the steps a workflow has recorded.
    Steps {
        /// The workflow id.
        id: String,
    },
    /// Cancel workflows.
    Cancel {
        /// The workflow ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Also cancel every workflow they started, transitively.
        #[arg(long)]
        with_descendants: bool,
    },
    /// Resume cancelled or stuck workflows from their last checkpoint.
    Resume {
        /// The workflow ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Start a new workflow from a step of an existing one.
    Fork {
        /// The workflow to fork.
        id: String,
        /// The step to restart from (1 runs everything again).
        #[arg(long, value_name = "N")]
        step: u32,
        /// The new workflow's id (default: a new UUID).
        #[arg(long = "id", value_name = "NEW_ID")]
        new_id: Option<String>,
        /// The application version that runs the fork.
        #[arg(long, value_name = "V")]
        app_version: Option<String>,
        /// The queue to enqueue the fork on.
        #[arg(long, value_name = "Q")]
        queue: Option<String>,
    },
    /// Delete workflows and everything recorded for them.
    Delete {
        /// The workflow ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Also delete every workflow they started, transitively.
        #[arg(long)]
        with_children: bool,
    },
}

/// The filters of `cairn workflow list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only these statuses (repeatable, or comma-separated): SUCCESS, ERROR, PENDING, …
    #[arg(long, value_delimiter = ',', value_name = "STATUS")]
    pub status: Vec<String>,
    /// Only workflows of this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Only workflows on this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only workflows created at or after this time (RFC 3339, or an age such as 1h, 2d).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only workflows created before this time (RFC 3339, or an age such as 1h, 2d).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only workflows of this executor id.
    #[arg(long)]
    pub executor: Option<String>,
    /// Only workflows of this application version.
    #[arg(long)]
    pub app_version: Option<String>,
    /// Only workflows with this attribute (repeatable): key=value, the value as JSON or a string.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_attribute)]
    pub attribute: Vec<(String, serde_json::Value)>,
    /// At most this many workflows.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Skip this many workflows first.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
}

/// `cairn queue …`
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Every queue with workflows or a stored definition.
    List,
}

/// `cairn schedule …`
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Every schedule.
    List,
    /// Stop a schedule from firing.
    Pause {
        /// The schedule's name.
        name: String,
    },
    /// Let a paused schedule fire again.
    Resume {
        /// The schedule's name.
        name: String,
    },
    /// Start a schedule's workflow now.
    Trigger {
        /// The schedule's name.
        name: String,
    },
    /// Start the workflows of every tick between two times.
    Backfill {
        /// The schedule's name.
        name: String,
        /// From (exclusive): RFC 3339, or an age such as 2d.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        from: chrono::DateTime<chrono::Utc>,
        /// To (exclusive): RFC 3339, an age such as 1h, or `now`.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        to: chrono::DateTime<chrono::Utc>,
    },
}

/// `cairn migrate`
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Only check that the schema exists and is current; write nothing.
    #[arg(long)]
    pub check: bool,
}

/// `cairn reset`
#[derive(Debug, Args)]
pub struct ResetArgs {
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `cairn dashboard`
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// The address to listen on (any other than loopback needs --token).
    #[arg(long, default_value = "127.0.0.1:3001")]
    pub addr: SocketAddr,
    /// The bearer token requests must carry.
    #[arg(long, env = "CAIRN_DASHBOARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `cairn retention`
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RetentionArgs {
    /// Delete finished workflows created longer ago than this (e.g. 30d).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub older_than: Option<Duration>,
    /// Keep only the newest N finished workflows.
    #[arg(long, value_name = "N")]
    pub keep: Option<u64>,
}

/// A duration such as `30s`, `5m`, `2d`, `1h 30m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (expected e.g. 30s, 5m, 2d)"))
}

/// An instant: RFC 3339, `now`, or an age (`1h`: an hour ago).
pub fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if text.eq_ignore_ascii_case("now") {
        return Ok(chrono::Utc::now());
    }
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&chrono::Utc));
    }
    let age = humantime::parse_duration(text).map_err(|_| {
        format!("`{text}` is neither an RFC 3339 time (2026-01-31T12:00:00Z) nor an age (1h, 2d)")
    })?;
    let age = chrono::Duration::from_std(age).map_err(|e| format!("`{text}`: {e}"))?;
    chrono::Utc::now()
        .checked_sub_signed(age)
        .ok_or_else(|| format!("`{text}` is too far back"))
}

/// `key=value`: the value as JSON if it parses, else as a string.
fn parse_attribute(text: &str) -> Result<(String, serde_json::Value), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not key=value"))?;
    if key.is_empty() {
        return Err(format!("`{text}` has an empty key"));
    }
    let value =
        serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
    Ok((key.to_owned(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Times are RFC 3339, `now`, or an age before now.
    #[test]
    fn times_parse_as_instants_or_ages() {
        let exact = parse_time("2026-01-31T12:00:00Z").unwrap();
        assert_eq!(exact.to_rfc3339(), "2026-01-31T12:00:00+00:00");
        let hour_ago = parse_time("1h").unwrap();
        let age = chrono::Utc::now() - hour_ago;
        assert!((age.num_seconds() - 3600).abs() < 5, "{age}");
        assert!(parse_time("now").is_ok());
        assert!(parse_time("yesterday-ish").is_err());
    }

    /// Attribute values are JSON when they parse, else strings.
    #[test]
    fn attributes_read_json_or_text() {
        assert_eq!(
            parse_attribute("count=3").unwrap(),
            ("count".to_owned(), serde_json::json!(3))
        );
        assert_eq!(
            parse_attribute("region=eu").unwrap(),
            ("region".to_owned(), serde_json::json!("eu"))
        );
        assert!(parse_attribute("novalue").is_err());
        assert!(parse_attribute("=x").is_err());
    }
}
