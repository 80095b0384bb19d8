//! A throw-away PostgreSQL server for tests that stop and restart the database.
//!
//! [`PgServer::init`] runs the machine's own `initdb` into a fresh temporary directory; the
//! server listens on a free port of 127.0.0.1 (its unix socket lives in the same directory),
//! with trust authentication for the user `postgres` and no fsync. Tests may stop it (fast or
//! immediate) and start it again on the same port and data; dropping it stops the server and
//! removes the directory.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, every server binary runs as
//! the `postgres` user (through `runuser`), and the directory belongs to that user.
//!
//! No PostgreSQL installed is a test failure with a clear message, never a silent skip.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a start or a stop may take before the test fails.
const PG_CTL_TIMEOUT_SECS: u32 = 60;

/// How `pg_ctl stop` shuts the server down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnect every client, roll back open transactions, checkpoint, exit.
    Fast,
    /// Kill every server process at once, as a crash would; the next start recovers from
    /// the write-ahead log.
    Immediate,
}

impl StopMode {
    /// The `-m` argument of `pg_ctl stop`.
    fn as_arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A PostgreSQL server of the test's own, in a temporary directory.
pub struct PgServer {
    /// The temporary directory holding everything (data, socket, log).
    root: PathBuf,
    /// The directory of `initdb`, `pg_ctl` and `postgres`.
    bindir: PathBuf,
    /// The TCP port on 127.0.0.1.
    port: u16,
    /// Whether the binaries run as the `postgres` user (the tests run as root).
    as_postgres: bool,
    /// Whether the server was started and not stopped since.
    running: AtomicBool,
}

impl PgServer {
    /// Create a new, stopped server: find the binaries, pick a port, `initdb` a fresh
    /// cluster. Fails the test (with what to install) if PostgreSQL is not on the machine.
    pub async fn init() -> Self {
        let bindir = find_bindir();
        let as_postgres = running_as_root().await;
        let root = std::env::temp_dir().join(format!("cairn-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(root.join("sock")).expect("create the server's directory");
        let server = Self {
            root,
            bindir,
            port: free_port(),
            as_postgres,
            running: AtomicBool::new(false),
        };
        if as_postgres {
            let status = tokio::process::Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&server.root)
                .status()
                .await
                .expect("run chown");
            assert!(
                status.success(),
                "cannot give {} to the postgres user (does the user exist?)",
                server.root.display()
            );
        }
        let data = server.data_dir();
        server
            .run_checked(
                "initdb",
                &[
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-U".as_ref(),
                    "postgres".as_ref(),
                    "--auth=trust".as_ref(),
                    "--no-sync".as_ref(),
                    "--encoding=UTF8".as_ref(),
                    "--locale=C".as_ref(),
                ],
            )
            .await;
        // Settings go into the configuration file, so a restart uses the same ones. No fsync
        // only risks data if the machine itself crashes; an immediate stop kills the server's
        // processes, not the OS, so every commit reported must survive it. (No
        // `synchronous_commit = off`: that would lose acknowledged commits at an immediate
        // stop, and the test would blame Cairn for the server's choice.)
        let settings = format!(
            "\n# cairn chaos tests\nport = {}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nfsync = off\n\
             full_page_writes = off\nmax_connections = 200\n",
            server.port,
            server.root.join("sock").display()
        );
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("read postgresql.conf");
        text.push_str(&settings);
        std::fs::write(&conf, text).expect("write postgresql.conf");
        server
    }

    /// Create and start a server (see [`PgServer::init`]).
    pub async fn start_new() -> Self {
        let server = Self::init().await;
        server.start().await;
        server
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the database `database` on this server (user `postgres`, no password).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Start the server and wait until it accepts connections.
    pub async fn start(&self) {
        let data = self.data_dir();
        let log = self.root.join("server.log");
        let timeout = PG_CTL_TIMEOUT_SECS.to_string();
        self.run_checked(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                timeout.as_ref(),
            ],
        )
        .await;
        self.running.store(true, Ordering::SeqCst);
        self.wait_accepting().await;
    }

    /// Stop the server (`pg_ctl stop -m fast|immediate`) and wait until it is gone.
    pub async fn stop(&self, mode: StopMode) {
        let data = self.data_dir();
        let timeout = PG_CTL_TIMEOUT_SECS.to_string();
        self.run_checked(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                mode.as_arg().as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                timeout.as_ref(),
            ],
        )
        .await;
        self.running.store(false, Ordering::SeqCst);
    }

    /// The last lines of the server's log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// A command running the server binary `program`, as `postgres` when the tests are root.
    fn command(&self, program: &str) -> std::process::Command {
        let binary = self.bindir.join(program);
        let mut command = if self.as_postgres {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(binary);
            command
        } else {
            std::process::Command::new(binary)
        };
        // The test's working directory may be unreadable to `postgres`.
        command.current_dir(&self.root);
        command
    }

    /// Run a server binary to completion; fail the test with its output if it fails.
    async fn run_checked(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let mut command = tokio::process::Command::from(self.command(program));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = command
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            output.status.success(),
            "`{program} {}` failed ({}):\n{}{}\nserver log:\n{}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log_tail(30)
        );
    }

    /// Wait until a client can connect over TCP and run a query (`pg_ctl -w` checks the
    /// postmaster's own status, which can precede the TCP listener by a moment).
    async fn wait_accepting(&self) {
        let url = self.url("postgres");
        let deadline = Instant::now() + Duration::from_secs(PG_CTL_TIMEOUT_SECS.into());
        loop {
            match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    let connection = tokio::spawn(connection);
                    let answered = client.simple_query("SELECT 1").await.is_ok();
                    drop(client);
                    let _ = connection.await;
                    if answered {
                        return;
                    }
                }
                Err(error) => assert!(
                    Instant::now() < deadline,
                    "the throw-away server on port {} never accepted connections: {error}\n{}",
                    self.port,
                    self.log_tail(30)
                ),
            }
            // Pacing between connection attempts while the server finishes starting.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running.load(Ordering::SeqCst) {
            let _ = self
                .command("pg_ctl")
                .arg("stop")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The directory of the newest installed PostgreSQL's server binaries.
fn find_bindir() -> PathBuf {
    let has_server = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    // Debian and Ubuntu: /usr/lib/postgresql/<major>/bin, newest major first.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_server(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    // Elsewhere: ask pg_config.
    if let Ok(output) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
    {
        let bin = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_server(&bin) {
            return bin;
        }
    }
    panic!(
        "the chaos tests need PostgreSQL's server binaries (initdb, pg_ctl, postgres) to start \
         a throw-away server, and none were found in /usr/lib/postgresql/*/bin or \
         `pg_config --bindir`: install PostgreSQL (e.g. `apt-get install postgresql`)"
    );
}

/// Whether this process runs as root (then the server must run as `postgres`).
async fn running_as_root() -> bool {
    let output = tokio::process::Command::new("id")
        .arg("-u")
        .output()
        .await
        .expect("run `id -u`");
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a free port")
        .port()
}
