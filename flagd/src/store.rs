//! The store: environments, versioned flag sets, tokens and the audit log, on SQLite
//! (the embedded default) or PostgreSQL, through one implementation.
//!
//! A flag set is stored as items (each flag, each shared evaluator, each other
//! top-level key such as `metadata`) with the range of versions each definition was
//! current: the set at version V is every item with `valid_from <= V < valid_to`, read
//! with one indexed query. A one-flag change closes one row and inserts one, whatever
//! the number of flags; a revert writes only the items that differ.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, Row};
use tokio::sync::{Mutex, MutexGuard};

use crate::error::{ApiError, ApiResult};

/// `valid_to` of a definition that is still current.
const OPEN: i64 = i64::MAX;

/// How long a request waits for the store by default: a free connection, SQLite's
/// write lock (its busy timeout), a connection to PostgreSQL. Past it, 503.
pub const DEFAULT_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How the store is reached.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How long a request waits for the store before it is answered 503
    /// ([`DEFAULT_STORE_TIMEOUT`]).
    pub timeout: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_STORE_TIMEOUT,
        }
    }
}

/// The `host:port` part of a database URL: what an error may show (never credentials).
fn store_address(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or_default()
}

/// What a failed connection attempt says, in a few words.
fn connect_failure(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused".to_owned()
        }
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// The longest reason a change may carry (the audit log keeps every one).
pub const MAX_REASON_CHARS: usize = 1_000;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Which database is behind the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// RFC 3339 text of a time in milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub use flagd_core::document::{Item, Items};
pub use flagd_core::wire::ItemKind;

fn kind_str(k: ItemKind) -> &'static str {
    match k {
        ItemKind::Flag => "flag",
        ItemKind::Evaluator => "evaluator",
        ItemKind::Top => "top",
    }
}

fn parse_kind(s: &str) -> ApiResult<ItemKind> {
    match s {
        "flag" => Ok(ItemKind::Flag),
        "evaluator" => Ok(ItemKind::Evaluator),
        "top" => Ok(ItemKind::Top),
        other => Err(ApiError::Internal(anyhow::anyhow!(
            "unknown item kind {other:?} in the store"
        ))),
    }
}

/// An environment.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    /// The stable identifier, e.g. `production`.
    pub key: String,
    /// A display name.
    pub name: String,
    /// Shown distinctly, and asks for reasons, in the UI.
    pub production: bool,
    /// The current version of its flag set (0 before the first change).
    pub version: u64,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

fn env_of(r: &AnyRow) -> ApiResult<Environment> {
    Ok(Environment {
        key: r.try_get("key")?,
        name: r.try_get("name")?,
        production: r.try_get::<i64, _>("production")? != 0,
        version: to_u64(r.try_get("head_version")?),
        created_at: rfc3339(r.try_get("created_at")?),
    })
}

/// The kind of a change, recorded with its version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// A flag was created.
    Create,
    /// A flag was replaced.
    Update,
    /// A flag was deleted.
    Delete,
    /// A flag's state changed (kill switch).
    Toggle,
    /// A flag's percentage split changed.
    Rollout,
    /// The whole set was replaced.
    Import,
    /// The set, or one flag, was restored to an earlier version.
    Revert,
}

impl ChangeKind {
    /// Its name, as recorded (`toggle`, `revert`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Toggle => "toggle",
            Self::Rollout => "rollout",
            Self::Import => "import",
            Self::Revert => "revert",
        }
    }
}

/// One version of an environment's flag set.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// The version number (gapless from 1).
    pub version: u64,
    /// What kind of change made it.
    pub kind: String,
    /// The token name that made it.
    pub author: String,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When (RFC 3339).
    pub created_at: String,
    /// The flag keys it changed.
    pub changed_flags: Vec<String>,
    /// For a revert: the version it restored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverted_to: Option<u64>,
}

fn version_of(r: &AnyRow) -> ApiResult<VersionInfo> {
    let changed: String = r.try_get("changed")?;
    Ok(VersionInfo {
        version: to_u64(r.try_get("version")?),
        kind: r.try_get("kind")?,
        author: r.try_get("author")?,
        reason: r.try_get("reason")?,
        created_at: rfc3339(r.try_get("created_at")?),
        changed_flags: serde_json::from_str(&changed).map_err(|e| ApiError::Internal(e.into()))?,
        reverted_to: r.try_get::<Option<i64>, _>("reverted_to")?.map(to_u64),
    })
}

/// An audit entry.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Increasing identifier, also the pagination cursor.
    pub id: i64,
    /// When (RFC 3339).
    pub at: String,
    /// Who: the token name.
    pub actor: String,
    /// What, e.g. `flag.disable`, `flagset.revert`, `token.create`.
    pub action: String,
    /// The environment, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The flag key, environment key or token name acted on.
    pub target: String,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The state before (JSON), if any.
    pub before: Option<Value>,
    /// The state after (JSON), if any.
    pub after: Option<Value>,
    /// The flag-set version the change produced, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// What to append to the audit log.
#[derive(Clone, Debug)]
pub struct AuditRecord {
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Where.
    pub env: Option<String>,
    /// On what.
    pub target: String,
    /// Why.
    pub reason: Option<String>,
    /// Before.
    pub before: Option<Value>,
    /// After.
    pub after: Option<Value>,
}

/// Audit log filters.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Only this environment.
    pub env: Option<String>,
    /// Only entries about this flag key.
    pub flag: Option<String>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action (`flag.toggle`), or actions starting with it when it ends in
    /// `.` (`flag.`).
    pub action: Option<String>,
    /// At or after (ms).
    pub since: Option<i64>,
    /// Before (ms).
    pub until: Option<i64>,
    /// Entries with an id below this (the previous page's `next`).
    pub before_id: Option<i64>,
    /// Page size.
    pub limit: u32,
    /// Only environments in this list (a token limited to environments).
    pub allowed_envs: Option<Vec<String>>,
}

/// A UI session.
#[derive(Clone, Debug)]
pub struct Session {
    /// The token it was opened with.
    pub token: TokenInfo,
    /// The CSRF token the page must send back on every change.
    pub csrf: String,
    /// When it ends (ms).
    pub expires_at: i64,
}

/// What starting with `FLAGD_ADMIN_TOKEN` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootstrapToken {
    /// It is an active token's secret already.
    Kept,
    /// A new `admin` token was made, replacing (revoking) this many.
    Replaced {
        /// The `admin` tokens revoked.
        revoked: usize,
    },
}

/// A version's record without its list of changed flags.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionSummary {
    /// The version.
    pub version: u64,
    /// Its kind (`toggle`, `rollout`, `revert`, ...).
    pub kind: String,
    /// Who made it.
    pub author: String,
    /// Why.
    pub reason: Option<String>,
    /// When (RFC 3339).
    pub created_at: String,
}

/// A stored token (never its secret).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    /// Identifier.
    pub id: String,
    /// Name, recorded as the author of its changes.
    pub name: String,
    /// Role.
    pub role: String,
    /// The environments it is limited to; `None` for all.
    pub environments: Option<Vec<String>>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// Who created it.
    pub created_by: String,
    /// When it was revoked, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

fn token_of(r: &AnyRow) -> ApiResult<TokenInfo> {
    let envs: Option<String> = r.try_get("environments")?;
    Ok(TokenInfo {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: r.try_get("role")?,
        environments: envs
            .map(|e| serde_json::from_str(&e))
            .transpose()
            .map_err(|e| ApiError::Internal(e.into()))?,
        created_at: rfc3339(r.try_get("created_at")?),
        created_by: r.try_get("created_by")?,
        revoked_at: r.try_get::<Option<i64>, _>("revoked_at")?.map(rfc3339),
    })
}

/// The store.
#[derive(Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Writers of this process take turns; PostgreSQL also locks the environment row
    /// so that several replicas take turns too.
    write_lock: Mutex<()>,
    /// Set by the server: store latency is exported with the other metrics.
    metrics: std::sync::OnceLock<std::sync::Arc<crate::metrics::Metrics>>,
    /// The store's identity, read once.
    identity: tokio::sync::OnceCell<String>,
    /// SQLite: the file, locked for this process's lifetime.
    _lock: Option<std::fs::File>,
    /// SQLite: the file's path and identity (device, inode) when opened.
    file: Option<(std::path::PathBuf, u64, u64)>,
    /// The URL, to probe the store directly when the pool cannot reach it (never shown).
    url: String,
    options: StoreOptions,
    /// Set while the store is known unreachable: writes probe it with one direct
    /// connection first, so a responder gets a 503 at once rather than after the timeout.
    unreachable: std::sync::atomic::AtomicBool,
}

/// A write transaction on a connection of its own. A connection whose transaction did
/// not end cleanly (its COMMIT or ROLLBACK failed, or the write was abandoned on an
/// error) is closed, never returned to the pool: SQLite keeps a transaction open when
/// its COMMIT fails (a full disk), and a pooled connection with an open transaction
/// turns every later write on it into a savepoint of a transaction that never commits,
/// acknowledged and then lost.
pub(crate) struct Tx {
    conn: sqlx::pool::PoolConnection<Any>,
    open: bool,
}

impl Tx {
    async fn begin(
        mut conn: sqlx::pool::PoolConnection<Any>,
        backend: Backend,
    ) -> Result<Self, sqlx::Error> {
        // SQLite: take the write lock now, not at the first write (no upgrade deadlock).
        let sql = match backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        if let Err(e) = sqlx::query(sql).execute(&mut *conn).await {
            conn.close_on_drop();
            return Err(e);
        }
        Ok(Self { conn, open: true })
    }

    /// Rolls back; the connection goes back to the pool only when that worked.
    async fn rollback(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("ROLLBACK").execute(&mut *self.conn).await?;
        self.open = false;
        Ok(())
    }

    /// Commits; only an `Ok` means the write is durable.
    async fn commit(mut self) -> Result<(), sqlx::Error> {
        match sqlx::query("COMMIT").execute(&mut *self.conn).await {
            Ok(_) => {
                self.open = false;
                Ok(())
            }
            Err(e) => {
                // Best effort; the connection is closed on drop either way.
                let _ = sqlx::query("ROLLBACK").execute(&mut *self.conn).await;
                Err(e)
            }
        }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.open {
            // Closing discards the open transaction (SQLite rolls back, PostgreSQL
            // aborts it when the session ends).
            self.conn.close_on_drop();
        }
    }
}

impl std::ops::Deref for Tx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

/// The file of a SQLite URL (`sqlite://flagd.db?mode=rwc`, `sqlite:///var/lib/flagd.db`);
/// `None` for an in-memory database or another backend.
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:" && !rest.contains("mode=memory"))
        .then(|| std::path::PathBuf::from(path))
}

/// A file's device and inode: its identity, whatever its path.
fn file_id(path: &std::path::Path) -> anyhow::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("cannot read the SQLite file {}: {e}", path.display()))?;
    Ok((m.dev(), m.ino()))
}

/// Takes an exclusive lock on a SQLite file, or says which process's file it is.
fn lock_sqlite_file(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
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
    /// Exports this store's latency through these metrics.
    pub fn set_metrics(&self, m: std::sync::Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(m);
    }

    fn observe(&self, operation: &'static str, since: std::time::Instant) {
        if let Some(m) = self.metrics.get() {
            m.store_op(operation, since);
        }
    }

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
            .max_connections(if backend == Backend::Sqlite { 4 } else { 16 })
            .acquire_timeout(options.timeout);
        let busy_ms = options.timeout.as_millis().clamp(1, i32::MAX as u128);
        if backend == Backend::Sqlite {
            opts = opts.after_connect(move |conn, _| {
                Box::pin(async move {
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
                    Ok(())
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
        Ok(Self {
            pool,
            backend,
            write_lock: Mutex::new(()),
            metrics: std::sync::OnceLock::new(),
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
    async fn probe_url(url: &str, timeout: std::time::Duration) -> Result<(), String> {
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
    async fn unreachable_because(&self) -> Option<String> {
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
    async fn acquire(&self) -> ApiResult<sqlx::pool::PoolConnection<Any>> {
        use std::sync::atomic::Ordering;
        if self.unreachable.load(Ordering::Relaxed)
            && let Some(why) = self.unreachable_because().await
        {
            return Err(ApiError::Unavailable(why));
        }
        let acquire = self.pool.acquire();
        tokio::pin!(acquire);
        let result = if self.backend == Backend::Postgres {
            let patience = (self.options.timeout / 5).min(std::time::Duration::from_secs(1));
            match tokio::time::timeout(patience, &mut acquire).await {
                Ok(r) => r,
                Err(_) => {
                    if let Some(why) = self.unreachable_because().await {
                        return Err(ApiError::Unavailable(why));
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
                Some(why) => ApiError::Unavailable(why),
                None => ApiError::Unavailable(format!(
                    "the store is busy: no connection to it within {} (--store-timeout)",
                    humantime::format_duration(self.options.timeout)
                )),
            }),
            Err(e @ sqlx::Error::Io(_)) => Err(match self.unreachable_because().await {
                Some(why) => ApiError::Unavailable(why),
                None => e.into(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// A connection for reads.
    async fn read(&self) -> ApiResult<sqlx::pool::PoolConnection<Any>> {
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
    fn check_file(&self) -> ApiResult<()> {
        let Some((path, dev, ino)) = &self.file else {
            return Ok(());
        };
        match file_id(path) {
            Ok(id) if id == (*dev, *ino) => Ok(()),
            Ok(_) => Err(ApiError::Unavailable(format!(
                "the store's SQLite file {} was replaced while flagd ran: flagd takes no writes into the old one; put the original back, or restart flagd to serve the new one",
                path.display()
            ))),
            Err(_) => Err(ApiError::Unavailable(format!(
                "the store's SQLite file {} was deleted while flagd ran: flagd takes no writes into it; restore it, and writes resume",
                path.display()
            ))),
        }
    }

    /// Starts a write transaction, if the store can take writes.
    async fn begin_tx(&self) -> ApiResult<Tx> {
        self.check_file()?;
        let conn = self.acquire().await?;
        Ok(Tx::begin(conn, self.backend).await?)
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
            let mut why = ApiError::from(e).to_string();
            if let Some(files) = self.unwritable_files() {
                why.push_str(&format!("; flagd cannot write {files}"));
            }
            anyhow::bail!(why);
        }
        tx.rollback().await?;
        Ok(())
    }

    /// Whether every migration is applied.
    async fn migrated(&self, conn: &mut AnyConnection) -> anyhow::Result<()> {
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

    /// SQLite: which of the database's files this process cannot open for writing
    /// (SQLite gives the -wal and -shm files the database's own mode, so making only the
    /// database writable again is not enough).
    fn unwritable_files(&self) -> Option<String> {
        let (path, _, _) = self.file.as_ref()?;
        let mut names = vec![path.clone()];
        for suffix in ["-wal", "-shm"] {
            let mut p = path.clone().into_os_string();
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

    /// Closes the pool after in-flight queries finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// All environments.
    pub async fn environments(&self) -> ApiResult<Vec<Environment>> {
        let mut conn = self.read().await?;
        let rows = sqlx::query("SELECT * FROM environments ORDER BY seq")
            .fetch_all(&mut *conn)
            .await?;
        rows.iter().map(env_of).collect()
    }

    /// One environment, or 404.
    pub async fn environment(&self, key: &str) -> ApiResult<Environment> {
        let start = std::time::Instant::now();
        let r = self.environment_unobserved(key).await;
        self.observe("read_environment", start);
        r
    }

    async fn environment_unobserved(&self, key: &str) -> ApiResult<Environment> {
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT * FROM environments WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
        match row {
            Some(r) => env_of(&r),
            None => Err(ApiError::NotFound(format!("no environment \"{key}\""))),
        }
    }

    /// Creates an environment (empty flag set, version 0).
    pub async fn create_environment(
        &self,
        actor: &str,
        key: &str,
        name: &str,
        production: bool,
    ) -> ApiResult<Environment> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let exists = sqlx::query("SELECT key FROM environments WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Err(ApiError::Conflict {
                message: format!("environment \"{key}\" exists already"),
                current_version: None,
            });
        }
        sqlx::query("INSERT INTO environments (key, name, production, head_version, next_position, created_at, seq) \
             VALUES ($1, $2, $3, 0, 1, $4, (SELECT COALESCE(MAX(seq), 0) + 1 FROM environments))")
            .bind(key)
            .bind(name)
            .bind(i64::from(production))
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        let env = env_of(
            &sqlx::query("SELECT * FROM environments WHERE key = $1")
                .bind(key)
                .fetch_one(&mut *tx)
                .await?,
        )?;
        audit(
            &mut tx,
            &AuditRecord {
                actor: actor.into(),
                action: "environment.create".into(),
                env: Some(key.into()),
                target: key.into(),
                reason: None,
                before: None,
                after: Some(serde_json::to_value(&env).map_err(|e| ApiError::Internal(e.into()))?),
            },
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(env)
    }

    /// Deletes an environment: refused while it has flags unless `force`.
    pub async fn delete_environment(
        &self,
        actor: &str,
        key: &str,
        force: bool,
        reason: Option<&str>,
    ) -> ApiResult<()> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let env = lock_env(&mut tx, self.backend, key).await?;
        let flags: i64 = sqlx::query(
            "SELECT COUNT(*) FROM revisions WHERE env = $1 AND kind = 'flag' AND valid_to = $2",
        )
        .bind(key)
        .bind(OPEN)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        if flags > 0 && !force {
            return Err(ApiError::Conflict {
                message: format!(
                    "environment \"{key}\" has {flags} flags; delete them first or pass force=true"
                ),
                current_version: Some(env.version),
            });
        }
        for table in ["version_flags", "versions", "revisions"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE env = $1"))
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM environments WHERE key = $1")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            &AuditRecord {
                actor: actor.into(),
                action: "environment.delete".into(),
                env: Some(key.into()),
                target: key.into(),
                reason: reason.map(Into::into),
                before: Some(serde_json::json!({"environment": env, "flags": flags})),
                after: None,
            },
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The items of an environment's flag set at a version (head when `None`), with the
    /// version read.
    pub async fn items(&self, env: &str, version: Option<u64>) -> ApiResult<(u64, Items)> {
        let start = std::time::Instant::now();
        let r = self.items_unobserved(env, version).await;
        self.observe("read_flag_set", start);
        r
    }

    async fn items_unobserved(&self, env: &str, version: Option<u64>) -> ApiResult<(u64, Items)> {
        let e = self.environment(env).await?;
        let v = match version {
            None => e.version,
            Some(v) if v > e.version => {
                return Err(ApiError::NotFound(format!(
                    "environment \"{env}\" has no version {v} (head is {})",
                    e.version
                )));
            }
            Some(v) => v,
        };
        let mut conn = self.read().await?;
        let items = read_items(&mut *conn, env, v).await?;
        Ok((v, items))
    }

    /// Versions of an environment, newest first.
    pub async fn versions(
        &self,
        env: &str,
        flag: Option<&str>,
        before: Option<u64>,
        limit: u32,
    ) -> ApiResult<Vec<VersionInfo>> {
        self.environment(env).await?;
        let before = before.map_or(i64::MAX, to_i64);
        let mut conn = self.read().await?;
        let rows = match flag {
            None => {
                sqlx::query("SELECT * FROM versions WHERE env = $1 AND version < $2 ORDER BY version DESC LIMIT $3")
                    .bind(env)
                    .bind(before)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *conn)
                    .await?
            }
            Some(f) => {
                sqlx::query(
                    "SELECT v.* FROM versions v JOIN version_flags f ON f.env = v.env AND f.version = v.version \
                     WHERE v.env = $1 AND f.flag_key = $2 AND v.version < $3 ORDER BY v.version DESC LIMIT $4",
                )
                .bind(env)
                .bind(f)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await?
            }
        };
        rows.iter().map(version_of).collect()
    }

    /// One version's record.
    pub async fn version(&self, env: &str, version: u64) -> ApiResult<VersionInfo> {
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT * FROM versions WHERE env = $1 AND version = $2")
            .bind(env)
            .bind(to_i64(version))
            .fetch_optional(&mut *conn)
            .await?;
        match row {
            Some(r) => version_of(&r),
            None => Err(ApiError::NotFound(format!(
                "environment \"{env}\" has no version {version}"
            ))),
        }
    }

    /// The store's random identity, made when it was created: SDKs holding a flag set
    /// from another store (a new database, another cluster) are sent a full snapshot.
    pub async fn identity(&self) -> ApiResult<String> {
        self.identity
            .get_or_try_init(|| async {
                let mut conn = self.read().await?;
                let row = sqlx::query("SELECT id FROM store_identity")
                    .fetch_optional(&mut *conn)
                    .await?;
                match row {
                    Some(r) => Ok(r.try_get::<String, _>("id")?),
                    None => Err(ApiError::Internal(anyhow::anyhow!(
                        "the store has no identity (store_identity is empty)"
                    ))),
                }
            })
            .await
            .cloned()
    }

    /// When a version was committed (ms), if the store has it: with the identity, this
    /// tells a version apart from another of the same number in a restored backup.
    pub async fn version_at(&self, env: &str, version: u64) -> ApiResult<Option<i64>> {
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT created_at FROM versions WHERE env = $1 AND version = $2")
            .bind(env)
            .bind(to_i64(version))
            .fetch_optional(&mut *conn)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("created_at")?),
            None => None,
        })
    }

    /// Starts a change of an environment's flag set. `if_match` is the version the caller
    /// based its change on: a stale one is refused with 409.
    pub async fn begin_write(&self, env: &str, if_match: Option<u64>) -> ApiResult<WriteTx<'_>> {
        let started = std::time::Instant::now();
        let guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let e = lock_env(&mut tx, self.backend, env).await?;
        if let Some(base) = if_match
            && base != e.version
        {
            return Err(ApiError::Conflict {
                message: format!(
                    "the change is based on version {base}, but \"{env}\" is at version {}",
                    e.version
                ),
                current_version: Some(e.version),
            });
        }
        let row = sqlx::query(
            "SELECT next_position, head_flags, head_bytes FROM environments WHERE key = $1",
        )
        .bind(env)
        .fetch_one(&mut *tx)
        .await?;
        let next_position: i64 = row.try_get(0)?;
        let head_size = match (
            row.try_get::<Option<i64>, _>(1)?,
            row.try_get::<Option<i64>, _>(2)?,
        ) {
            (Some(f), Some(b)) => Some((f, b)),
            _ => None,
        };
        Ok(WriteTx {
            _guard: guard,
            started,
            metrics: self.metrics.get().cloned(),
            tx,
            env: e,
            next_position,
            head_size,
            backend: self.backend,
            changes: Vec::new(),
            keys_only: false,
        })
    }

    /// Audit entries, newest first.
    pub async fn audit_log(&self, q: &AuditQuery) -> ApiResult<Vec<AuditEntry>> {
        let mut sql = String::from("SELECT * FROM audit WHERE id < $1");
        let mut n = 1;
        let mut arg = |sql: &mut String, cond: &str| {
            n += 1;
            sql.push_str(&cond.replace('?', &format!("${n}")));
        };
        if q.env.is_some() {
            arg(&mut sql, " AND env = ?");
        }
        if q.flag.is_some() {
            // A flag's own entries, and every import or revert whose version changed it
            // (version_flags is written in the same transaction as the version).
            arg(
                &mut sql,
                " AND ((target = ? AND action LIKE 'flag.%') OR (action LIKE 'flagset.%' \
                 AND version IS NOT NULL AND EXISTS (SELECT 1 FROM version_flags vf \
                 WHERE vf.env = audit.env AND vf.version = audit.version AND vf.flag_key = ?)))",
            );
        }
        if q.actor.is_some() {
            arg(&mut sql, " AND actor = ?");
        }
        let action = q.action.as_ref().map(|a| match a.strip_suffix('.') {
            // LIKE with the pattern's own wildcards escaped.
            Some(prefix) => (
                true,
                format!(
                    "{}.%",
                    prefix
                        .replace('\\', "\\\\")
                        .replace('%', "\\%")
                        .replace('_', "\\_")
                ),
            ),
            None => (false, a.clone()),
        });
        match &action {
            Some((true, _)) => arg(&mut sql, " AND action LIKE ? ESCAPE '\\'"),
            Some((false, _)) => arg(&mut sql, " AND action = ?"),
            None => {}
        }
        if q.since.is_some() {
            arg(&mut sql, " AND at >= ?");
        }
        if q.until.is_some() {
            arg(&mut sql, " AND at < ?");
        }
        if let Some(envs) = &q.allowed_envs {
            // Environment-limited tokens see their environments' entries only.
            let list = envs
                .iter()
                .map(|e| format!("'{}'", e.replace('\'', "''")))
                .collect::<Vec<_>>()
                .join(", ");
            if list.is_empty() {
                sql.push_str(" AND FALSE");
            } else {
                sql.push_str(&format!(" AND env IN ({list})"));
            }
        }
        arg(&mut sql, " ORDER BY id DESC LIMIT ?");
        let mut query = sqlx::query(&sql).bind(q.before_id.unwrap_or(i64::MAX));
        for v in [&q.env, &q.flag, &q.actor].into_iter().flatten() {
            query = query.bind(v.clone());
        }
        if let Some((_, a)) = action {
            query = query.bind(a);
        }
        for v in [q.since, q.until].into_iter().flatten() {
            query = query.bind(v);
        }
        let mut conn = self.read().await?;
        let rows = query.bind(i64::from(q.limit)).fetch_all(&mut *conn).await?;
        rows.iter()
            .map(|r| {
                let json = |c: &str| -> ApiResult<Option<Value>> {
                    let s: Option<String> = r.try_get(c)?;
                    s.map(|s| serde_json::from_str(&s))
                        .transpose()
                        .map_err(|e| ApiError::Internal(e.into()))
                };
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: rfc3339(r.try_get("at")?),
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    environment: r.try_get("env")?,
                    target: r.try_get("target")?,
                    reason: r.try_get("reason")?,
                    before: json("before")?,
                    after: json("after")?,
                    version: r.try_get::<Option<i64>, _>("version")?.map(to_u64),
                })
            })
            .collect()
    }

    /// The token with this secret hash, if active.
    pub async fn token_by_hash(&self, hash: &str) -> ApiResult<Option<TokenInfo>> {
        let start = std::time::Instant::now();
        let r = self.token_by_hash_unobserved(hash).await;
        self.observe("read_token", start);
        r
    }

    async fn token_by_hash_unobserved(&self, hash: &str) -> ApiResult<Option<TokenInfo>> {
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT * FROM tokens WHERE hash = $1 AND revoked_at IS NULL")
            .bind(hash)
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(token_of).transpose()
    }

    /// An active token (or SDK key) by id.
    pub async fn token_by_id(&self, id: &str) -> ApiResult<Option<TokenInfo>> {
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT * FROM tokens WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(token_of).transpose()
    }

    /// Active tokens (and SDK keys).
    pub async fn tokens(&self) -> ApiResult<Vec<TokenInfo>> {
        let mut conn = self.read().await?;
        let rows =
            sqlx::query("SELECT * FROM tokens WHERE revoked_at IS NULL ORDER BY created_at, name")
                .fetch_all(&mut *conn)
                .await?;
        rows.iter().map(token_of).collect()
    }

    /// Whether any token exists at all (the first start creates one).
    pub async fn has_tokens(&self) -> ApiResult<bool> {
        let mut conn = self.read().await?;
        Ok(sqlx::query("SELECT id FROM tokens LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?
            .is_some())
    }

    /// Stores a new token by the hash of its secret.
    pub async fn create_token(
        &self,
        actor: &str,
        id: &str,
        name: &str,
        role: &str,
        environments: Option<&[String]>,
        hash: &str,
    ) -> ApiResult<TokenInfo> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let taken = sqlx::query("SELECT id FROM tokens WHERE name = $1 AND revoked_at IS NULL")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(ApiError::Conflict {
                message: format!("an active token named \"{name}\" exists already"),
                current_version: None,
            });
        }
        let info = insert_token(&mut tx, actor, id, name, role, environments, hash, None).await?;
        tx.commit().await?;
        Ok(info)
    }

    /// Opens a UI session for a token: stores the hash of the session secret and the
    /// CSRF token, and forgets expired sessions. The audit log records the sign-in.
    pub async fn create_session(
        &self,
        token: &TokenInfo,
        secret_hash: &str,
        csrf: &str,
        expires_at: i64,
    ) -> ApiResult<()> {
        let mut tx = self.begin_tx().await?;
        let now = now_ms();
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO sessions (hash, token_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(secret_hash)
            .bind(&token.id)
            .bind(csrf)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            &AuditRecord {
                actor: token.name.clone(),
                action: "session.create".into(),
                env: None,
                target: token.name.clone(),
                reason: None,
                before: None,
                after: Some(serde_json::json!({"expiresAt": rfc3339(expires_at)})),
            },
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The live session with this secret hash: its token (active), CSRF token and expiry.
    pub async fn session(&self, secret_hash: &str) -> ApiResult<Option<Session>> {
        let start = std::time::Instant::now();
        let r = self.session_unobserved(secret_hash).await;
        self.observe("read_session", start);
        r
    }

    async fn session_unobserved(&self, secret_hash: &str) -> ApiResult<Option<Session>> {
        let mut conn = self.read().await?;
        let row = sqlx::query(
            "SELECT s.csrf AS session_csrf, s.expires_at AS session_expires, t.* FROM sessions s \
             JOIN tokens t ON t.id = s.token_id \
             WHERE s.hash = $1 AND s.expires_at > $2 AND t.revoked_at IS NULL",
        )
        .bind(secret_hash)
        .bind(now_ms())
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|r| {
            Ok(Session {
                token: token_of(&r)?,
                csrf: r.try_get("session_csrf")?,
                expires_at: r.try_get("session_expires")?,
            })
        })
        .transpose()
    }

    /// Ends a session (sign-out), with an audit entry.
    pub async fn delete_session(&self, secret_hash: &str, actor: &str) -> ApiResult<()> {
        let mut tx = self.begin_tx().await?;
        let gone = sqlx::query("DELETE FROM sessions WHERE hash = $1")
            .bind(secret_hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone > 0 {
            audit(
                &mut tx,
                &AuditRecord {
                    actor: actor.into(),
                    action: "session.delete".into(),
                    env: None,
                    target: actor.into(),
                    reason: None,
                    before: None,
                    after: None,
                },
                None,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// For each flag of the environment ever changed: the version that last changed it.
    pub async fn last_changes(&self, env: &str) -> ApiResult<HashMap<String, VersionSummary>> {
        let mut conn = self.read().await?;
        let rows = sqlx::query(
            "SELECT flag_key, MAX(version) AS version FROM version_flags WHERE env = $1 GROUP BY flag_key",
        )
        .bind(env)
        .fetch_all(&mut *conn)
        .await?;
        let mut by_flag = Vec::with_capacity(rows.len());
        for r in &rows {
            by_flag.push((
                r.try_get::<String, _>("flag_key")?,
                r.try_get::<i64, _>("version")?,
            ));
        }
        let mut versions: Vec<i64> = by_flag.iter().map(|(_, v)| *v).collect();
        versions.sort_unstable();
        versions.dedup();
        // The version records without their changed-flag lists, which can be long.
        let mut info: HashMap<i64, VersionSummary> = HashMap::new();
        for chunk in versions.chunks(500) {
            let list = (0..chunk.len())
                .map(|i| format!("${}", i + 2))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT version, kind, author, reason, created_at FROM versions WHERE env = $1 AND version IN ({list})"
            );
            let mut q = sqlx::query(&sql).bind(env);
            for v in chunk {
                q = q.bind(*v);
            }
            for r in q.fetch_all(&mut *conn).await? {
                let v: i64 = r.try_get("version")?;
                info.insert(
                    v,
                    VersionSummary {
                        version: to_u64(v),
                        kind: r.try_get("kind")?,
                        author: r.try_get("author")?,
                        reason: r.try_get("reason")?,
                        created_at: rfc3339(r.try_get("created_at")?),
                    },
                );
            }
        }
        Ok(by_flag
            .into_iter()
            .filter_map(|(k, v)| info.get(&v).map(|i| (k, i.clone())))
            .collect())
    }

    /// Makes `hash` the bootstrap admin token (`FLAGD_ADMIN_TOKEN`), in one transaction:
    /// nothing when it is the secret of an active token; refused when it is a revoked
    /// token's (a revoked secret never works again); else the active tokens named
    /// `admin` are revoked and a new `admin` token is made, both audited, or neither.
    pub async fn bootstrap_token(&self, id: &str, hash: &str) -> ApiResult<BootstrapToken> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let existing = sqlx::query("SELECT name, revoked_at FROM tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(r) = existing {
            let name: String = r.try_get("name")?;
            let revoked_at = r.try_get::<Option<i64>, _>("revoked_at")?;
            tx.rollback().await?;
            return match revoked_at {
                None => Ok(BootstrapToken::Kept),
                Some(at) => Err(ApiError::Conflict {
                    message: format!(
                        "FLAGD_ADMIN_TOKEN is the secret of token \"{name}\", revoked at {}: a revoked secret never works again; start with a new one (nothing was changed)",
                        rfc3339(at)
                    ),
                    current_version: None,
                }),
            };
        }
        let olds = sqlx::query("SELECT * FROM tokens WHERE name = 'admin' AND revoked_at IS NULL")
            .fetch_all(&mut *tx)
            .await?;
        let reason = Some("replaced by the FLAGD_ADMIN_TOKEN given at start".to_owned());
        for row in &olds {
            revoke_in(&mut tx, "flagd", &token_of(row)?, reason.clone()).await?;
        }
        insert_token(&mut tx, "flagd", id, "admin", "admin", None, hash, reason).await?;
        tx.commit().await?;
        Ok(BootstrapToken::Replaced {
            revoked: olds.len(),
        })
    }

    /// Revokes a token.
    pub async fn revoke_token(&self, actor: &str, id: &str) -> ApiResult<TokenInfo> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let row = sqlx::query("SELECT * FROM tokens WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(ApiError::NotFound(format!(
                "no active token with id \"{id}\""
            )));
        };
        let before = token_of(&row)?;
        revoke_in(&mut tx, actor, &before, None).await?;
        tx.commit().await?;
        Ok(before)
    }
}

async fn lock_env(tx: &mut Tx, backend: Backend, env: &str) -> ApiResult<Environment> {
    // PostgreSQL: the row lock makes writers of several replicas take turns. SQLite has
    // one writer at a time anyway.
    let sql = match backend {
        Backend::Postgres => "SELECT * FROM environments WHERE key = $1 FOR UPDATE",
        Backend::Sqlite => "SELECT * FROM environments WHERE key = $1",
    };
    match sqlx::query(sql).bind(env).fetch_optional(&mut **tx).await? {
        Some(r) => env_of(&r),
        None => Err(ApiError::NotFound(format!("no environment \"{env}\""))),
    }
}

async fn read_items<'e, E: sqlx::Executor<'e, Database = Any>>(
    ex: E,
    env: &str,
    version: u64,
) -> ApiResult<Items> {
    let v = to_i64(version);
    let rows = sqlx::query("SELECT kind, key, position, definition FROM revisions WHERE env = $1 AND valid_to > $2 AND valid_from <= $2")
        .bind(env)
        .bind(v)
        .fetch_all(ex)
        .await?;
    let mut items = Items::new();
    for r in rows {
        let kind = parse_kind(&r.try_get::<String, _>("kind")?)?;
        let key: String = r.try_get("key")?;
        let def: String = r.try_get("definition")?;
        let definition = serde_json::from_str(&def).map_err(|e| ApiError::Internal(e.into()))?;
        items.insert(
            (kind, key.clone()),
            Item {
                kind,
                key,
                position: r.try_get("position")?,
                definition,
            },
        );
    }
    Ok(items)
}

/// Inserts a token and its audit entry, in the caller's transaction.
#[allow(clippy::too_many_arguments)]
async fn insert_token(
    tx: &mut Tx,
    actor: &str,
    id: &str,
    name: &str,
    role: &str,
    environments: Option<&[String]>,
    hash: &str,
    reason: Option<String>,
) -> ApiResult<TokenInfo> {
    let envs = environments.map(|e| serde_json::to_string(e).unwrap_or_else(|_| "[]".into()));
    sqlx::query("INSERT INTO tokens (id, name, role, environments, hash, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(id)
        .bind(name)
        .bind(role)
        .bind(envs)
        .bind(hash)
        .bind(now_ms())
        .bind(actor)
        .execute(&mut **tx)
        .await?;
    let info = token_of(
        &sqlx::query("SELECT * FROM tokens WHERE id = $1")
            .bind(id)
            .fetch_one(&mut **tx)
            .await?,
    )?;
    audit(
        tx,
        &AuditRecord {
            actor: actor.into(),
            action: if role == "sdk" {
                "sdk-key.create".into()
            } else {
                "token.create".into()
            },
            env: environments
                .filter(|e| e.len() == 1 && role == "sdk")
                .map(|e| e[0].clone()),
            target: name.into(),
            reason,
            before: None,
            after: Some(serde_json::to_value(&info).map_err(|e| ApiError::Internal(e.into()))?),
        },
        None,
    )
    .await?;
    Ok(info)
}

/// Revokes a token and audits it, in the caller's transaction.
async fn revoke_in(
    tx: &mut Tx,
    actor: &str,
    before: &TokenInfo,
    reason: Option<String>,
) -> ApiResult<()> {
    sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2")
        .bind(now_ms())
        .bind(&before.id)
        .execute(&mut **tx)
        .await?;
    audit(
        tx,
        &AuditRecord {
            actor: actor.into(),
            action: if before.role == "sdk" {
                "sdk-key.revoke".into()
            } else {
                "token.revoke".into()
            },
            env: None,
            target: before.name.clone(),
            reason,
            before: Some(serde_json::to_value(before).map_err(|e| ApiError::Internal(e.into()))?),
            after: None,
        },
        None,
    )
    .await
}

async fn audit(tx: &mut Tx, r: &AuditRecord, version: Option<u64>) -> ApiResult<()> {
    let js = |v: &Option<Value>| v.as_ref().map(Value::to_string);
    sqlx::query("INSERT INTO audit (at, actor, action, env, target, reason, before, after, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .bind(now_ms())
        .bind(&r.actor)
        .bind(&r.action)
        .bind(r.env.clone())
        .bind(&r.target)
        .bind(r.reason.clone())
        .bind(js(&r.before))
        .bind(js(&r.after))
        .bind(version.map(to_i64))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Up to this many changed items, the audit entry records each item before and after.
const DETAILED_CHANGES: usize = 100;

/// One item changed by a write: (kind, key, before, after).
type Change = (ItemKind, String, Option<Value>, Option<Value>);

/// A change of one environment's flag set in progress. Nothing is visible until
/// [`WriteTx::commit`]; dropping it rolls back.
pub struct WriteTx<'s> {
    _guard: MutexGuard<'s, ()>,
    /// For the store latency of the whole write (`write`).
    started: std::time::Instant,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    tx: Tx,
    env: Environment,
    next_position: i64,
    /// The head's flag count and document bytes before this change, when known.
    head_size: Option<(i64, i64)>,
    backend: Backend,
    changes: Vec<Change>,
    /// The changes carry keys without definitions (a large revert).
    keys_only: bool,
}

impl std::fmt::Debug for WriteTx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTx")
            .field("env", &self.env.key)
            .field("changes", &self.changes.len())
            .finish_non_exhaustive()
    }
}

/// The result of a committed change.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Committed {
    /// The environment.
    pub environment: String,
    /// The new head version (unchanged when nothing changed).
    pub version: u64,
    /// Whether a new version was made.
    pub changed: bool,
    /// The flag keys changed.
    pub changed_flags: Vec<String>,
    /// Every changed item with its new definition, for the stream; `None` when the
    /// change is too large to carry (a large revert): the head is read from the store.
    #[serde(skip)]
    pub changes: Option<Vec<flagd_core::wire::Change>>,
    /// For a revert: the version whose content this one equals.
    #[serde(skip)]
    pub restores: Option<u64>,
    /// The version's record, for the UI's events and the metrics.
    #[serde(skip)]
    pub kind: ChangeKind,
    /// Who made it.
    #[serde(skip)]
    pub author: String,
    /// Why.
    #[serde(skip)]
    pub reason: Option<String>,
    /// When (ms).
    #[serde(skip)]
    pub at: i64,
}

impl WriteTx<'_> {
    /// The environment, as locked.
    pub fn environment(&self) -> &Environment {
        &self.env
    }

    /// The head items.
    pub async fn head(&mut self) -> ApiResult<Items> {
        read_items(&mut *self.tx, &self.env.key, self.env.version).await
    }

    /// The items at an earlier version.
    pub async fn at(&mut self, version: u64) -> ApiResult<Items> {
        if version > self.env.version {
            return Err(ApiError::NotFound(format!(
                "environment \"{}\" has no version {version} (head is {})",
                self.env.key, self.env.version
            )));
        }
        read_items(&mut *self.tx, &self.env.key, version).await
    }

    /// The head evaluators (what validating one flag needs), without reading the flags.
    pub async fn evaluators(&mut self) -> ApiResult<Items> {
        let rows = sqlx::query("SELECT key, position, definition FROM revisions WHERE env = $1 AND kind = 'evaluator' AND valid_to = $2")
            .bind(&self.env.key)
            .bind(OPEN)
            .fetch_all(&mut *self.tx)
            .await?;
        let mut items = Items::new();
        for r in rows {
            let key: String = r.try_get("key")?;
            let def: String = r.try_get("definition")?;
            let definition =
                serde_json::from_str(&def).map_err(|e| ApiError::Internal(e.into()))?;
            items.insert(
                (ItemKind::Evaluator, key.clone()),
                Item {
                    kind: ItemKind::Evaluator,
                    key,
                    position: r.try_get("position")?,
                    definition,
                },
            );
        }
        Ok(items)
    }

    /// One head item.
    pub async fn get(&mut self, kind: ItemKind, key: &str) -> ApiResult<Option<Item>> {
        let row = sqlx::query("SELECT position, definition FROM revisions WHERE env = $1 AND kind = $2 AND key = $3 AND valid_to = $4")
            .bind(&self.env.key)
            .bind(kind_str(kind))
            .bind(key)
            .bind(OPEN)
            .fetch_optional(&mut *self.tx)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let def: String = r.try_get("definition")?;
        Ok(Some(Item {
            kind,
            key: key.to_owned(),
            position: r.try_get("position")?,
            definition: serde_json::from_str(&def).map_err(|e| ApiError::Internal(e.into()))?,
        }))
    }

    fn new_version(&self) -> i64 {
        to_i64(self.env.version + 1)
    }

    /// Sets an item (`None` deletes it). `position` keeps an item's place (e.g. when
    /// restoring it); new items go last. Unchanged items are not written.
    pub async fn put(
        &mut self,
        kind: ItemKind,
        key: &str,
        value: Option<Value>,
        position: Option<i64>,
    ) -> ApiResult<()> {
        let current = self.get(kind, key).await?;
        let before = current.as_ref().map(|c| c.definition.clone());
        if before == value {
            return Ok(());
        }
        let v = self.new_version();
        if current.is_some() {
            sqlx::query("UPDATE revisions SET valid_to = $1 WHERE env = $2 AND kind = $3 AND key = $4 AND valid_to = $5")
                .bind(v)
                .bind(&self.env.key)
                .bind(kind_str(kind))
                .bind(key)
                .bind(OPEN)
                .execute(&mut *self.tx)
                .await?;
        }
        if let Some(def) = &value {
            let position = match (position, &current) {
                (Some(p), _) => p,
                (None, Some(c)) => c.position,
                (None, None) => {
                    self.next_position += 1;
                    self.next_position - 1
                }
            };
            sqlx::query("INSERT INTO revisions (env, kind, key, valid_from, valid_to, position, definition) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                .bind(&self.env.key)
                .bind(kind_str(kind))
                .bind(key)
                .bind(v)
                .bind(OPEN)
                .bind(position)
                .bind(def.to_string())
                .execute(&mut *self.tx)
                .await?;
        }
        self.changes.push((kind, key.to_owned(), before, value));
        Ok(())
    }

    /// Makes the content of version `n` the head, in the database: closes the current
    /// rows that differ from `n`, copies `n`'s rows for the items that are then not
    /// current. Only the items that differ are written, and none travel to this process.
    /// How many flags the set held at version `n`.
    pub async fn flag_count_at(&mut self, n: u64) -> ApiResult<u64> {
        let count: i64 = sqlx::query(
            "SELECT COUNT(*) FROM revisions WHERE env = $1 AND kind = 'flag' AND valid_from <= $2 AND valid_to > $2",
        )
        .bind(&self.env.key)
        .bind(to_i64(n))
        .fetch_one(&mut *self.tx)
        .await?
        .try_get(0)?;
        Ok(to_u64(count))
    }

    /// The head version this write is based on.
    pub fn base_version(&self) -> u64 {
        self.env.version
    }

    pub async fn revert_to(&mut self, n: u64) -> ApiResult<()> {
        if n > self.env.version {
            return Err(ApiError::NotFound(format!(
                "environment \"{}\" has no version {n} (head is {})",
                self.env.key, self.env.version
            )));
        }
        let (v, n) = (self.new_version(), to_i64(n));
        let same_at_n = "SELECT 1 FROM revisions t WHERE t.env = h.env AND t.kind = h.kind AND t.key = h.key \
                         AND t.valid_from <= $3 AND t.valid_to > $3 AND t.definition = h.definition";
        sqlx::query(&format!("UPDATE revisions SET valid_to = $1 WHERE env = $2 AND valid_to = $4 AND NOT EXISTS ({})", same_at_n.replace(" h.", " revisions.")))
            .bind(v)
            .bind(&self.env.key)
            .bind(n)
            .bind(OPEN)
            .execute(&mut *self.tx)
            .await?;
        sqlx::query(
            "INSERT INTO revisions (env, kind, key, valid_from, valid_to, position, definition) \
             SELECT t.env, t.kind, t.key, $1, $4, t.position, t.definition FROM revisions t \
             WHERE t.env = $2 AND t.valid_from <= $3 AND t.valid_to > $3 \
             AND NOT EXISTS (SELECT 1 FROM revisions h WHERE h.env = t.env AND h.kind = t.kind AND h.key = t.key AND h.valid_to = $4)",
        )
        .bind(v)
        .bind(&self.env.key)
        .bind(n)
        .bind(OPEN)
        .execute(&mut *self.tx)
        .await?;
        // What changed: the rows just closed (before) and just opened (after). A large
        // revert reads only the keys: the stream announces it as a restore (P9) and
        // flagd's cache reloads the head, so 10,000 definitions need not be parsed here
        // while every SDK waits. Both sides are indexed: closed rows by (env, valid_to),
        // opened rows by (env, valid_from).
        let touched = "FROM revisions WHERE env = $1 AND (valid_to = $2 OR valid_from = $2)";
        let keys = sqlx::query(&format!("SELECT kind, key {touched}"))
            .bind(&self.env.key)
            .bind(v)
            .fetch_all(&mut *self.tx)
            .await?;
        let with_definitions = keys.len() <= 2 * DETAILED_CHANGES;
        let rows = if with_definitions {
            sqlx::query(&format!("SELECT kind, key, definition, valid_to {touched}"))
                .bind(&self.env.key)
                .bind(v)
                .fetch_all(&mut *self.tx)
                .await?
        } else {
            keys
        };
        let mut changed: BTreeMap<(ItemKind, String), (Option<Value>, Option<Value>)> =
            BTreeMap::new();
        for r in rows {
            let kind = parse_kind(&r.try_get::<String, _>("kind")?)?;
            let key: String = r.try_get("key")?;
            let slot = changed.entry((kind, key)).or_default();
            if !with_definitions {
                continue;
            }
            let def: Value = serde_json::from_str(&r.try_get::<String, _>("definition")?)
                .map_err(|e| ApiError::Internal(e.into()))?;
            if r.try_get::<i64, _>("valid_to")? == v {
                slot.0 = Some(def);
            } else {
                slot.1 = Some(def);
            }
        }
        self.keys_only |= !with_definitions;
        self.changes.extend(
            changed
                .into_iter()
                .map(|((kind, key), (before, after))| (kind, key, before, after)),
        );
        Ok(())
    }

    /// Sets many items at once given the head: only those that differ are written, in
    /// batched statements (a 10,000-flag revert is a few dozen statements, not 30,000).
    /// A position of `None` keeps an item's place, or puts a new item last.
    pub async fn apply(
        &mut self,
        head: &Items,
        wanted: Vec<(ItemKind, String, Option<Value>, Option<i64>)>,
    ) -> ApiResult<()> {
        let v = self.new_version();
        let mut close: BTreeMap<ItemKind, Vec<String>> = BTreeMap::new();
        let mut insert: Vec<(ItemKind, String, i64, String)> = Vec::new();
        for (kind, key, value, position) in wanted {
            let current = head.get(&(kind, key.clone()));
            let before = current.map(|c| c.definition.clone());
            if before == value {
                continue;
            }
            if current.is_some() {
                close.entry(kind).or_default().push(key.clone());
            }
            if let Some(def) = &value {
                let position = match (position, current) {
                    (Some(p), _) => p,
                    (None, Some(c)) => c.position,
                    (None, None) => {
                        self.next_position += 1;
                        self.next_position - 1
                    }
                };
                insert.push((kind, key.clone(), position, def.to_string()));
            }
            self.changes.push((kind, key, before, value));
        }
        for (kind, keys) in close {
            for chunk in keys.chunks(500) {
                let list = (0..chunk.len())
                    .map(|i| format!("${}", i + 5))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "UPDATE revisions SET valid_to = $1 WHERE env = $2 AND kind = $3 AND valid_to = $4 AND key IN ({list})"
                );
                let mut q = sqlx::query(&sql)
                    .bind(v)
                    .bind(&self.env.key)
                    .bind(kind_str(kind))
                    .bind(OPEN);
                for k in chunk {
                    q = q.bind(k);
                }
                q.execute(&mut *self.tx).await?;
            }
        }
        for chunk in insert.chunks(100) {
            let rows = (0..chunk.len())
                .map(|r| {
                    let b = r * 7;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5,
                        b + 6,
                        b + 7
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO revisions (env, kind, key, valid_from, valid_to, position, definition) VALUES {rows}"
            );
            let mut q = sqlx::query(&sql);
            for (kind, key, position, def) in chunk {
                q = q
                    .bind(&self.env.key)
                    .bind(kind_str(*kind))
                    .bind(key)
                    .bind(v)
                    .bind(OPEN)
                    .bind(*position)
                    .bind(def);
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// The head's flag count and size after this change, and the limits on them
    /// (`flagd_core::limits`): a change that leaves the set over a limit is refused with
    /// 422, unless it is a kill switch or a revert, which are never blocked. Kept up to
    /// date from each change (O(changed items)); counted in the store when unknown and
    /// after a revert, whose definitions never come to this process.
    async fn new_head_size(&mut self, kind: ChangeKind) -> ApiResult<(i64, i64)> {
        let item_bytes = |key: &str, def: &Value| {
            i64::try_from(flagd_core::limits::json_bytes(def) + key.len() + 4).unwrap_or(i64::MAX)
        };
        let (flags, bytes) = match self.head_size {
            Some((mut flags, mut bytes)) if !self.keys_only => {
                for (k, key, before, after) in &self.changes {
                    if let Some(b) = before {
                        bytes -= item_bytes(key, b);
                        flags -= i64::from(*k == ItemKind::Flag);
                    }
                    if let Some(a) = after {
                        bytes += item_bytes(key, a);
                        flags += i64::from(*k == ItemKind::Flag);
                    }
                }
                (flags, bytes)
            }
            _ => {
                let len = match self.backend {
                    Backend::Sqlite => {
                        "LENGTH(CAST(definition AS BLOB)) + LENGTH(CAST(key AS BLOB))"
                    }
                    Backend::Postgres => "OCTET_LENGTH(definition) + OCTET_LENGTH(key)",
                };
                let row = sqlx::query(&format!(
                    "SELECT COALESCE(SUM(CASE WHEN kind = 'flag' THEN 1 ELSE 0 END), 0), \
                     COALESCE(SUM({len} + 4), 0) FROM revisions WHERE env = $1 AND valid_to = $2"
                ))
                .bind(&self.env.key)
                .bind(OPEN)
                .fetch_one(&mut *self.tx)
                .await?;
                (row.try_get::<i64, _>(0)?, row.try_get::<i64, _>(1)?)
            }
        };
        if !matches!(kind, ChangeKind::Toggle | ChangeKind::Revert) {
            let max_flags = i64::try_from(flagd_core::limits::MAX_FLAGS).unwrap_or(i64::MAX);
            let max_bytes =
                i64::try_from(flagd_core::limits::MAX_DOCUMENT_BYTES).unwrap_or(i64::MAX);
            let grew = |before: Option<i64>, now: i64| before.is_none_or(|b| now > b);
            if flags > max_flags && grew(self.head_size.map(|h| h.0), flags) {
                return Err(ApiError::invalid(
                    "flags",
                    format!(
                        "the flag set would hold {flags} flags; at most {max_flags} are allowed"
                    ),
                ));
            }
            if bytes > max_bytes && grew(self.head_size.map(|h| h.1), bytes) {
                return Err(ApiError::invalid(
                    "",
                    format!(
                        "the flag set would be {bytes} bytes; at most {max_bytes} bytes (32 MiB) are allowed"
                    ),
                ));
            }
        }
        Ok((flags, bytes))
    }

    /// Commits: one new version (when anything changed), its record, and the audit entry.
    pub async fn commit(
        mut self,
        kind: ChangeKind,
        actor: &str,
        reason: Option<&str>,
        action: &str,
        target: &str,
        reverted_to: Option<u64>,
    ) -> ApiResult<Committed> {
        let env = self.env.key.clone();
        if let Some(r) = reason
            && r.chars().count() > MAX_REASON_CHARS
        {
            return Err(ApiError::invalid(
                "reason",
                format!(
                    "is {} characters long; at most {MAX_REASON_CHARS}",
                    r.chars().count()
                ),
            ));
        }
        if self.changes.is_empty() {
            return Ok(Committed {
                environment: env,
                version: self.env.version,
                changed: false,
                changed_flags: Vec::new(),
                changes: Some(Vec::new()),
                restores: None,
                kind,
                author: actor.to_owned(),
                reason: reason.map(str::to_owned),
                at: now_ms(),
            });
        }
        let v = self.new_version();
        let mut flags: Vec<String> = self
            .changes
            .iter()
            .filter(|c| c.0 == ItemKind::Flag)
            .map(|c| c.1.clone())
            .collect();
        flags.sort();
        flags.dedup();
        let at = now_ms();
        sqlx::query("INSERT INTO versions (env, version, kind, author, reason, created_at, changed, reverted_to) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(&env)
            .bind(v)
            .bind(kind.as_str())
            .bind(actor)
            .bind(reason.map(str::to_owned))
            .bind(at)
            .bind(serde_json::to_string(&flags).map_err(|e| ApiError::Internal(e.into()))?)
            .bind(reverted_to.map(to_i64))
            .execute(&mut *self.tx)
            .await?;
        if self.keys_only {
            // Set-based: no 10,000 binds.
            sqlx::query(
                "INSERT INTO version_flags (env, flag_key, version) SELECT DISTINCT env, key, $2 \
                 FROM revisions WHERE env = $1 AND kind = 'flag' AND (valid_to = $2 OR valid_from = $2)",
            )
            .bind(&env)
            .bind(v)
            .execute(&mut *self.tx)
            .await?;
        } else {
            for chunk in flags.chunks(300) {
                let rows = (0..chunk.len())
                    .map(|r| format!("(${}, ${}, ${})", r * 3 + 1, r * 3 + 2, r * 3 + 3))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql =
                    format!("INSERT INTO version_flags (env, flag_key, version) VALUES {rows}");
                let mut q = sqlx::query(&sql);
                for f in chunk {
                    q = q.bind(&env).bind(f).bind(v);
                }
                q.execute(&mut *self.tx).await?;
            }
        }
        let (head_flags, head_bytes) = self.new_head_size(kind).await?;
        sqlx::query("UPDATE environments SET head_version = $1, next_position = $2, head_flags = $3, head_bytes = $4 WHERE key = $5")
            .bind(v)
            .bind(self.next_position)
            .bind(head_flags)
            .bind(head_bytes)
            .bind(&env)
            .execute(&mut *self.tx)
            .await?;
        // One audit entry per change; a single-item change records the item itself,
        // a many-item change (import, revert) records what changed per item.
        // A single-item change records the item before and after; a many-item change
        // (import, revert) records each changed item, up to a hundred, and beyond that
        // the versions, whose full contents stay readable.
        let (before, after) = if kind == ChangeKind::Toggle && self.changes.len() == 1 {
            // A toggle changes the state alone: that is what it records, so that a kill
            // switch costs the same in the audit log whatever the flag's size (the full
            // definitions stay readable in the versions).
            let state = |d: &Option<Value>| {
                d.as_ref()
                    .map(|d| serde_json::json!({"state": d.get("state").cloned().unwrap_or(Value::Null)}))
            };
            (state(&self.changes[0].2), state(&self.changes[0].3))
        } else if self.changes.len() == 1 && !self.keys_only {
            (self.changes[0].2.clone(), self.changes[0].3.clone())
        } else if self.changes.len() <= DETAILED_CHANGES && !self.keys_only {
            let side = |pick: fn(&Change) -> &Option<Value>| {
                let m: Map<String, Value> = self
                    .changes
                    .iter()
                    .map(|c| {
                        (
                            format!("{}:{}", kind_str(c.0), c.1),
                            pick(c).clone().unwrap_or(Value::Null),
                        )
                    })
                    .collect();
                Value::Object(m)
            };
            (Some(side(|c| &c.2)), Some(side(|c| &c.3)))
        } else {
            (
                Some(serde_json::json!({"version": self.env.version})),
                Some(serde_json::json!({"version": to_u64(v), "changedItems": self.changes.len()})),
            )
        };
        audit(
            &mut self.tx,
            &AuditRecord {
                actor: actor.into(),
                action: action.into(),
                env: Some(env.clone()),
                target: target.into(),
                reason: reason.map(Into::into),
                before,
                after,
            },
            Some(to_u64(v)),
        )
        .await?;
        self.tx.commit().await?;
        if let Some(m) = &self.metrics {
            m.store_op("write", self.started);
        }
        let changes = (!self.keys_only).then(|| {
            std::mem::take(&mut self.changes)
                .into_iter()
                .map(|(kind, key, _, after)| flagd_core::wire::Change {
                    kind,
                    key,
                    definition: after,
                })
                .collect()
        });
        Ok(Committed {
            environment: env,
            version: to_u64(v),
            changed: true,
            changed_flags: flags,
            changes,
            restores: reverted_to.filter(|_| action == "flagset.revert"),
            kind,
            author: actor.to_owned(),
            reason: reason.map(str::to_owned),
            at,
        })
    }
}
