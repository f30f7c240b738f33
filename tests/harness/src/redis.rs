//! A real Redis server for tests: Debian's `redis-server` on a random loopback port, in
//! a temporary directory, with no persistence (a restart starts empty, as a Redis that
//! lost its memory does), stopped when dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::free_port;

/// Where Debian puts the server.
const SERVER: &str = "/usr/bin/redis-server";

/// A Redis server for one test (or one test binary).
#[derive(Debug)]
pub struct Redis {
    dir: tempfile::TempDir,
    port: u16,
    child: Mutex<Option<Child>>,
}

impl Redis {
    /// Starts a server, or `Ok(None)` when Redis is not installed.
    pub fn start() -> anyhow::Result<Option<Self>> {
        if !PathBuf::from(SERVER).exists() {
            return Ok(None);
        }
        let redis = Self {
            dir: tempfile::Builder::new().prefix("flagd-redis-").tempdir()?,
            port: free_port(),
            child: Mutex::new(None),
        };
        redis.resume()?;
        Ok(Some(redis))
    }

    /// [`Redis::start`], or `None` with a message when Redis is not installed, which
    /// under `CI=true` fails instead (`.ci/test` installs it).
    pub fn start_or_skip(skipped: &str) -> Option<Self> {
        match Self::start() {
            Ok(Some(r)) => Some(r),
            Ok(None) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "Redis is not installed (Debian package redis-server); .ci/test installs it"
                );
                println!("Redis is not installed, so {skipped} (apt-get install redis-server)");
                None
            }
            Err(e) => panic!("Redis did not start: {e:#}"),
        }
    }

    /// Starts the server (again, after [`Redis::kill`]) on the same port, empty.
    pub fn resume(&self) -> anyhow::Result<()> {
        let child = Command::new(SERVER)
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
                "--daemonize",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {SERVER}"))?;
        if let Ok(mut c) = self.child.lock() {
            *c = Some(child);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.ping().is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("Redis did not answer PING on 127.0.0.1:{}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL): what a crashed or lost Redis looks like to flagd.
    pub fn kill(&self) {
        if let Ok(mut c) = self.child.lock()
            && let Some(mut child) = c.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// One command in Redis's protocol (RESP), answered with its first line, for tests
    /// that look at what flagd keeps there (`PING` → `+PONG`).
    pub fn command(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes())?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line.trim_end().to_owned())
    }

    fn ping(&self) -> anyhow::Result<()> {
        match self.command(&["PING"])?.as_str() {
            "+PONG" => Ok(()),
            other => bail!("PING answered {other:?}"),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
