//! Opening the store, reaching it, and whether it can take writes: the pool, SQLite's
//! file (its lock and identity), PostgreSQL's reachability, readiness.

use super::*;

/// The file of a SQLite URL (`sqlite://flagd.db?mode=rwc`, `sqlite:///var/lib/flagd.db`);
/// `None` for an in-memory database or another backend.
pub(super) fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:" && !rest.contains("mode=memory"))
        .then(|| std::path::PathBuf::from(path))
}

/// How the store's SQLite file may have left its path, for `Store::check_file_is`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FileGone {
    /// Another file is at the path.
    Replaced,
    /// Replaced, or deleted.
    Either,
}

/// A file's device and inode: its identity, whatever its path.
pub(super) fn file_id(path: &std::path::Path) -> anyhow::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("cannot read the SQLite file {}: {e}", path.display()))?;
    Ok((m.dev(), m.ino()))
}

/// Takes an exclusive lock on a SQLite file, or says which process's file it is.
pub(super) fn lock_sqlite_file(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let f = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot open the SQLite file {}: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another flagd is already serving the SQLite file {}: SQLite has one writer, so one flagd per file (for several flagd replicas, use PostgreSQL: --database-url postgres://…)",
            std::path::absolute(path)
                .unwrap_or_else(|_| path.to_owned())
                .display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("cannot lock the SQLite file {}: {e}", path.display())
        }
    }
}

impl Store {
    /// Connects (creating a SQLite file if needed), without migrating.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// Connects with these options (creating a SQLite file if needed), without migrating.
    pub async fn connect_with(url: &str, options: StoreOptions) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            anyhow::bail!("--database-url must start with sqlite: or postgres://, got {url:?}");
        };
        let mut opts = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite {
                SQLITE_POOL as u32
            } else {
                16
            })
            .acquire_timeout(options.timeout);
        let busy_ms = options.timeout.as_millis().clamp(1, i32::MAX as u128);
        if backend == Backend::Sqlite {
            let read_only =
                sqlite_file(url).map(|f| std::sync::Arc::new(ReadOnlyConnections::new(f)));
            let seen = read_only.clone();
            if let Some(read_only) = read_only {
                opts = opts.before_acquire(move |conn, _| {
                    let read_only = read_only.clone();
                    Box::pin(async move { read_only.keep(conn).await })
                });
            }
            opts = opts.after_connect(move |conn, _| {
                let seen = seen.clone();
                Box::pin(async move {
                    // Looked at before the pragmas too: the nearer the open, the
                    // smaller the window for a fix to land between it and the look.
                    let suspect = seen.as_ref().is_some_and(|s| s.suspect());
                    // WAL lets readers run during a write; FULL sync keeps every
                    // acknowledged write across a power cut.
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous = FULL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query(&format!("PRAGMA busy_timeout = {busy_ms}"))
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA foreign_keys = ON")
                        .execute(&mut *conn)
                        .await?;
                    match seen {
                        Some(seen) => seen.note_open(conn, suspect).await,
                        None => Ok(()),
                    }
                })
            });
        }
        // Every SQLite URL creates its file (as the default one does), unless it says
        // otherwise with its own `mode`.
        let url = match (backend, sqlite_file(url)) {
            (Backend::Sqlite, Some(_)) if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_owned(),
        };
        let file = sqlite_file(&url);
        if let Some(f) = &file
            && let Some(dir) = f.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            anyhow::bail!(
                "cannot open the SQLite file {}: the directory {} does not exist",
                f.display(),
                dir.display()
            );
        }
        if backend == Backend::Postgres {
            // One direct attempt first: the pool retries a refused connection until its
            // timeout and then only says it timed out.
            Self::probe_url(&url, options.timeout)
                .await
                .map_err(|why| anyhow::anyhow!("cannot connect to the store: {why}"))?;
        }
        let pool = opts.connect(&url).await.map_err(|e| match &file {
            Some(f) => anyhow::anyhow!("cannot open the SQLite file {}: {e}", f.display()),
            None => anyhow::anyhow!("cannot connect to the store: {e}"),
        })?;
        // SQLite has one writer by design: a second flagd on the same file would serve
        // SDKs that never hear of the first one's changes. An exclusive lock on the file,
        // which the OS drops when the process dies (kill -9 included), keeps it out.
        let lock = match &file {
            Some(f) => {
                let l = lock_sqlite_file(f)?;
                // A relative path depends on the directory flagd was started in: say which.
                let shown = std::path::absolute(f).unwrap_or_else(|_| f.clone());
                tracing::info!(file = %shown.display(), "store: SQLite");
                Some(l)
            }
            None => None,
        };
        let file = match &file {
            Some(f) => Some((f.clone(), file_id(f)?.0, file_id(f)?.1)),
            None => None,
        };
        let statistics = (backend == Backend::Postgres)
            .then(|| statistics::Statistics::new(pool.clone(), options.observer.clone()));
        Ok(Self {
            pool,
            backend,
            statistics,
            write_lock: Mutex::new(()),
            identity: tokio::sync::OnceCell::new(),
            _lock: lock,
            file,
            url,
            options,
            unreachable: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// One direct connection to the store, or what stopped it ("the store is unreachable
    /// at 127.0.0.1:5432: connection refused").
    pub(super) async fn probe_url(url: &str, timeout: std::time::Duration) -> Result<(), String> {
        let at = store_address(url);
        match tokio::time::timeout(timeout, <AnyConnection as sqlx::Connection>::connect(url)).await
        {
            Ok(Ok(conn)) => {
                let _ = sqlx::Connection::close(conn).await;
                Ok(())
            }
            Ok(Err(e)) => Err(format!(
                "the store is unreachable at {at}: {}",
                connect_failure(&e)
            )),
            Err(_) => Err(format!(
                "the store is unreachable at {at}: no answer within {}",
                humantime::format_duration(timeout)
            )),
        }
    }

    /// PostgreSQL: why the store cannot be reached now, if it cannot.
    pub(super) async fn unreachable_because(&self) -> Option<String> {
        use std::sync::atomic::Ordering;
        if self.backend != Backend::Postgres {
            return None;
        }
        let why = Self::probe_url(&self.url, self.options.timeout).await.err();
        self.unreachable.store(why.is_some(), Ordering::Relaxed);
        why
    }

    /// A connection from the pool. While the store is known unreachable, or when the
    /// pool is slow to give one, a direct connection attempt says why (PostgreSQL): the
    /// caller gets a 503 naming the cause in about a second, not "timed out" after the
    /// store timeout.
    pub(super) async fn acquire(&self) -> StoreResult<sqlx::pool::PoolConnection<Any>> {
        use std::sync::atomic::Ordering;
        if self.unreachable.load(Ordering::Relaxed)
            && let Some(why) = self.unreachable_because().await
        {
            return Err(StoreError::Unavailable(why));
        }
        let acquire = self.pool.acquire();
        tokio::pin!(acquire);
        let result = if self.backend == Backend::Postgres {
            let patience = (self.options.timeout / 5).min(std::time::Duration::from_secs(1));
            match tokio::time::timeout(patience, &mut acquire).await {
                Ok(r) => r,
                Err(_) => {
                    if let Some(why) = self.unreachable_because().await {
                        return Err(StoreError::Unavailable(why));
                    }
                    // Reachable, only busy: the pool's own wait runs its course.
                    acquire.await
                }
            }
        } else {
            acquire.await
        };
        match result {
            Ok(c) => Ok(c),
            Err(sqlx::Error::PoolTimedOut) => Err(match self.unreachable_because().await {
                Some(why) => StoreError::Unavailable(why),
                None => StoreError::Unavailable(format!(
                    "the store is busy: no connection to it within {} (--store-timeout)",
                    humantime::format_duration(self.options.timeout)
                )),
            }),
            Err(e @ sqlx::Error::Io(_)) => Err(match self.unreachable_because().await {
                Some(why) => StoreError::Unavailable(why),
                None => e.into(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// A connection for reads.
    pub(super) async fn read(&self) -> StoreResult<sqlx::pool::PoolConnection<Any>> {
        // A file replaced under flagd (another file at its path): a new connection would
        // open that file with the original's WAL, and fail as corrupt (a 500 where the
        // write it authenticates for is refused with 503). Deleted, the open
        // connections still read the original.
        self.check_file_is(FileGone::Replaced)?;
        self.acquire().await
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// SQLite: refuses (503) when the file flagd opened was deleted or replaced under it:
    /// writes would go to an unlinked file and be lost at the next start.
    pub(super) fn check_file(&self) -> StoreResult<()> {
        self.check_file_is(FileGone::Either)
    }

    /// [`Store::check_file`], refusing only for the ways of going named.
    fn check_file_is(&self, refuse: FileGone) -> StoreResult<()> {
        let Some((path, dev, ino)) = &self.file else {
            return Ok(());
        };
        match file_id(path) {
            Ok(id) if id == (*dev, *ino) => Ok(()),
            Err(_) if refuse == FileGone::Replaced => Ok(()),
            Ok(_) => Err(StoreError::Unavailable(format!(
                "the store's SQLite file {} was replaced while flagd ran: flagd takes no writes into the old one; put the original back, or restart flagd to serve the new one",
                path.display()
            ))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "the store's SQLite file {} was deleted while flagd ran: flagd takes no writes into it; restore it, and writes resume",
                path.display()
            ))),
        }
    }

    /// Starts a write transaction, if the store can take writes.
    pub(super) async fn begin_tx(&self) -> StoreResult<Tx> {
        self.check_file()?;
        let conn = self.acquire().await?;
        Ok(Tx::begin(conn, self.backend).await?)
    }

    /// [`Store::begin_tx`] and the transaction's first read ([`Tx::begin_reading`]).
    pub(super) async fn begin_tx_reading(
        &self,
        sql: &str,
        arg: &str,
    ) -> StoreResult<(Tx, Option<AnyRow>)> {
        self.check_file()?;
        let conn = self.acquire().await?;
        Tx::begin_reading(conn, self.backend, sql, arg).await
    }

    /// Whether the store answers, takes writes (SQLite: its file is still the one
    /// opened) and every migration is applied.
    pub async fn ready(&self) -> anyhow::Result<()> {
        self.check_file().map_err(|e| anyhow::anyhow!("{e}"))?;
        // A write probe, rolled back: a read-only or locked store is not ready for the
        // writes a responder needs, even while reads still work. While a write is in
        // progress (a large import can take seconds) that write is the probe: waiting
        // for it would make flagd look unready only because it is busy.
        let Ok(_writing) = self.write_lock.try_lock() else {
            return self.migrated(&mut *self.read().await?).await;
        };
        let mut tx = self.begin_tx().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        self.migrated(&mut tx).await?;
        if let Err(e) = sqlx::query("UPDATE store_identity SET id = id")
            .execute(&mut *tx)
            .await
        {
            let mut why = StoreError::from(e).to_string();
            if let Some(files) = self.unwritable_files() {
                why.push_str(&format!("; flagd cannot write {files}"));
            }
            anyhow::bail!(why);
        }
        tx.rollback().await?;
        Ok(())
    }

    /// Whether every migration is applied.
    pub(super) async fn migrated(&self, conn: &mut AnyConnection) -> anyhow::Result<()> {
        let applied: i64 =
            sqlx::query("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&mut *conn)
                .await?
                .try_get(0)?;
        let expected = match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.iter().count(),
            Backend::Postgres => POSTGRES_MIGRATIONS.iter().count(),
        };
        anyhow::ensure!(
            to_u64(applied) as usize >= expected,
            "{applied} of {expected} migrations applied"
        );
        Ok(())
    }

    /// SQLite: which of the database's files this process cannot open for writing.
    pub(super) fn unwritable_files(&self) -> Option<String> {
        unwritable_files(&self.file.as_ref()?.0)
    }

    /// Closes the pool after in-flight queries finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl Store {
    /// Whether this store announces its commits to `listener` (the same object).
    pub fn announces_to(&self, listener: &dyn CommitListener) -> bool {
        self.options.listener.as_ref().is_some_and(|l| {
            std::ptr::addr_eq(
                std::sync::Arc::as_ptr(l),
                listener as *const dyn CommitListener,
            )
        })
    }
}

impl Store {
    /// Holds off this process's writes while the guard lives, if none is in progress
    /// now: the hub compares its heads with the store's without racing a local commit
    /// between its COMMIT and its announcement.
    pub fn try_hold_writes(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        self.write_lock.try_lock().ok()
    }
}

/// Which of a SQLite database's files this process cannot open for writing (SQLite gives
/// the -wal and -shm files the database's own mode, so making only the database
/// writable again is not enough).
fn unwritable_files(path: &std::path::Path) -> Option<String> {
    let found = unwritable_files_now(path);
    if found.is_some() {
        LAST_UNWRITABLE_MS.store(now_ms(), std::sync::atomic::Ordering::Relaxed);
    }
    found
}

/// When this process last found a SQLite file it could not write (milliseconds since
/// the Unix epoch; 0: never).
static LAST_UNWRITABLE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long after that a new connection is still taken for possibly read-only.
const UNWRITABLE_GRACE_MS: u64 = 2_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn unwritable_files_now(path: &std::path::Path) -> Option<String> {
    let mut names = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut p = path.to_path_buf().into_os_string();
        p.push(suffix);
        names.push(p.into());
    }
    let unwritable: Vec<String> = names
        .iter()
        .filter(|p| p.exists())
        .filter_map(|p| match std::fs::OpenOptions::new().write(true).open(p) {
            Ok(_) => None,
            Err(e) => Some(format!("{} ({e})", p.display())),
        })
        .collect();
    (!unwritable.is_empty()).then(|| unwritable.join(", "))
}

/// Connections to a SQLite file (one writer at a time; readers beside it in WAL mode).
const SQLITE_POOL: usize = 4;

/// SQLite opens a file it may not write read-only, without an error, and such a
/// connection stays read-only after the file is writable again: pooled, it would refuse
/// the first writes after the store is fixed. Such a connection is marked (a table of its
/// own temporary schema) and dropped at its next use once the file is writable.
struct ReadOnlyConnections {
    path: std::path::PathBuf,
    /// How many more connections to check for the mark once the file is writable (0:
    /// nothing to check). A count of marked connections would not do: one closed after a
    /// failed write is never seen again, and every later acquire would keep checking.
    /// Twice the pool's size of acquisitions goes round the whole idle queue.
    checks: std::sync::atomic::AtomicUsize,
}

impl ReadOnlyConnections {
    const MARK: &str = "flagd_opened_read_only";
    /// Twice the SQLite pool's size.
    const CHECKS: usize = 2 * SQLITE_POOL;

    fn new(path: std::path::PathBuf) -> Self {
        Self {
            path,
            checks: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Whether a connection opened now may be read-only: the file is unwritable, or was
    /// found so moments ago. The permissions are read after SQLite opened the file, so a
    /// file made writable in between would leave a read-only connection unmarked (CI
    /// saw the first write after a fix refused so); marking a writable connection costs
    /// only its reopening.
    fn suspect(&self) -> bool {
        if unwritable_files(&self.path).is_some() {
            return true;
        }
        let last = LAST_UNWRITABLE_MS.load(std::sync::atomic::Ordering::Relaxed);
        last != 0 && now_ms().saturating_sub(last) < UNWRITABLE_GRACE_MS
    }

    /// A connection was just opened (`suspect`: [`Self::suspect`] before its set-up):
    /// marks it if it may be read-only.
    async fn note_open(&self, conn: &mut AnyConnection, suspect: bool) -> Result<(), sqlx::Error> {
        if suspect || self.suspect() {
            sqlx::query(&format!(
                "CREATE TEMP TABLE IF NOT EXISTS {} (x)",
                Self::MARK
            ))
            .execute(&mut *conn)
            .await?;
            self.checks
                .store(Self::CHECKS, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether a pooled connection may be used: not when it was opened read-only and
    /// the file is writable now (while the file still is not, it is as good as a new one).
    async fn keep(&self, conn: &mut AnyConnection) -> Result<bool, sqlx::Error> {
        use std::sync::atomic::Ordering;
        if self.checks.load(Ordering::Relaxed) == 0 || unwritable_files(&self.path).is_some() {
            return Ok(true);
        }
        let _ = self
            .checks
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        let marked = sqlx::query(&format!(
            "SELECT 1 FROM temp.sqlite_master WHERE name = '{}'",
            Self::MARK
        ))
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
        Ok(!marked)
    }
}
