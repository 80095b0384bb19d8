//! The command line: `<workload> [--db URL] [--n N] [--prefill M]`, parsed with clap (plus
//! the hidden `--interrupted-child URL` of w6 and backlog, with which the bench starts itself
//! as the process it kills).

use clap::{ArgAction, Parser, ValueEnum};

/// The command line as clap parses it; [`Cli::into_options`] fills in the per-workload defaults.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "cairn-bench",
    about = "Cairn's benchmark harness: run one workload on a fresh database and print one JSON \
             line describing it.",
    override_usage = "cairn-bench <workload> [--db URL] [--n N] [--prefill M] [--evict-after-ms MS]",
    disable_help_flag = true
)]
pub struct Cli {
    /// Which workload to run
    #[arg(value_enum, value_name = "workload")]
    pub workload: Workload,

    /// postgres://user@host:port[/db]: benchmark in a fresh database on that server,
    /// dropped afterwards; sqlite:path: use that file as it is (kept afterwards).
    /// Default: a temporary SQLite file, deleted afterwards.
    #[arg(long, value_name = "URL", verbatim_doc_comment)]
    pub db: Option<String>,

    /// How many measured workflows, or messages for w5 (warm-up runs come on top)
    #[arg(long, value_name = "N", value_parser = positive)]
    pub n: Option<usize>,

    /// w1 and w2 only: before measuring, fill the fresh database with M finished workflows
    /// of 10 steps each (bulk SQL), to measure on a long history. Default: 0
    #[arg(long, value_name = "M", default_value_t = 0)]
    pub prefill: u64,

    /// park only: evict a workflow from memory once it has waited MS milliseconds (Cairn's
    /// `evict_after`), and read the memory once every parked workflow has been evicted.
    /// Default: Cairn's own (60 s, so nothing is evicted unless 10,000 are in memory)
    #[arg(long, value_name = "MS")]
    pub evict_after_ms: Option<u64>,

    /// Internal (w6, backlog): run the workflows to be interrupted on this Cairn database URL, say
    /// `ready` once all are blocked, and wait to be killed.
    #[arg(long, value_name = "CAIRN_URL", hide = true)]
    pub interrupted_child: Option<String>,

    /// Print this help
    #[arg(short, long, action = ArgAction::HelpLong)]
    help: Option<bool>,
}

impl Cli {
    /// The run asked for, with `--n` defaulting to the workload's [`Workload::default_n`].
    pub fn into_options(self) -> Options {
        Options {
            workload: self.workload,
            db: self.db,
            n: self.n.unwrap_or_else(|| self.workload.default_n()),
            prefill: self.prefill,
            evict_after_ms: self.evict_after_ms,
            interrupted_child: self.interrupted_child,
        }
    }
}

/// Parse `--n`: a positive integer.
fn positive(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| "must be a positive integer".to_owned())
}

/// A benchmark workload.
///
/// The doc comment of each variant is its `--help` line; the rest of the rationale is here:
/// w1 measures the cost of a step, w2 throughput under concurrency, w3 a queue's throughput
/// and its enqueue-to-start latency, w4 the fixed cost of a workflow, w5 the latency of
/// `send` to `recv`, w6 how fast a restart recovers workflows a crash interrupted, park what
/// a waiting workflow costs in memory and how fast waiting workflows wake, and backlog a
/// launch that must recover a large number of interrupted workflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// One workflow of 10 no-op steps at a time, N times (default 200)
    W1,
    /// N workflows of 10 no-op steps started at once (default 1000); reports the peak RSS
    W2,
    /// N one-step workflows enqueued at once on a queue of worker concurrency 50 (default
    /// 2000), then 200 enqueued one at a time for the enqueue-to-start latency
    W3,
    /// An empty workflow, N times in a row (default 200)
    W4,
    /// A message sent to a waiting workflow until its recv returns, N times (default 100)
    W5,
    /// N workflows (default 1000) blocked in a durable sleep or a recv after one step, their
    /// process killed with SIGKILL; time from the relaunch until all have completed
    W6,
    /// list_workflows with a status filter and limit 100 over 100,000 workflows, through a
    /// standalone client, N calls (default 200)
    List,
    /// The dashboard's workflows page (GET /api/workflows, 50 rows) over 100,000 workflows,
    /// through Cairn's admin HTTP server, N requests (default 200)
    Dashboard,
    /// N workflows (default 10000) parked in recv after one step: memory per parked
    /// workflow (RSS), then each sent its message in random order: wake-up throughput
    Park,
    /// N workflows (default 10000) blocked in recv after one step, their process killed with
    /// SIGKILL; Cairn launched again, then the messages sent: launch time, first and last
    /// completion, peak RSS
    Backlog,
}

impl Workload {
    /// The name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::W1 => "w1",
            Self::W2 => "w2",
            Self::W3 => "w3",
            Self::W4 => "w4",
            Self::W5 => "w5",
            Self::W6 => "w6",
            Self::List => "list",
            Self::Dashboard => "dashboard",
            Self::Park => "park",
            Self::Backlog => "backlog",
        }
    }

    /// Measured workflows when `--n` is not given.
    pub fn default_n(self) -> usize {
        match self {
            Self::W1 | Self::W4 | Self::List | Self::Dashboard => 200,
            Self::W2 | Self::W6 => 1000,
            Self::W3 => 2000,
            Self::W5 => 100,
            Self::Park | Self::Backlog => 10_000,
        }
    }

    /// Workflows (w5: messages) run in the workload's own pattern before measuring, not counted.
    pub fn warm_up(self) -> usize {
        match self {
            Self::W1 | Self::W4 | Self::List | Self::Dashboard => 20,
            Self::W2 | Self::W3 => 100,
            Self::W5 => 10,
            Self::W6 | Self::Park | Self::Backlog => 0,
        }
    }

    /// No-op steps per workflow.
    pub fn steps_per_workflow(self) -> u32 {
        match self {
            Self::W1 | Self::W2 => 10,
            Self::W3 => 1,
            // w6's and backlog's one step is replayed, not run; park's is not the measure.
            Self::W4
            | Self::W5
            | Self::W6
            | Self::List
            | Self::Dashboard
            | Self::Park
            | Self::Backlog => 0,
        }
    }

    /// Database connections for Cairn: enough for the workload's concurrency.
    pub fn pool_size(self) -> usize {
        match self {
            Self::W1 | Self::W4 | Self::W5 | Self::List | Self::Dashboard => 4,
            Self::W2 | Self::W3 | Self::W6 | Self::Park | Self::Backlog => 32,
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
    /// w1 and w2: finished workflows written into the database before measuring.
    pub prefill: u64,
    /// park: Cairn's `evict_after`, in milliseconds, when given.
    pub evict_after_ms: Option<u64>,
    /// w6's child process: the Cairn database URL it runs on.
    pub interrupted_child: Option<String>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Parse a command line given as words after the program name.
    fn parse_words(line: &str) -> Result<Options, clap::Error> {
        Cli::try_parse_from(std::iter::once("cairn-bench").chain(line.split_whitespace()))
            .map(Cli::into_options)
    }

    /// clap's own consistency checks on the command definition pass.
    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// A bare workload runs with its default count on the default database.
    #[test]
    fn a_bare_workload_takes_its_defaults() {
        let options = parse_words("w2").expect("parses");
        assert_eq!(
            options,
            Options {
                workload: Workload::W2,
                db: None,
                n: 1000,
                prefill: 0,
                evict_after_ms: None,
                interrupted_child: None,
            }
        );
    }

    /// Flags are accepted before or after the workload, with a space or an `=`.
    #[test]
    fn flags_take_a_space_or_an_equals_sign() {
        let options = parse_words("--n=5 w1 --db postgres://h/x").expect("parses");
        assert_eq!(
            options,
            Options {
                workload: Workload::W1,
                db: Some("postgres://h/x".to_owned()),
                n: 5,
                prefill: 0,
                evict_after_ms: None,
                interrupted_child: None,
            }
        );
        let options = parse_words("--db=sqlite:b.db w5 --n 7").expect("parses");
        assert_eq!(
            options,
            Options {
                workload: Workload::W5,
                db: Some("sqlite:b.db".to_owned()),
                n: 7,
                prefill: 0,
                evict_after_ms: None,
                interrupted_child: None,
            }
        );
    }

    /// `--prefill` takes a count, zero included.
    #[test]
    fn prefill_takes_a_count() {
        assert_eq!(
            parse_words("w1 --prefill 1000000").expect("parses").prefill,
            1_000_000
        );
        assert_eq!(parse_words("w2 --prefill=0").expect("parses").prefill, 0);
    }

    /// Every workload's command-line name is the one it reports under.
    #[test]
    fn workload_names_match_the_command_line() {
        for workload in Workload::value_variants() {
            let options = parse_words(workload.name()).expect("parses");
            assert_eq!(options.workload, *workload);
            assert_eq!(options.n, workload.default_n());
        }
    }

    /// `-h` and `--help` both ask for the full help, which lists every workload and option.
    #[test]
    fn help_lists_the_workloads_and_options() {
        for flag in ["-h", "--help"] {
            let error = parse_words(flag).expect_err("help is reported as an early exit");
            assert_eq!(error.kind(), clap::error::ErrorKind::DisplayHelp);
            let help = error.to_string();
            for word in [
                "w1",
                "w2",
                "w3",
                "w4",
                "w5",
                "w6",
                "park",
                "backlog",
                "--db",
                "--n",
                "--prefill",
                "warm-up",
            ] {
                assert!(help.contains(word), "`{flag}` help lacks `{word}`:\n{help}");
            }
        }
    }

    /// Every malformed command line is refused rather than guessed at.
    #[test]
    fn malformed_command_lines_are_refused() {
        for line in [
            "",
            "w7",
            "w1 w2",
            "w1 --n",
            "w1 --n 0",
            "w1 --n ten",
            "w1 --n -3",
            "w1 --fast",
            "w1 --db",
            "w1 --prefill",
            "w1 --prefill -1",
            "w1 --prefill many",
        ] {
            let error = parse_words(line).expect_err(line);
            assert_ne!(
                error.kind(),
                clap::error::ErrorKind::DisplayHelp,
                "`{line}`"
            );
        }
    }
}
