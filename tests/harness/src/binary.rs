//! The real `flagd` binary, started as a user starts it.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{ADMIN_TOKEN, START_TIMEOUT, SqliteFile, free_port};

/// What flagd logs once it listens.
const SERVING: &str = "flagd is serving";

/// Lines read from one of flagd's pipes, kept as they come.
type Lines = Arc<Mutex<Vec<String>>>;

/// The `flagd` binary of this workspace, beside the running test binary's folder
/// (`target/<profile>/flagd`); built there once (`cargo build -p flagd --bin flagd`) when
/// it is missing, as it is when only another package's tests were built. flagd's own
/// tests may rather use `env!("CARGO_BIN_EXE_flagd")` with [`Binary::at`].
pub fn flagd_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| workspace_binary("flagd", "flagd"))
        .clone()
}

/// The `flagctl` binary of this workspace, found or built as [`flagd_binary`] is.
pub fn flagctl_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| workspace_binary("flagctl", "flagctl"))
        .clone()
}

fn workspace_binary(package: &str, name: &str) -> PathBuf {
    built(package, "--bin", name, Path::new(name))
}

/// An example of this workspace (`target/<profile>/examples/<name>`), built once when
/// missing, as [`flagd_binary`] is.
pub(crate) fn workspace_example(package: &str, name: &str) -> PathBuf {
    built(
        package,
        "--example",
        name,
        &Path::new("examples").join(name),
    )
}

fn built(package: &str, kind: &str, name: &str, at: &Path) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> -> target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in target/<profile>/deps");
    let bin = dir.join(at);
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", package, kind, name]);
        if let Some(profile) = dir.file_name().filter(|p| *p != "debug") {
            build.arg("--profile").arg(profile);
        }
        let ok = build.status().is_ok_and(|s| s.success());
        assert!(ok, "building {name}: {build:?}");
    }
    bin
}

/// How to run the flagd binary: built with [`Binary::new`] (or [`Binary::at`]), then
/// [`Binary::start`]ed as a server or run to its exit with [`Binary::output`].
///
/// By default it serves a new [`SqliteFile`] on a free loopback port, with
/// `FLAGD_ADMIN_TOKEN` = [`ADMIN_TOKEN`] and `RUST_LOG=info`, its stdout discarded.
#[derive(Debug)]
pub struct Binary {
    exe: PathBuf,
    database_url: Option<String>,
    port: Option<u16>,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    record_stdout: bool,
    user: Option<(u32, u32)>,
    soft_open_files: Option<u64>,
}

impl Default for Binary {
    fn default() -> Self {
        Self::new()
    }
}

impl Binary {
    /// The workspace's flagd binary ([`flagd_binary`]).
    pub fn new() -> Self {
        Self::at(flagd_binary())
    }

    /// The flagd binary at `exe` (flagd's own tests: `env!("CARGO_BIN_EXE_flagd")`).
    pub fn at(exe: impl Into<PathBuf>) -> Self {
        Self {
            exe: exe.into(),
            database_url: None,
            port: None,
            args: Vec::new(),
            env: vec![
                ("FLAGD_ADMIN_TOKEN".into(), Some(ADMIN_TOKEN.into())),
                ("RUST_LOG".into(), Some("info".into())),
            ],
            record_stdout: false,
            user: None,
            soft_open_files: None,
        }
    }

    /// Serves this database (`--database-url`) instead of a new SQLite file: a file that
    /// outlives this flagd ([`SqliteFile::url`]), or [`crate::Postgres::database`].
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// Listens on 127.0.0.1 at this port (the same port across restarts) instead of a
    /// free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// One more argument, after `--listen` and `--database-url`.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// More arguments, after `--listen` and `--database-url`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for flagd.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.set_env(key.as_ref(), Some(value.as_ref().to_owned()));
        self
    }

    /// Removes an environment variable from flagd's environment.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.set_env(key.as_ref(), None);
        self
    }

    fn set_env(&mut self, key: &OsStr, value: Option<OsString>) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value));
    }

    /// The admin token flagd starts with (`FLAGD_ADMIN_TOKEN`); `None` starts it without
    /// one, as a first start that prints a new token does.
    pub fn admin_token(self, token: Option<&str>) -> Self {
        match token {
            Some(t) => self.env("FLAGD_ADMIN_TOKEN", t),
            None => self.env_remove("FLAGD_ADMIN_TOKEN"),
        }
    }

    /// Keeps what flagd prints on stdout (the one-time admin token, the UI's address):
    /// read with [`FlagdProcess::stdout`], returned by [`FlagdProcess::terminate`].
    pub fn record_stdout(mut self) -> Self {
        self.record_stdout = true;
        self
    }

    /// Runs flagd as this user and group (the tests run as root: a permission is only
    /// tested as another user). Give it a database that user can write: the default
    /// SQLite file's directory is root's.
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some((uid, gid));
        self
    }

    /// Runs flagd under this soft open-file limit (`ulimit -Sn`); the hard limit stays
    /// the machine's.
    pub fn soft_open_files(mut self, limit: u64) -> Self {
        self.soft_open_files = Some(limit);
        self
    }

    /// The command, and the SQLite file it serves when no database was given.
    fn command(&self, port: u16) -> (Command, String, Option<SqliteFile>) {
        let sqlite = self.database_url.is_none().then(SqliteFile::new);
        let database_url = match (&self.database_url, &sqlite) {
            (Some(url), _) => url.clone(),
            (None, Some(file)) => file.url(),
            (None, None) => unreachable!("a database either way"),
        };
        let mut cmd = match self.soft_open_files {
            Some(n) => {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("ulimit -Sn {n} && exec \"$0\" \"$@\""))
                    .arg(&self.exe);
                c
            }
            None => Command::new(&self.exe),
        };
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--database-url")
            .arg(&database_url)
            .args(&self.args);
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        (cmd, database_url, sqlite)
    }

    /// Runs flagd to its exit and returns what it printed: a start that must fail, or a
    /// sub-command given with [`Binary::arg`] (`migrate`, `check-config`).
    pub fn output(self) -> Output {
        let (mut cmd, _, _sqlite) = self.command(self.port.unwrap_or_else(free_port));
        cmd.stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
    }

    /// Starts flagd and returns once it logs `flagd is serving` (within
    /// [`START_TIMEOUT`]); panics with its log if it exits or hangs before.
    pub fn start(self) -> FlagdProcess {
        let port = self.port.unwrap_or_else(free_port);
        let (mut cmd, database_url, sqlite) = self.command(port);
        cmd.stdin(Stdio::null())
            .stderr(Stdio::piped())
            .stdout(if self.record_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let stderr = Lines::default();
        let (serving_tx, serving_rx) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr is piped");
        // The server must never block on a full pipe: its stderr is read to the end.
        let lines = stderr.clone();
        std::thread::spawn(move || {
            let mut told = false;
            read_lines(pipe, |line| {
                let serving = !told && line.contains(SERVING);
                let mut all = lines.lock().unwrap_or_else(|e| e.into_inner());
                all.push(line);
                if serving {
                    told = true;
                    let _ = serving_tx.send(Some(all.len() - 1));
                }
            });
            let _ = serving_tx.send(None);
        });
        let stdout = child.stdout.take().map(|pipe| {
            let lines = Lines::default();
            let keep = lines.clone();
            let thread = std::thread::spawn(move || {
                read_lines(pipe, |line| {
                    keep.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                });
            });
            (lines, thread)
        });
        let mut process = FlagdProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            database_url,
            stderr,
            serving_line: 0,
            stdout,
            _sqlite: sqlite,
        };
        match serving_rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(line)) => process.serving_line = line,
            Ok(None) => {
                let status = process.child.wait();
                // A port the harness picked can still be taken in between; pick again.
                if self.port.is_none() && process.log().contains("Address already in use") {
                    return self.start();
                }
                panic!(
                    "flagd exited before serving ({status:?}):\n{}",
                    process.log()
                );
            }
            Err(_) => panic!(
                "flagd did not serve within {START_TIMEOUT:?}:\n{}",
                process.log()
            ),
        }
        process
    }
}

/// Reads `pipe` to its end, a line at a time (not valid UTF-8: replaced, never a reason
/// to stop reading and let the pipe fill).
fn read_lines(pipe: impl Read, mut each: impl FnMut(String)) {
    let mut pipe = BufReader::new(pipe);
    let mut line = Vec::new();
    while pipe.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        let text = String::from_utf8_lossy(&line);
        each(text.trim_end_matches(['\n', '\r']).to_owned());
        line.clear();
    }
}

/// A running flagd process (see [`Binary::start`]). Killed (SIGKILL) when dropped, so a
/// failed test leaves nothing running.
#[derive(Debug)]
pub struct FlagdProcess {
    child: Child,
    addr: SocketAddr,
    database_url: String,
    stderr: Lines,
    /// The index in `stderr` of the `flagd is serving` line.
    serving_line: usize,
    /// Stdout's lines and their reader, when kept.
    stdout: Option<(Lines, JoinHandle<()>)>,
    /// The SQLite file it serves when none was given; removed after it stops.
    _sqlite: Option<SqliteFile>,
}

endpoint!(FlagdProcess);

impl FlagdProcess {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged on stderr so far, one line each.
    pub fn log(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// What it logged before `flagd is serving`.
    pub fn startup_log(&self) -> Vec<String> {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner())[..self.serving_line].to_vec()
    }

    /// What it printed on stdout so far (empty unless [`Binary::record_stdout`]).
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.as_ref().map_or_else(Vec::new, |(lines, _)| {
            lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
        })
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`, …), with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} {pid}");
    }

    /// SIGSTOP: frozen as a hung host is, its sockets open and nothing answered.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`FlagdProcess::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("waiting for flagd")
    }

    /// Waits at most `timeout` for it to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it with SIGTERM (a graceful shutdown) and returns its exit status and every
    /// line it printed on stdout (none unless [`Binary::record_stdout`]).
    pub fn terminate(mut self) -> (ExitStatus, Vec<String>) {
        self.signal("TERM");
        let status = self.child.wait().expect("waiting for flagd");
        let stdout = match self.stdout.take() {
            Some((lines, thread)) => {
                // The pipe closes with the process: the reader ends.
                let _ = thread.join();
                std::mem::take(&mut *lines.lock().unwrap_or_else(|e| e.into_inner()))
            }
            None => Vec::new(),
        };
        (status, stdout)
    }

    /// Kills it with SIGKILL (a crash: nothing is finished) and returns its exit status.
    pub fn kill(mut self) -> ExitStatus {
        self.child.kill().expect("SIGKILL to flagd");
        self.child.wait().expect("waiting for flagd")
    }
}

impl Drop for FlagdProcess {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too; after a wait, std sends nothing.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
