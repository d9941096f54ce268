//! A PostgreSQL server of one test's own (`testsuite` feature), for tests
//! that stop and restart the database — never the shared one on port 5432.
//!
//! [`PrivatePostgres::create`] runs `initdb` into a temporary folder and
//! starts the server on a free port of 127.0.0.1 with trust authentication;
//! [`PrivatePostgres::stop`] and [`PrivatePostgres::start`] take it down and
//! bring it back on the same port with its data; dropping it stops
//! the server and deletes the folder. The server runs without fsync: a
//! restart keeps every committed row, a crash of the machine would not.
//! It starts in well under a second (`initdb` about 0.6 s, `pg_ctl start`
//! about 0.15 s here).
//!
//! PostgreSQL refuses to run as root: as root, the programs run as the
//! `postgres` user (through `runuser`), which then owns the folder.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian installs PostgreSQL's programs, one folder per major version.
const INSTALLS: &str = "/usr/lib/postgresql";

/// The user the programs run as when this process is root.
const SERVER_USER: &str = "postgres";

/// A private PostgreSQL server; see the module documentation.
#[derive(Debug)]
pub struct PrivatePostgres {
    port: u16,
    bin: PathBuf,
    folder: tempfile::TempDir,
    running: bool,
}

impl PrivatePostgres {
    /// Creates a cluster in a temporary folder and starts it on a free port;
    /// panics when PostgreSQL is not installed or does not start.
    pub fn create() -> Self {
        let bin = newest_install();
        let folder = tempfile::tempdir().expect("a temporary folder");
        let port = free_port();
        let mut server = PrivatePostgres { port, bin, folder, running: false };
        server.hand_over_folder();
        let data = server.data().display().to_string();
        server.run("initdb", &["-D", &data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]);
        server.start();
        server
    }

    /// The store URL of the server's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Shuts the server down as an administrator's restart would (`pg_ctl
    /// stop -m fast`): open sessions are ended and the port stops answering.
    /// Returns once the server is down.
    pub fn stop(&mut self) {
        let data = self.data().display().to_string();
        self.run("pg_ctl", &["stop", "-D", &data, "-m", "fast", "-w"]);
        self.running = false;
    }

    /// Starts the server on its port with the data it had; returns once it
    /// accepts connections.
    pub fn start(&mut self) {
        let data = self.data().display().to_string();
        let log = self.folder.path().join("server.log").display().to_string();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.folder.path().display()
        );
        self.run("pg_ctl", &["start", "-D", &data, "-l", &log, "-w", "-o", &options]);
        self.running = true;
    }

    fn data(&self) -> PathBuf {
        self.folder.path().join("data")
    }

    /// Gives the folder to the server's user when this process is root.
    fn hand_over_folder(&self) {
        if !is_root() {
            return;
        }
        let output =
            Command::new("chown").arg(format!("{SERVER_USER}:")).arg(self.folder.path()).output().expect("chown runs");
        assert!(output.status.success(), "chown {SERVER_USER}: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// One of PostgreSQL's programs, to run as the server's user.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", SERVER_USER, "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// Runs one of PostgreSQL's programs to its end; panics when it fails, with its output.
    fn run(&self, program: &str, args: &[&str]) {
        let output =
            self.command(program).args(args).output().unwrap_or_else(|error| panic!("running {program}: {error}"));
        if !output.status.success() {
            let log = std::fs::read_to_string(self.folder.path().join("server.log")).unwrap_or_default();
            panic!(
                "{program} {} failed: {}\n{}\nserver log:\n{log}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

impl Drop for PrivatePostgres {
    /// Stops the server at once (`-m immediate`: nothing needs to survive),
    /// then the temporary folder goes with its data.
    fn drop(&mut self) {
        if self.running {
            let data = self.data().display().to_string();
            let _ = self.command("pg_ctl").args(["stop", "-D", &data, "-m", "immediate", "-w"]).output();
        }
    }
}

/// A port of 127.0.0.1 that nothing listens on, below the ephemeral range:
/// the system never hands it out as the local port of a connection, so it
/// stays free for the server while the cluster is created, and while the
/// server is down.
fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    const LOWEST: u16 = 10_000;
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let ephemeral = range.split_whitespace().next().and_then(|low| low.parse::<u16>().ok()).unwrap_or(32_768);
    let span = u64::from(ephemeral.saturating_sub(LOWEST).max(1));
    let random = RandomState::new();
    (0..100u64)
        .map(|attempt| LOWEST + (random.hash_one(attempt) % span) as u16)
        .find(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// The programs of the newest PostgreSQL installed.
fn newest_install() -> PathBuf {
    let versions = std::fs::read_dir(INSTALLS)
        .unwrap_or_else(|error| panic!("PostgreSQL is not installed in {INSTALLS}: {error}"));
    versions
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse::<u32>().ok()?, entry.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
        .unwrap_or_else(|| panic!("no PostgreSQL with initdb under {INSTALLS}"))
}

/// Whether this process runs as root (the owner of its own `/proc` entry).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(Path::new("/proc/self")).map(|m| m.uid() == 0).unwrap_or(false)
}
