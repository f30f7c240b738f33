//! Tests that run on both stores: each on a new SQLite file and on a new database of one
//! PostgreSQL server, started once for the test binary (a custom libtest-mimic harness:
//! `harness = false` in the package's `[[test]]`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};

use crate::{Postgres, SqliteFile};

/// Which database a test's store is on.
#[derive(Clone, Debug)]
pub enum Backend {
    /// A new SQLite file for each test.
    Sqlite,
    /// A new database of this server for each test.
    Postgres(Arc<Postgres>),
}

impl Backend {
    /// `sqlite` or `postgres`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// A new, empty database: its URL, and the SQLite file to keep while it is used
    /// (`None` on PostgreSQL).
    pub async fn database(&self) -> anyhow::Result<(String, Option<SqliteFile>)> {
        Ok(match self {
            Self::Sqlite => {
                let file = SqliteFile::new();
                (file.url(), Some(file))
            }
            Self::Postgres(pg) => (pg.database().await?, None),
        })
    }
}

/// An async test of a backend, as [`run_trials`] runs it.
pub type BackendTest = fn(Backend) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Runs one test on a runtime of its own (two worker threads).
fn run_test(test: BackendTest, backend: Backend) -> Result<(), Failed> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let r = rt.block_on(test(backend));
    rt.shutdown_timeout(Duration::from_secs(5));
    r.map_err(|e| format!("{e:#} (after {:?})", started.elapsed()).into())
}

/// The `main` of a test binary whose tests run on both stores: each of `both` as
/// `sqlite::NAME` and `postgres::NAME`, each of `sqlite_only` as `sqlite::NAME`, each of
/// `postgres_only` as `postgres::NAME`, with
/// libtest's command line (filters, `--list`, `--test-threads`). PostgreSQL starts once
/// ([`Postgres::start_or_skip`]: the `postgres::` tests are ignored where it is not
/// installed, except under CI) and is stopped, its directory removed, before the
/// process exits with the result.
pub fn run_trials(
    both: &[(&str, BackendTest)],
    sqlite_only: &[(&str, BackendTest)],
    postgres_only: &[(&str, BackendTest)],
) -> ! {
    let args = Arguments::from_args();
    let pg = Postgres::start_or_skip("the postgres:: tests are ignored").map(Arc::new);
    let mut trials = Vec::new();
    let on_postgres = |name: &str, test: BackendTest| {
        let missing = pg.is_none();
        let pg = pg.clone();
        let trial = Trial::test(format!("postgres::{name}"), move || match pg {
            Some(pg) => run_test(test, Backend::Postgres(pg)),
            None => Ok(()),
        });
        trial.with_ignored_flag(missing)
    };
    for &(name, test) in both {
        trials.push(Trial::test(format!("sqlite::{name}"), move || {
            run_test(test, Backend::Sqlite)
        }));
        trials.push(on_postgres(name, test));
    }
    for &(name, test) in sqlite_only {
        trials.push(Trial::test(format!("sqlite::{name}"), move || {
            run_test(test, Backend::Sqlite)
        }));
    }
    for &(name, test) in postgres_only {
        trials.push(on_postgres(name, test));
    }
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(pg) = pg {
        pg.stop();
        // Dropped before exit() so that the data directory is removed.
        drop(pg);
    }
    conclusion.exit()
}
