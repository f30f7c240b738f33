//! Starting and stopping the server: open the store, bootstrap a new database, serve
//! until a shutdown signal, finish in-flight requests, close the store.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth;
use crate::http;
use crate::state::AppState;
use crate::store::{Store, StoreOptions};

/// The environments a new database starts with.
pub const DEFAULT_ENVIRONMENTS: [(&str, &str, bool); 3] = [
    ("development", "Development", false),
    ("staging", "Staging", false),
    ("production", "Production", true),
];

/// Connects and applies migrations, reporting the store's operation times to the
/// metrics of `options` (what `flagd serve` does).
pub async fn open_store_for(database_url: &str, options: &Options) -> anyhow::Result<Arc<Store>> {
    open_store_with(
        database_url,
        StoreOptions {
            observer: Some(options.metrics.clone()),
            listener: Some(options.bus.clone()),
            ..StoreOptions::default()
        },
    )
    .await
}

/// Connects with these options and applies migrations.
pub async fn open_store_with(
    database_url: &str,
    options: StoreOptions,
) -> anyhow::Result<Arc<Store>> {
    let store = Store::connect_with(database_url, options).await?;
    store.migrate().await?;
    Ok(Arc::new(store))
}

/// On an empty database, creates the default environments. Makes sure an admin token
/// exists: the one given (`--admin-token`), or, when there is no token at all, a new
/// one, which is returned so that it can be shown once.
pub async fn bootstrap(store: &Store, admin_token: Option<&str>) -> anyhow::Result<Option<String>> {
    if store.environments().await?.is_empty() && !store.has_tokens().await? {
        for (key, name, production) in DEFAULT_ENVIRONMENTS {
            store
                .create_environment("flagd", key, name, production)
                .await?;
        }
    }
    match admin_token {
        Some(secret) => {
            // A new secret from the environment replaces the previous bootstrap token, in
            // one transaction: a start that fails changes nothing.
            let outcome = store
                .bootstrap_token(&auth::new_id()?, &auth::hash_secret(secret))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            match outcome {
                crate::store::BootstrapToken::Replaced { revoked } if revoked > 0 => {
                    tracing::warn!(
                        revoked,
                        "FLAGD_ADMIN_TOKEN is a new secret: it is now the admin token, and the previous admin token no longer works"
                    );
                }
                crate::store::BootstrapToken::Replaced { .. } => {
                    tracing::info!("the admin token is the FLAGD_ADMIN_TOKEN given");
                }
                crate::store::BootstrapToken::Kept => {}
            }
            Ok(None)
        }
        None if !store.has_tokens().await? => {
            let secret = auth::new_secret("fd_")?;
            store
                .create_token(
                    "flagd",
                    &auth::new_id()?,
                    "admin",
                    "admin",
                    None,
                    &auth::hash_secret(&secret),
                )
                .await?;
            Ok(Some(secret))
        }
        None => Ok(None),
    }
}

/// Raises the soft open-file limit (RLIMIT_NOFILE) to the hard limit: every connection
/// is an open file, and the common default soft limit of 1,024 would cap flagd at a
/// thousand SDKs. Returns (before, after); `None` where there is no such limit.
pub fn raise_open_file_limit() -> std::io::Result<Option<(u64, u64)>> {
    #[cfg(unix)]
    {
        let (before, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
        let after = rlimit::increase_nofile_limit(u64::MAX)?;
        Ok(Some((before, after)))
    }
    #[cfg(not(unix))]
    Ok(None)
}

/// How flagd serves.
#[derive(Clone, Debug)]
pub struct Options {
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How often each SDK stream is pinged; three silent heartbeats close it (P14, P15).
    pub heartbeat: Duration,
    /// How long an unreachable SDK instance stays in the fleet view.
    pub fleet_ttl: Duration,
    /// Browser origins allowed to call OFREP (`https://app.example.com`, or `*`); none
    /// by default.
    pub cors_origins: Vec<String>,
    /// How long a client has to send a request's headers: from the connection's start,
    /// or from a later request's first byte.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may stay idle between requests.
    pub idle_timeout: Duration,
    /// Open connections at most, websocket streams included; bounded further by the
    /// open-file limit (see [`connection_cap`]).
    pub max_connections: usize,
    /// Label sets per metric family with user-chosen labels (OFREP evaluations by flag,
    /// HTTP requests); beyond it they are counted under one overflow value.
    pub metrics_max_series: usize,
    /// Where every part of flagd reports what `/metrics` exports. Hand the same to the
    /// store ([`StoreOptions::observer`]) for its operation times.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// How often a replica on PostgreSQL compares the heads it serves with the store's,
    /// to pick up changes made through other replicas (SQLite has one flagd: never).
    pub follow_interval: Duration,
    /// The bus every committed change goes out on; the store must announce to it
    /// ([`StoreOptions::listener`]): [`open_store_for`] opens it so.
    pub bus: Arc<crate::bus::Bus>,
    /// Redis, through which replicas on one PostgreSQL announce their changes to each
    /// other (`redis://host:port`); without it they follow the store every
    /// `follow_interval`. Ignored on SQLite (one flagd).
    pub redis_url: Option<String>,
    /// This replica's name in the fleet of the deployment (random by default).
    pub replica: String,
    /// Outgoing notifications: the public URL messages link to, whether private
    /// addresses may be sent to, timeouts and retries.
    pub notify: crate::notify::Options,
    /// How often the release plans are looked at for a step that is due (a hold's end
    /// is honoured to within this).
    pub plan_interval: Duration,
    /// The Prometheus that release plans' health gates query (`http://host:9090`);
    /// without it, plans with gates are refused.
    pub prometheus_url: Option<String>,
    /// Single sign-on for people, through an OpenID Connect provider; without it, people
    /// sign in with the passwords of their local accounts.
    pub oidc: Option<crate::people::oidc::OidcOptions>,
    /// OpenFeature flagd's gRPC services on their own sockets (`--grpc-listen`), for the
    /// official OpenFeature flagd providers; none by default.
    pub grpc: Option<crate::grpc::Options>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_body_bytes: 40 << 20,
            heartbeat: Duration::from_secs(15),
            fleet_ttl: Duration::from_secs(600),
            cors_origins: Vec::new(),
            // Time enough for a slow mobile network to send a few kilobytes of headers,
            // short enough that a slowloris holds each socket for seconds only.
            header_read_timeout: Duration::from_secs(10),
            // Longer than the 60 s idle timeout of common load balancers and proxies, so
            // that the proxy, not flagd, closes a pooled connection: otherwise a request
            // the proxy sends just as flagd closes fails.
            idle_timeout: Duration::from_secs(75),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            metrics_max_series: crate::metrics::DEFAULT_MAX_SERIES,
            metrics: Arc::new(crate::metrics::Metrics::new()),
            bus: Arc::new(crate::bus::Bus::new()),
            follow_interval: Duration::from_secs(1),
            plan_interval: Duration::from_secs(1),
            prometheus_url: None,
            oidc: None,
            grpc: None,
            redis_url: None,
            replica: random_replica_name(),
            notify: crate::notify::Options::default(),
        }
    }
}

/// A name for a replica that was given none: short, random, unique enough among the
/// replicas of a deployment.
pub fn random_replica_name() -> String {
    format!("replica-{:08x}", getrandom::u32().unwrap_or(0))
}

/// The default cap on open connections. The product's target is 10,000 SDK streams per
/// replica, each an open connection: this leaves 6,000 more for reconnect storms, OFREP
/// and the UI, bounds memory, and with [`RESERVED_FILES`] fits a hard open-file limit of
/// 16,640 or more (most hosts allow far more) without being lowered.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// Open files flagd keeps for itself beside its connections: the store's pool (SQLite
/// files and their journals, or PostgreSQL sockets), the listener, the runtime's own
/// descriptors, logs. Generous: running out would fail the store, and /readyz with it.
pub const RESERVED_FILES: u64 = 256;

/// The connection cap in force: `asked`, or less when the open-file limit leaves room for
/// fewer connections beside [`RESERVED_FILES`] (with a warning then). Staying below the
/// limit means accept() never fails for want of descriptors and the store can always
/// open what it needs; beyond the cap, connections wait in the listen backlog.
pub fn connection_cap(asked: usize) -> usize {
    #[cfg(unix)]
    if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        // Half the limit when it is tiny, rather than none.
        let room = soft.saturating_sub(RESERVED_FILES).max(soft / 2).max(1);
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        if room < asked {
            tracing::warn!(
                open_file_limit = soft,
                max_connections = room,
                asked,
                "the open-file limit allows fewer connections than --max-connections; raise the hard limit (ulimit -Hn, systemd LimitNOFILE) to serve more"
            );
            return room;
        }
    }
    asked
}

/// Serves on `listener` until `shutdown` completes, then waits for in-flight requests
/// (writes included) and closes the store. Connections are limited as `options` says
/// (see [`crate::conn`]).
pub async fn run(
    listener: TcpListener,
    store: Arc<Store>,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    options.metrics.limit_series(options.metrics_max_series);
    anyhow::ensure!(
        store.announces_to(&*options.bus),
        "the store does not announce its changes to this server's bus: open it with server::open_store_for(url, &options)"
    );
    let hub = Arc::new(
        crate::hub::Hub::new(
            store.clone(),
            options.metrics.clone(),
            options.heartbeat,
            options.fleet_ttl,
        )
        .named(options.replica.clone()),
    );
    // Replicas on one PostgreSQL: announce this replica's changes to the others through
    // Redis when there is one (queued first, so that they leave before this replica's
    // own fan-out is done).
    let clustered = store.backend() == crate::store::Backend::Postgres;
    let announcer = match (&options.redis_url, clustered) {
        (Some(url), true) => Some(Arc::new(crate::announce::Announcer::new(
            url,
            &store.identity().await?,
            &options.replica,
        )?)),
        (Some(_), false) => {
            tracing::warn!(
                "--redis-url is ignored on SQLite: one flagd serves a SQLite file, it has no other replicas to tell"
            );
            None
        }
        (None, _) => None,
    };
    let announces: Option<Arc<dyn crate::bus::Subscriber>> = announcer
        .clone()
        .map(|a| a as Arc<dyn crate::bus::Subscriber>);
    // What follows a commit, in order: the announcement to other replicas (queued), the
    // SDK fan-out and flagd's heads, the change counters; then, off the writer's path,
    // the UI's events.
    let fan_out: Arc<dyn crate::bus::Subscriber> = hub.clone();
    let counters: Arc<dyn crate::bus::Subscriber> = options.metrics.clone();
    if let Some(a) = &announces {
        options.bus.subscribe(a);
    }
    options.bus.subscribe(&fan_out);
    options.bus.subscribe(&counters);
    let ui_events = tokio::spawn(crate::hub::forward_changes_to_ui(
        hub.clone(),
        options.bus.listen(),
    ));
    // Replicas on one PostgreSQL: follow the others' changes (announced on Redis when
    // there is one, found in the store every interval regardless), share the fleet.
    let mut replica_tasks = Vec::new();
    let stop_announcing = tokio::sync::watch::channel(false).0;
    let mut announcing = None;
    if clustered {
        tracing::info!(replica = options.replica, "replica of a PostgreSQL store");
        replica_tasks.push(tokio::spawn(
            hub.clone().follow_store(options.follow_interval),
        ));
        replica_tasks.push(tokio::spawn(hub.clone().report_fleet()));
        if let Some(a) = &announcer {
            announcing = Some(
                a.clone()
                    .publish_on_own_thread(stop_announcing.subscribe())?,
            );
            replica_tasks.push(tokio::spawn(a.clone().follow(hub.clone())));
        }
    }
    // Notifications read what to send from the store (the versions, the outbox), so
    // the bus only wakes them: nothing of theirs is on the commit path.
    let notifier = Arc::new(crate::notify::Notifier::new(
        store.clone(),
        hub.clone(),
        options.notify.clone(),
    )?);
    let notifying = tokio::spawn(notifier.clone().run(options.bus.listen()));
    // Release plans: every replica looks, and the one that claims a due plan moves it.
    let planner = Arc::new(crate::plans::Planner::new(
        store.clone(),
        notifier.clone(),
        options.prometheus_url.as_deref(),
        options.replica.clone(),
        options.plan_interval,
    )?);
    let planning = tokio::spawn(planner.clone().run());
    let oidc = match &options.oidc {
        Some(o) => Some(Arc::new(crate::people::oidc::Oidc::new(o.clone())?)),
        None => None,
    };
    let state = AppState::new(crate::state::Parts {
        store: store.clone(),
        hub: hub.clone(),
        notifier,
        planner,
        oidc,
    });
    // The gRPC services stop when the hub closes its streams (below, on shutdown).
    let grpc = options.grpc.clone().map(|g| {
        let serving = crate::grpc::serve(g, state.clone(), hub.closing());
        tokio::spawn(async move {
            if let Err(e) = serving.await {
                tracing::error!(error = %e, "the gRPC services cannot serve");
            }
        })
    });
    let app = http::router(state, options.max_body_bytes, &options.cors_origins)?;
    // Streams are long-lived: on shutdown they are told to reconnect elsewhere, so that
    // the server can finish the requests in flight and stop.
    let metrics = hub.metrics.clone();
    let shutdown = async move {
        shutdown.await;
        hub.close_all();
    };
    let limits = crate::conn::Limits {
        header_read: options.header_read_timeout,
        idle: options.idle_timeout,
        max_connections: connection_cap(options.max_connections),
    };
    metrics
        .connections_max
        .set(i64::try_from(limits.max_connections).unwrap_or(i64::MAX));
    tracing::info!(
        max_connections = limits.max_connections,
        header_read_timeout = ?limits.header_read,
        idle_timeout = ?limits.idle,
        "connection limits"
    );
    crate::conn::serve(listener, app, limits, metrics.connections.clone(), shutdown).await;
    if let Some(mut g) = grpc {
        // Its streams have ended with the hub's; a call in flight gets a moment.
        if tokio::time::timeout(Duration::from_secs(5), &mut g)
            .await
            .is_err()
        {
            g.abort();
        }
    }
    // The forwarder holds the hub, and so the store: stopped, it lets them go.
    ui_events.abort();
    // A message being sent is left claimed; its lease expires and it is sent again.
    notifying.abort();
    // A step being applied is rolled back with its transaction; its lease expires.
    planning.abort();
    for t in replica_tasks {
        t.abort();
    }
    stop_announcing.send_replace(true);
    if let Some(t) = announcing {
        // It ends at once (between two announcements, or its Redis timeout).
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    drop((fan_out, counters, announces));
    store.close().await;
    Ok(())
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
