//! Real Prometheus and Alertmanager for tests: Debian's `prometheus` and
//! `prometheus-alertmanager`, each on a random loopback port with its data in a
//! temporary directory (Alertmanager without its cluster port), stopped when dropped.
//! The example service (`examples/checkout-service`) that they watch is started here too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::free_port;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// One server process with its directory and log.
#[derive(Debug)]
struct Daemon {
    name: &'static str,
    dir: tempfile::TempDir,
    port: u16,
    child: Mutex<Option<Child>>,
}

impl Daemon {
    fn spawn(
        name: &'static str,
        exe: &str,
        files: &[(&str, &str)],
        args: impl Fn(&Path, u16) -> Vec<String>,
    ) -> anyhow::Result<Self> {
        Self::spawn_on(free_port(), name, exe, files, args)
    }

    fn spawn_on(
        port: u16,
        name: &'static str,
        exe: &str,
        files: &[(&str, &str)],
        args: impl Fn(&Path, u16) -> Vec<String>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("flagd-{name}-"))
            .tempdir()?;
        for (file, text) in files {
            std::fs::write(dir.path().join(file), text)?;
        }
        let log = std::fs::File::create(dir.path().join("log"))?;
        let child = Command::new(exe)
            .args(args(dir.path(), port))
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {exe}"))?;
        let d = Self {
            name,
            dir,
            port,
            child: Mutex::new(Some(child)),
        };
        d.wait_ready("/-/ready")?;
        Ok(d)
    }

    /// Waits until `path` answers 200 (the server has read its configuration).
    fn wait_ready(&self, path: &str) -> anyhow::Result<()> {
        use std::io::{Read, Write};
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = (|| -> std::io::Result<String> {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                write!(
                    s,
                    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )?;
                let mut text = String::new();
                s.read_to_string(&mut text)?;
                Ok(text)
            })();
            if answer.is_ok_and(|a| a.starts_with("HTTP/1.1 200")) {
                return Ok(());
            }
            if let Ok(mut c) = self.child.lock()
                && let Some(child) = c.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!("{} exited ({status}): {}", self.name, self.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} is not ready on 127.0.0.1:{}: {}",
                    self.name,
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(mut c) = self.child.lock()
            && let Some(mut child) = c.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether a Debian package's server is here: under `CI=true` it must be (`.ci/test`
/// installs it); elsewhere its tests are skipped with a message.
fn installed(exe: &str, package: &str, skipped: &str) -> bool {
    if PathBuf::from(exe).exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{exe} is not installed (Debian package {package}); .ci/test installs it"
    );
    println!("{exe} is not installed, so {skipped} (apt-get install {package})");
    false
}

/// A Prometheus server.
#[derive(Debug)]
pub struct Prometheus(Daemon);

impl Prometheus {
    /// Starts Prometheus with `prometheus.yml` and the other `files` (rule files) in its
    /// directory; `None` (with a message) when it is not installed.
    pub fn start_or_skip(config: &str, files: &[(&str, &str)], skipped: &str) -> Option<Self> {
        Self::start_or_skip_on(free_port(), config, files, skipped)
    }

    /// [`Prometheus::start_or_skip`] on a port chosen beforehand (for a server that is
    /// told where Prometheus is before it starts).
    pub fn start_or_skip_on(
        port: u16,
        config: &str,
        files: &[(&str, &str)],
        skipped: &str,
    ) -> Option<Self> {
        if !installed(PROMETHEUS, "prometheus", skipped) {
            return None;
        }
        let mut all = vec![("prometheus.yml", config)];
        all.extend_from_slice(files);
        let d = Daemon::spawn_on(port, "prometheus", PROMETHEUS, &all, |dir, port| {
            vec![
                format!("--config.file={}", dir.join("prometheus.yml").display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ]
        })
        .unwrap_or_else(|e| panic!("Prometheus did not start: {e:#}"));
        Some(Self(d))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.0.port)
    }

    /// What it logged.
    pub fn log(&self) -> String {
        self.0.log()
    }
}

/// An Alertmanager (no cluster: one instance, no gossip port).
#[derive(Debug)]
pub struct Alertmanager(Daemon);

impl Alertmanager {
    /// Starts Alertmanager with `alertmanager.yml` and the other `files` (a token file)
    /// in its directory; `None` (with a message) when it is not installed.
    pub fn start_or_skip(config: &str, files: &[(&str, &str)], skipped: &str) -> Option<Self> {
        if !installed(ALERTMANAGER, "prometheus-alertmanager", skipped) {
            return None;
        }
        let mut all = vec![("alertmanager.yml", config)];
        all.extend_from_slice(files);
        let d = Daemon::spawn("alertmanager", ALERTMANAGER, &all, |dir, port| {
            vec![
                format!("--config.file={}", dir.join("alertmanager.yml").display()),
                format!("--storage.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--cluster.listen-address=".into(),
            ]
        })
        .unwrap_or_else(|e| panic!("Alertmanager did not start: {e:#}"));
        Some(Self(d))
    }

    /// `127.0.0.1:PORT`, as Prometheus's configuration names it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.0.port)
    }

    /// Its directory (where `files` were written).
    pub fn dir(&self) -> &Path {
        self.0.dir.path()
    }

    /// What it logged.
    pub fn log(&self) -> String {
        self.0.log()
    }
}

/// The example service, `examples/checkout-service`: found beside the test binary's
/// folder (`target/<profile>/examples/checkout-service`) or built there once.
pub fn checkout_service_binary() -> PathBuf {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY
        .get_or_init(|| crate::binary::workspace_example("flagd-examples", "checkout-service"))
        .clone()
}

/// The example checkout service, connected to a flagd with an SDK key.
#[derive(Debug)]
pub struct CheckoutService(Daemon);

impl CheckoutService {
    /// Starts it against `flagd_url`; `broken`: its new checkout fails
    /// (`BROKEN_NEW_CHECKOUT=1`), a release gone wrong.
    pub fn start(flagd_url: &str, sdk_key: &str, broken: bool) -> anyhow::Result<Self> {
        let exe = checkout_service_binary();
        let exe = exe.to_str().context("the service's path is not UTF-8")?;
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut d = Daemon {
            name: "checkout-service",
            dir: tempfile::Builder::new()
                .prefix("flagd-checkout-")
                .tempdir()?,
            port,
            child: Mutex::new(None),
        };
        let log = std::fs::File::create(d.dir.path().join("log"))?;
        let child = Command::new(exe)
            .env("FLAGD_URL", flagd_url)
            .env("FLAGD_SDK_KEY", sdk_key)
            .env("LISTEN", &listen)
            .env("BROKEN_NEW_CHECKOUT", if broken { "1" } else { "0" })
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {exe}"))?;
        d.child = Mutex::new(Some(child));
        d.wait_ready("/healthz")?;
        Ok(Self(d))
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.0.port)
    }

    /// What it logged.
    pub fn log(&self) -> String {
        self.0.log()
    }
}
