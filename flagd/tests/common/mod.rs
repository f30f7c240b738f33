//! The real `flagd` binary for the tests in this folder that start it themselves.
// Each test binary uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const ADMIN: &str = "fd_binary-test-admin";

/// A flagd process on a temporary SQLite file, killed when dropped (a failed test
/// leaves nothing running).
pub(crate) struct Flagd {
    pub(crate) child: Child,
    pub(crate) addr: String,
    stderr: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Flagd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts flagd with `args`; with `soft_nofile`, under `ulimit -Sn` (the hard limit
/// stays the machine's).
pub(crate) fn start(args: &[&str], soft_nofile: Option<u64>) -> Flagd {
    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("flagd.db").display()
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let exe = env!("CARGO_BIN_EXE_flagd");
    let mut cmd = match soft_nofile {
        Some(n) => {
            let mut c = Command::new("bash");
            c.arg("-c")
                .arg(format!("ulimit -Sn {n} && exec \"$0\" \"$@\""))
                .arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.args(["--listen", &addr, "--database-url", &db])
        .args(args)
        .env("FLAGD_ADMIN_TOKEN", ADMIN)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "flagd did not start");
        match lines.next() {
            Some(Ok(l)) => {
                let serving = l.contains("flagd is serving");
                seen.lock().unwrap().push(l);
                if serving {
                    break;
                }
            }
            other => panic!(
                "flagd exited before serving: {other:?}\n{}",
                seen.lock().unwrap().join("\n")
            ),
        }
    }
    // Keep draining stderr (the server must never block on a full pipe), and keep it.
    let keep = seen.clone();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            keep.lock().unwrap().push(l);
        }
    });
    Flagd {
        child,
        addr,
        stderr: seen,
        _dir: dir,
    }
}

impl Flagd {
    pub(crate) fn connect(&self) -> TcpStream {
        TcpStream::connect(&self.addr).unwrap()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}
