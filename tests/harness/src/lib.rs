//! The one way the tests start flagd, and the one PostgreSQL they use: a dev-dependency
//! of every test crate (`flagd`, `flagctl`, `flagd-sdk`, `flagd-tests`).
//!
//! - [`Binary`]: the real `flagd` binary as a user runs it ([`flagd_binary`] finds it),
//!   on a free loopback port, returning once it logs `flagd is serving`; a
//!   [`FlagdProcess`] keeps its log and can be signalled (SIGTERM, SIGKILL, SIGSTOP and
//!   SIGCONT), and is killed when dropped.
//! - [`InProcess`]: flagd's own server code (`flagd::server::{open_store_for, bootstrap,
//!   run}`, what the binary runs) in the test process: a [`Server`] task for async tests,
//!   or a [`ThreadServer`] with a runtime of its own for sync tests.
//! - [`Postgres`]: a real PostgreSQL server (Debian's packages) in a temporary directory
//!   on a random loopback port; [`Postgres::database`] gives each test a database.
//! - [`Redis`]: a real Redis server (Debian's `redis-server`) in a temporary directory
//!   on a random loopback port, without persistence: killed and resumed, it is empty.
//! - [`run_trials`]: the `main` of a test binary whose tests run on both stores
//!   ([`Backend`]), PostgreSQL started once for all of them.
//!
//! Both ways serve a new SQLite file ([`SqliteFile`]) unless given a database URL, and
//! create the admin token [`ADMIN_TOKEN`].
//!
//! Beside flagd: a real PostgreSQL ([`Postgres`]), Redis ([`Redis`]), Prometheus
//! ([`Prometheus`]) and Alertmanager ([`Alertmanager`]) from Debian's packages, and the
//! SDK example service ([`CheckoutService`], `examples/checkout-service`), each on
//! loopback in a temporary directory.
#![warn(missing_docs)]

use std::path::{Path, PathBuf};

/// The methods every running flagd has (its `addr` and `database_url` fields): where it
/// listens and what it serves, the same for each way of starting it.
macro_rules! endpoint {
    ($t:ty) => {
        impl $t {
            /// The address it listens on (127.0.0.1).
            pub fn addr(&self) -> std::net::SocketAddr {
                self.addr
            }

            /// The port it listens on.
            pub fn port(&self) -> u16 {
                self.addr.port()
            }

            /// `http://127.0.0.1:port`.
            pub fn base(&self) -> String {
                format!("http://{}", self.addr)
            }

            /// `http://127.0.0.1:port{path}`.
            pub fn url(&self, path: &str) -> String {
                format!("http://{}{path}", self.addr)
            }

            /// The database it serves.
            pub fn database_url(&self) -> &str {
                &self.database_url
            }

            /// A new TCP connection to it.
            pub fn connect(&self) -> std::net::TcpStream {
                std::net::TcpStream::connect(self.addr).expect("connecting to flagd")
            }
        }
    };
}

mod backend;
mod binary;
mod in_process;
mod monitoring;
mod postgres;
mod redis;

pub use backend::{Backend, BackendTest, run_trials};
pub use binary::{Binary, FlagdProcess, flagctl_binary, flagd_binary};
pub use in_process::{InProcess, Server, ThreadServer};
pub use monitoring::{Alertmanager, CheckoutService, Prometheus, checkout_service_binary};
pub use postgres::Postgres;
pub use redis::Redis;

/// The admin token every flagd started here has (`FLAGD_ADMIN_TOKEN` for the binary,
/// `bootstrap`'s for an in-process server), unless a test says otherwise.
pub const ADMIN_TOKEN: &str = "fd_harness-test-admin-secret";

/// How long flagd may take to start serving before a test fails.
pub const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A loopback port that is free now and that nothing else in this machine's tests is
/// likely to take before the caller binds it.
///
/// The system's own pick (binding port 0) comes from the ephemeral range, the same range
/// every outgoing connection takes its local port from: with hundreds of test clients
/// connecting, a port picked that way was sometimes taken by a client before the flagd
/// it was meant for could listen on it (`Address already in use`). So ports come from
/// below that range, start at a place that differs per process, and are never handed
/// out twice by one process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = unclaimed_ports();
    let span = u32::from(high - low);
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = low + offset as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The ports below the system's ephemeral range (Linux's
/// `net.ipv4.ip_local_port_range`), above the well-known and registered ones most
/// services listen on.
fn unclaimed_ports() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low > 16000 {
        (12000, ephemeral_low)
    } else {
        // An unusual range: the top of the port space, above it.
        (61000, 65000)
    }
}

/// A new SQLite database file (`flagd.db`) in a temporary directory, removed with it
/// when dropped. The file itself is created by the first flagd that opens it.
#[derive(Debug)]
pub struct SqliteFile {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl SqliteFile {
    /// A new temporary directory, and the path of a database file in it.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("flagd-sqlite-")
            .tempdir()
            .expect("a temporary directory");
        let path = dir.path().join("flagd.db");
        Self { dir, path }
    }

    /// The database URL: `sqlite://…/flagd.db?mode=rwc` (created if missing).
    pub fn url(&self) -> String {
        format!("sqlite://{}?mode=rwc", self.path.display())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary directory: the test may keep other files there.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for SqliteFile {
    fn default() -> Self {
        Self::new()
    }
}
