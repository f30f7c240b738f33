//! The client: the current snapshot, evaluation, status and change events.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use flagd_core::document::DocumentText;
use flagd_core::{Detail, EvaluationContext, Snapshot};
use serde_json::Value;
use tokio::sync::watch;

use crate::doc::Doc;
use crate::shared::{ChangeEvent, Config, Current, Inner, Status, compile};

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The flagd URL is not `http://` or `https://`.
    #[error("the flagd URL must start with http:// or https://, got {0:?}")]
    Url(String),
    /// The bootstrap file cannot be read or is not a flag set flagd would load.
    #[error("bootstrap file {path}: {message}")]
    Bootstrap {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Builds a [`Client`].
///
/// ```no_run
/// # async fn run() -> Result<(), flagd_sdk::BuildError> {
/// use std::time::Duration;
/// let sdk = flagd_sdk::Client::builder("http://flagd:8080", "fdsdk_…")
///     .wait_for_first_snapshot(Duration::from_secs(2))
///     .bootstrap_file("flags.json")
///     .cache_file("/var/cache/app/flags.json")
///     .label("service", "checkout")
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ClientBuilder {
    /// The replicas, in order of preference.
    urls: Vec<String>,
    sdk_key: String,
    connect_timeout: Duration,
    wait: Duration,
    bootstrap: Option<PathBuf>,
    cache: Option<PathBuf>,
    host: String,
    labels: serde_json::Map<String, Value>,
    max_backoff: Duration,
    heartbeat: Duration,
    keep_versions: usize,
}

impl ClientBuilder {
    /// Another flagd replica of the same deployment (one store) to fail over to. The
    /// SDK connects to the first URL; when its connection is lost it tries the next at
    /// once, and backs off only once every replica has failed in a row. Replicas share
    /// the store's identity, so a failover resumes from the version held: it costs a
    /// delta, not a snapshot, and evaluation never stops.
    ///
    /// ```
    /// let b = flagd_sdk::Client::builder("http://flagd-a:8080", "fdsdk_…")
    ///     .fallback_url("http://flagd-b:8080")
    ///     .fallback_url("http://flagd-c:8080");
    /// # drop(b);
    /// ```
    pub fn fallback_url(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// How long one connection attempt may take (default 5 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// How long [`ClientBuilder::build`] waits for the first live snapshot before it
    /// returns a client serving the cache or bootstrap file (default 3 s).
    pub fn wait_for_first_snapshot(mut self, d: Duration) -> Self {
        self.wait = d;
        self
    }

    /// A flagd-format file to serve until flagd answers (when there is no cache file).
    pub fn bootstrap_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.bootstrap = Some(path.into());
        self
    }

    /// Where the last applied snapshot is written (atomically, after each change) and
    /// read at the next start.
    pub fn cache_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.cache = Some(path.into());
        self
    }

    /// A host label shown in flagd's fleet view (default: the `HOSTNAME` variable).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// A label shown in flagd's fleet view.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), Value::String(value.into()));
        self
    }

    /// The longest wait between reconnection attempts (default 10 s).
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// How often the SDK pings flagd (default 15 s). Three heartbeats without any
    /// message from flagd (flagd answers every ping) mean a half-open connection: the
    /// SDK reports [`Status::Stale`] and reconnects, still serving its snapshot.
    ///
    /// ```
    /// let b = flagd_sdk::Client::builder("http://127.0.0.1:8080", "fdsdk_…")
    ///     .heartbeat(std::time::Duration::from_secs(5));
    /// # drop(b);
    /// ```
    pub fn heartbeat(mut self, d: Duration) -> Self {
        self.heartbeat = d.max(Duration::from_millis(10));
        self
    }

    /// How many applied versions are kept (default 4, at least 1): a revert to one of
    /// them is a swap, with nothing compiled or sent. Kept versions share every flag
    /// they have in common, and their lists and indexes in chunks, so one more made by
    /// a one-flag change costs about 8 KiB at 10,000 flags, against 7.5 MiB for the set
    /// itself (`docs/benchmarks.md`, section 8).
    ///
    /// ```
    /// let b = flagd_sdk::Client::builder("http://127.0.0.1:8080", "fdsdk_…").keep_versions(16);
    /// # drop(b);
    /// ```
    pub fn keep_versions(mut self, n: usize) -> Self {
        self.keep_versions = n.max(1);
        self
    }

    /// Starts the client: serves the cache or bootstrap file at once, connects, and
    /// returns when the first live snapshot is applied or the wait is over, whichever
    /// comes first. Never waits longer than the configured wait.
    pub async fn build(self) -> Result<Client, BuildError> {
        let stream_urls = self
            .urls
            .iter()
            .map(|u| stream_url(u).ok_or_else(|| BuildError::Url(u.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let start = initial(self.cache.as_deref(), self.bootstrap.as_deref())?;
        let (status, _) = watch::channel(Status::Connecting {
            version: start.version,
        });
        let (changes, _) = watch::channel(ChangeEvent {
            old_version: 0,
            new_version: start.version,
            changed_flags: Vec::new(),
        });
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            current: ArcSwap::from_pointee(start),
            serial: std::sync::atomic::AtomicU64::new(crate::shared::next_serial()),
            status,
            changes,
            config: Config {
                stream_urls,
                sdk_key: self.sdk_key,
                connect_timeout: self.connect_timeout,
                cache_file: self.cache,
                instance: crate::sync::random_id(),
                host: self.host,
                labels: self.labels,
                max_backoff: self.max_backoff,
                heartbeat: self.heartbeat,
                keep_versions: self.keep_versions,
            },
            stop,
        });
        let mut ready = inner.status.subscribe();
        tokio::spawn(crate::sync::run(inner.clone()));
        let _ = tokio::time::timeout(
            self.wait,
            ready.wait_for(|s| matches!(s, Status::Ready { .. })),
        )
        .await;
        Ok(Client { inner })
    }
}

/// A document's text, loaded and held as the client serves it. An object (a flag set)
/// is loaded from its text in parts, never built whole as JSON values: what makes a
/// large bootstrap or cache file quick to start from (benchmarks.md section 9).
fn load(text: &str, version: u64) -> Result<(Snapshot, Doc), String> {
    if let Some(t) = DocumentText::parse(text)
        && let Some(doc) = Doc::from_text(&t)
    {
        let snap = Snapshot::load_text(&t, version).map_err(|e| e.to_string())?;
        return Ok((snap, doc));
    }
    // Not JSON, too deep, or not an object: parsed whole for the error flagd would give.
    let doc = flagd_core::limits::value_from_slice_deep(text.as_bytes())?;
    let snap = compile(&doc, version)?;
    Ok((snap, Doc::from_value(doc)))
}

/// What a cache file holds, if it is one.
fn from_cache(text: &str) -> Option<Current> {
    let top = DocumentText::parse(text)?;
    let member = |key: &str| {
        top.member(key)
            .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
    };
    let version = member("version").and_then(|v| v.as_u64()).unwrap_or(0);
    let (snap, doc) = load(top.member("document")?.get(), version).ok()?;
    Some(Current {
        snapshot: Arc::new(snap),
        version,
        document: Arc::new(doc),
        store: member("store").and_then(|v| v.as_str().map(str::to_owned)),
        at: member("at").and_then(|v| v.as_i64()),
    })
}

/// What to serve before the first live snapshot: the cache file, else the bootstrap
/// file, else nothing.
fn initial(cache: Option<&Path>, bootstrap: Option<&Path>) -> Result<Current, BuildError> {
    if let Some(c) = cache {
        match std::fs::read_to_string(c) {
            Ok(text) => match from_cache(&text) {
                Some(current) => {
                    tracing::info!(version = current.version, file = %c.display(), "serving the cache file until flagd answers");
                    return Ok(current);
                }
                None => {
                    tracing::warn!(file = %c.display(), "the cache file is not usable; ignoring it");
                }
            },
            Err(_) => tracing::debug!(file = %c.display(), "no cache file yet"),
        }
    }
    if let Some(b) = bootstrap {
        let failed = |message: String| BuildError::Bootstrap {
            path: b.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(b).map_err(|e| failed(e.to_string()))?;
        let (snap, doc) = load(&text, 0).map_err(failed)?;
        return Ok(Current {
            snapshot: Arc::new(snap),
            version: 0,
            document: Arc::new(doc),
            store: None,
            at: None,
        });
    }
    let doc = serde_json::json!({"flags": {}});
    let snap = compile(&doc, 0).map_err(|message| BuildError::Bootstrap {
        path: PathBuf::new(),
        message,
    })?;
    Ok(Current {
        snapshot: Arc::new(snap),
        version: 0,
        document: Arc::new(Doc::from_value(doc)),
        store: None,
        at: None,
    })
}

/// The stream's URL of a flagd base URL (`http://host:port` → `ws://host:port/api/v1/stream`).
fn stream_url(url: &str) -> Option<String> {
    let base = url.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("http://") {
        Some(format!("ws://{rest}/api/v1/stream"))
    } else {
        base.strip_prefix("https://")
            .map(|rest| format!("wss://{rest}/api/v1/stream"))
    }
}

/// A handle on the live flag set. Cheap to clone; all clones share one snapshot and one
/// connection, which stops when the last clone is dropped or [`Client::close`] is called.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Starts building a client for a flagd URL (`http://host:8080`) and an SDK key.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), flagd_sdk::BuildError> {
    /// let sdk = flagd_sdk::Client::builder("http://127.0.0.1:8080", "fdsdk_…").build().await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(url: impl Into<String>, sdk_key: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            urls: vec![url.into()],
            sdk_key: sdk_key.into(),
            connect_timeout: Duration::from_secs(5),
            wait: Duration::from_secs(3),
            bootstrap: None,
            cache: None,
            host: std::env::var("HOSTNAME").unwrap_or_default(),
            labels: serde_json::Map::new(),
            max_backoff: Duration::from_secs(10),
            heartbeat: Duration::from_secs(15),
            keep_versions: crate::state::KEPT,
        }
    }

    /// `true` only when the flag evaluates to the boolean `true`. No lock, no IO, no
    /// allocation.
    ///
    /// ```no_run
    /// # fn f(sdk: &flagd_sdk::Client) {
    /// let user = flagd_sdk::EvaluationContext::new("user-42");
    /// let on = sdk.enabled("new-checkout", &user);
    /// # }
    /// ```
    #[inline]
    pub fn enabled(&self, key: &str, ctx: &EvaluationContext) -> bool {
        self.inner.with_snapshot(|s| s.enabled(key, ctx))
    }

    /// The flag's boolean value, or `default`.
    ///
    /// ```no_run
    /// # fn f(sdk: &flagd_sdk::Client, user: &flagd_sdk::EvaluationContext) {
    /// let dark = sdk.bool_value("dark-mode", user, false);
    /// # }
    /// ```
    pub fn bool_value(&self, key: &str, ctx: &EvaluationContext, default: bool) -> bool {
        self.inner
            .with_snapshot(|s| s.bool_value(key, ctx, default))
    }

    /// The flag's integer value, or `default`.
    ///
    /// ```no_run
    /// # fn f(sdk: &flagd_sdk::Client, user: &flagd_sdk::EvaluationContext) {
    /// let page = sdk.int_value("results-per-page", user, 10);
    /// # }
    /// ```
    pub fn int_value(&self, key: &str, ctx: &EvaluationContext, default: i64) -> i64 {
        self.inner.with_snapshot(|s| s.int_value(key, ctx, default))
    }

    /// The flag's numeric value, or `default`.
    ///
    /// ```no_run
    /// # fn f(sdk: &flagd_sdk::Client, user: &flagd_sdk::EvaluationContext) {
    /// let ratio = sdk.float_value("sample-ratio", user, 0.1);
    /// # }
    /// ```
    pub fn float_value(&self, key: &str, ctx: &EvaluationContext, default: f64) -> f64 {
        self.inner
            .with_snapshot(|s| s.float_value(key, ctx, default))
    }

    /// The flag's string value, or `default` (the one getter that allocates: it returns
    /// an owned string; use [`Client::with_detail`] to borrow instead).
    ///
    /// ```no_run
    /// # fn f(sdk: &flagd_sdk::Client, user: &flagd_sdk::EvaluationContext) {
    /// let provider = sdk.string_value("payment-provider", user, "stripe");
    /// # }
    /// ```
    pub fn string_value(&self, key: &str, ctx: &EvaluationContext, default: &str) -> String {
        self.inner
            .with_snapshot(|s| s.string_value(key, ctx, default).to_owned())
    }

    /// The flag's object value, or `default`.
    ///
    /// ```no_run
    /// # fn f(sdk: &flagd_sdk::Client, user: &flagd_sdk::EvaluationContext) {
    /// let banner = sdk.json_value("banner", user, serde_json::json!({}));
    /// # }
    /// ```
    pub fn json_value(&self, key: &str, ctx: &EvaluationContext, default: Value) -> Value {
        // `Null` is never an object, the only kind of value returned.
        match self
            .inner
            .with_snapshot(|s| s.json_value(key, ctx, Value::Null))
        {
            Value::Null => default,
            v => v,
        }
    }

    /// Full details of an evaluation (value, variant, reason, error, metadata and the
    /// flag-set version), passed to `f` without copying anything.
    ///
    /// ```no_run
    /// # fn f(sdk: &flagd_sdk::Client, user: &flagd_sdk::EvaluationContext) {
    /// let (reason, version) = sdk.with_detail("new-checkout", user, |d| (d.reason, d.version));
    /// # }
    /// ```
    pub fn with_detail<R>(
        &self,
        key: &str,
        ctx: &EvaluationContext,
        f: impl FnOnce(&Detail<'_>) -> R,
    ) -> R {
        let cur = self.inner.current.load();
        let mut d = cur.snapshot.evaluate(key, ctx);
        d.version = cur.version;
        f(&d)
    }

    /// Like [`Client::with_detail`], and reports `TYPE_MISMATCH` when the flag's value is
    /// not of the requested type.
    ///
    /// ```no_run
    /// # fn f(sdk: &flagd_sdk::Client, user: &flagd_sdk::EvaluationContext) {
    /// let code = sdk.with_detail_as("results-per-page", user, flagd_sdk::ValueType::Integer, |d| d.error_code);
    /// # }
    /// ```
    pub fn with_detail_as<R>(
        &self,
        key: &str,
        ctx: &EvaluationContext,
        ty: flagd_core::ValueType,
        f: impl FnOnce(&Detail<'_>) -> R,
    ) -> R {
        let cur = self.inner.current.load();
        let mut d = cur.snapshot.evaluate_as(key, ctx, ty);
        d.version = cur.version;
        f(&d)
    }

    /// What the client is doing, and the version it serves.
    ///
    /// ```no_run
    /// # fn f(sdk: &flagd_sdk::Client) {
    /// println!("{:?}", sdk.status());
    /// # }
    /// ```
    pub fn status(&self) -> Status {
        self.inner.status.borrow().clone()
    }

    /// The flag-set version being served.
    ///
    /// ```no_run
    /// # fn f(sdk: &flagd_sdk::Client) {
    /// let v = sdk.version();
    /// # }
    /// ```
    pub fn version(&self) -> u64 {
        self.inner.current.load().version
    }

    /// Change events: each applied version with the previous one and the changed flags.
    ///
    /// ```no_run
    /// # async fn f(sdk: flagd_sdk::Client) {
    /// let mut changes = sdk.subscribe();
    /// while changes.changed().await.is_ok() {
    ///     let c = changes.borrow().clone();
    ///     println!("v{} → v{}: {:?}", c.old_version, c.new_version, c.changed_flags);
    /// }
    /// # }
    /// ```
    pub fn subscribe(&self) -> watch::Receiver<ChangeEvent> {
        self.inner.changes.subscribe()
    }

    /// Status changes.
    ///
    /// ```no_run
    /// # async fn f(sdk: flagd_sdk::Client) {
    /// let mut status = sdk.status_updates();
    /// let _ = status.wait_for(|s| matches!(s, flagd_sdk::Status::Ready { .. })).await;
    /// # }
    /// ```
    pub fn status_updates(&self) -> watch::Receiver<Status> {
        self.inner.status.subscribe()
    }

    /// The flags of the served version that could not be loaded or compiled, with what
    /// is wrong with each; they evaluate with reason `ERROR` while the others are served
    /// as usual. flagd shows them in its fleet view too.
    ///
    /// ```no_run
    /// # fn f(sdk: &flagd_sdk::Client) {
    /// for p in sdk.problems() {
    ///     eprintln!("{}: {}", p.path, p.message);
    /// }
    /// # }
    /// ```
    pub fn problems(&self) -> Vec<flagd_core::Problem> {
        self.inner.current.load().snapshot.problems().to_vec()
    }

    /// Stops the connection, saying goodbye to flagd (which then forgets this instance
    /// instead of showing it unreachable); evaluation keeps serving the last snapshot.
    ///
    /// ```no_run
    /// # fn f(sdk: flagd_sdk::Client) {
    /// sdk.close();
    /// # }
    /// ```
    pub fn close(&self) {
        self.inner.stop.send_replace(true);
    }
}
