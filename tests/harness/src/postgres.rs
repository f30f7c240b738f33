//! A real PostgreSQL server for tests (Debian's packages): a temporary data directory,
//! a random loopback port, stopped when dropped.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use sqlx::Connection;

/// A PostgreSQL server for a test, or for a whole test run: initdb and pg_ctl from
/// Debian's packages (the newest version under `/usr/lib/postgresql`), a data directory
/// in a temporary directory, listening on 127.0.0.1 at a random port (and on a socket in
/// that directory), trusting every local connection as user `postgres`. Run as user
/// `postgres` when the tests run as root (PostgreSQL refuses root). Stopped, and its
/// directory removed, when dropped.
#[derive(Debug)]
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres_user: bool,
    databases: AtomicUsize,
}

fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .map(|v| v.join("bin"))
        .find(|b| b.join("initdb").exists())
}

impl Postgres {
    /// Starts a server, or `Ok(None)` when PostgreSQL is not installed.
    pub fn start() -> anyhow::Result<Option<Self>> {
        let Some(bin) = pg_bin() else { return Ok(None) };
        // PostgreSQL refuses to run as root: run it as the `postgres` user then.
        let as_postgres_user = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let dir = tempfile::Builder::new().prefix("flagd-pg-").tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        if as_postgres_user {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()))?;
            // The temporary directory itself must be reachable by that user.
            run(Command::new("chmod").arg("755").arg(dir.path()))?;
        }
        let pg = Self {
            dir,
            bin,
            port: crate::free_port(),
            as_postgres_user,
            databases: AtomicUsize::new(0),
        };
        pg.cmd(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        pg.resume()?;
        Ok(Some(pg))
    }

    /// Starts a server; `None` when PostgreSQL is not installed, after saying so and
    /// what that means (`skipped`, such as "the postgres:: tests are ignored"). Under CI
    /// (`CI=true`) PostgreSQL must be there (`.ci/test` installs it): its absence fails
    /// the test. Panics when PostgreSQL is installed but does not start.
    pub fn start_or_skip(skipped: &str) -> Option<Self> {
        match Self::start() {
            Ok(Some(pg)) => Some(pg),
            Ok(None) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "PostgreSQL is not installed (Debian package postgresql); .ci/test installs it"
                );
                println!("PostgreSQL is not installed, so {skipped} (apt-get install postgresql)");
                None
            }
            Err(e) => panic!("PostgreSQL did not start: {e:#}"),
        }
    }

    /// Starts the server (again, after `stop`), on the same port and data.
    pub fn resume(&self) -> anyhow::Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        self.cmd(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &opts,
                "-l",
                &self.dir.path().join("log").to_string_lossy(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    fn cmd(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let exe = self.bin.join(tool);
        let mut c = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        c.args(args);
        run(&mut c)
    }

    /// A new, empty database, as a URL for flagd (`postgres://postgres@127.0.0.1:…/…`).
    pub async fn database(&self) -> anyhow::Result<String> {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect_with(&admin.parse()?).await?;
        sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str()).await?;
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    /// Stops the server at once (`-m immediate`: what a crash or a lost host looks like
    /// to its clients).
    pub fn stop(&self) {
        let _ = self.cmd(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(c: &mut Command) -> anyhow::Result<()> {
    let out = c.output().with_context(|| format!("running {c:?}"))?;
    if !out.status.success() {
        bail!(
            "{c:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
