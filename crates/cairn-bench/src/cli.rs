//! The command line: `<workload> [--db URL] [--n N]`, parsed by hand.

use crate::error::BenchError;

/// The usage text, printed by `--help` and after a command-line error.
pub const USAGE: &str = "\
usage: cairn-bench <workload> [--db URL] [--n N]

workloads:
  w1   one workflow of 10 no-op steps at a time, N times (default 200)
  w2   N workflows of 10 no-op steps started at once (default 1000)
  w4   an empty workflow, N times in a row (default 200)
  w5   a message sent to a waiting workflow until its recv returns, N times (default 100)

options:
  --db URL   postgres://user@host:port[/db]: benchmark in a fresh database on that server,
             dropped afterwards; sqlite:path: use that file as it is (kept afterwards).
             Default: a temporary SQLite file, deleted afterwards.
  --n N      how many measured workflows, or messages for w5 (warm-up runs come on top)";

/// A benchmark workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// One workflow of ten no-op steps at a time: the cost of a step.
    W1,
    /// Many workflows of ten no-op steps at once: throughput under concurrency.
    W2,
    /// An empty workflow at a time: the fixed cost of a workflow.
    W4,
    /// A message to a waiting workflow at a time: the latency of `send` to `recv`.
    W5,
}

impl Workload {
    /// The workload named on the command line.
    fn parse(name: &str) -> Option<Self> {
        match name {
            "w1" => Some(Self::W1),
            "w2" => Some(Self::W2),
            "w4" => Some(Self::W4),
            "w5" => Some(Self::W5),
            _ => None,
        }
    }

    /// The name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::W1 => "w1",
            Self::W2 => "w2",
            Self::W4 => "w4",
            Self::W5 => "w5",
        }
    }

    /// Measured workflows when `--n` is not given.
    fn default_n(self) -> usize {
        match self {
            Self::W1 | Self::W4 => 200,
            Self::W2 => 1000,
            Self::W5 => 100,
        }
    }

    /// Workflows (w5: messages) run in the workload's own pattern before measuring, not counted.
    pub fn warm_up(self) -> usize {
        match self {
            Self::W1 | Self::W4 => 20,
            Self::W2 => 100,
            Self::W5 => 10,
        }
    }

    /// No-op steps per workflow.
    pub fn steps_per_workflow(self) -> u32 {
        match self {
            Self::W1 | Self::W2 => 10,
            Self::W4 | Self::W5 => 0,
        }
    }

    /// Database connections for Cairn: enough for the workload's concurrency.
    pub fn pool_size(self) -> usize {
        match self {
            Self::W1 | Self::W4 | Self::W5 => 4,
            Self::W2 => 32,
        }
    }
}

/// A benchmark run, as asked for on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Which workload to run.
    pub workload: Workload,
    /// The `--db` URL; `None` for a temporary SQLite file.
    pub db: Option<String>,
    /// Measured workflows.
    pub n: usize,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run a benchmark.
    Run(Options),
    /// Print the usage text.
    Help,
}

/// Parse the arguments after the program name. Flags take `--flag value` or `--flag=value`.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, BenchError> {
    let invalid = |why: String| BenchError::new("reading the command line", why);
    let mut args = args.into_iter();
    let mut workload = None;
    let mut db = None;
    let mut n = None;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| invalid(format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--db" => db = Some(value()?),
            "--n" => {
                let text = value()?;
                let parsed = text
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| {
                        invalid(format!("--n must be a positive integer, not `{text}`"))
                    })?;
                n = Some(parsed);
            }
            _ if flag.starts_with('-') => return Err(invalid(format!("unknown option `{flag}`"))),
            name if workload.is_none() => {
                workload = Some(
                    Workload::parse(name)
                        .ok_or_else(|| invalid(format!("unknown workload `{name}`")))?,
                );
            }
            extra => return Err(invalid(format!("unexpected argument `{extra}`"))),
        }
    }
    let workload = workload.ok_or_else(|| invalid("no workload given".to_owned()))?;
    Ok(Command::Run(Options {
        workload,
        db,
        n: n.unwrap_or_else(|| workload.default_n()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(line: &str) -> Result<Command, BenchError> {
        parse(line.split_whitespace().map(str::to_owned))
    }

    /// A bare workload runs with its default count on the default database.
    #[test]
    fn a_bare_workload_takes_its_defaults() {
        let command = parse_words("w2").expect("parses");
        assert_eq!(
            command,
            Command::Run(Options {
                workload: Workload::W2,
                db: None,
                n: 1000
            })
        );
    }

    /// Flags are accepted before or after the workload, with a space or an `=`.
    #[test]
    fn flags_take_a_space_or_an_equals_sign() {
        let command = parse_words("--n=5 w1 --db postgres://h/x").expect("parses");
        assert_eq!(
            command,
            Command::Run(Options {
                workload: Workload::W1,
                db: Some("postgres://h/x".to_owned()),
                n: 5
            })
        );
    }

    /// Every malformed command line is refused rather than guessed at.
    #[test]
    fn malformed_command_lines_are_refused() {
        for line in [
            "",
            "w3",
            "w1 w2",
            "w1 --n",
            "w1 --n 0",
            "w1 --n ten",
            "w1 --fast",
        ] {
            assert!(parse_words(line).is_err(), "accepted `{line}`");
        }
    }
}
