//! `flagd`: the flag server. See `flagd --help`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use flagd::server;

// mimalloc: remote evaluation allocates per request (context, answer); against glibc's
// allocator it served 7% more single-flag and 40% more bulk evaluations per second
// (docs/benchmarks.md, section 4).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The flag server: versioned flag sets per environment, kill switches and reverts.
#[derive(Debug, Parser)]
#[command(name = "flagd", version, about)]
struct Cli {
    #[command(flatten)]
    opts: Options,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Args)]
struct Options {
    /// Address to listen on.
    #[arg(
        long,
        env = "FLAGD_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    listen: SocketAddr,
    /// The store: `sqlite://FILE?mode=rwc` (created on first start) or `postgres://...`.
    #[arg(
        long,
        env = "FLAGD_DATABASE_URL",
        default_value = "sqlite://flagd.db?mode=rwc",
        global = true
    )]
    database_url: String,
    /// How often a replica on PostgreSQL compares the heads it serves with the store's,
    /// to pick up changes made through other replicas (`1s`).
    #[arg(long, env = "FLAGD_FOLLOW_INTERVAL", default_value = "1s", value_parser = duration, global = true)]
    follow_interval: std::time::Duration,
    /// How often release plans are looked at for a step whose hold has ended (`1s`):
    /// a hold ends to within this.
    #[arg(long, env = "FLAGD_PLAN_INTERVAL", default_value = "1s", value_parser = duration, global = true)]
    plan_interval: std::time::Duration,
    /// The Prometheus that release plans' health gates query (`http://prometheus:9090`);
    /// without it, a plan with gates is refused.
    #[arg(long, env = "FLAGD_PROMETHEUS_URL", global = true)]
    prometheus_url: Option<String>,
    /// Single sign-on for people: the OpenID Connect provider's issuer URL
    /// (`https://accounts.google.com`, `https://login.microsoftonline.com/{tenant}/v2.0`,
    /// `https://{org}.okta.com`, `https://keycloak/realms/{realm}`, `https://gitlab.com`,
    /// Dex's). Needs --public-url: the provider sends people back to
    /// `{public URL}/api/v1/session/oidc/callback`.
    #[arg(
        long,
        env = "FLAGD_OIDC_ISSUER",
        global = true,
        requires = "oidc_client_id"
    )]
    oidc_issuer: Option<String>,
    /// flagd's client id at the provider.
    #[arg(long, env = "FLAGD_OIDC_CLIENT_ID", global = true)]
    oidc_client_id: Option<String>,
    /// flagd's client secret at the provider (none for a public client, which PKCE
    /// alone protects).
    #[arg(
        long,
        env = "FLAGD_OIDC_CLIENT_SECRET",
        hide_env_values = true,
        global = true
    )]
    oidc_client_secret: Option<String>,
    /// The provider's name on the sign-in page's button.
    #[arg(
        long,
        env = "FLAGD_OIDC_NAME",
        default_value = "single sign-on",
        global = true
    )]
    oidc_name: String,
    /// The ID token's claim that --oidc-role reads (`groups`; a dotted path such as
    /// `realm_access.roles` for Keycloak's realm roles).
    #[arg(
        long,
        env = "FLAGD_OIDC_ROLE_CLAIM",
        default_value = "groups",
        global = true
    )]
    oidc_role_claim: String,
    /// A claim value and the role it gives, `VALUE=ROLE` or `VALUE=ROLE@env1,env2`;
    /// repeat it; the first that matches wins; `*` matches anyone the provider vouches
    /// for. Without a match, only people an admin created may sign in.
    #[arg(long = "oidc-role", env = "FLAGD_OIDC_ROLES", value_delimiter = ';', value_parser = flagd::people::oidc::RoleMapping::parse, global = true)]
    oidc_roles: Vec<flagd::people::oidc::RoleMapping>,
    /// Redis for replicas on one PostgreSQL (`redis://host:6379`): each announces its
    /// changes there and the others push them to their SDKs within milliseconds. Not
    /// needed for correctness: without it, or while it is down, replicas find each
    /// other's changes in the store every --follow-interval. Ignored on SQLite.
    #[arg(long, env = "FLAGD_REDIS_URL", hide_env_values = true, value_parser = redis_url, global = true)]
    redis_url: Option<String>,
    /// This replica's name in the deployment's fleet (`GET /fleet` says which replica
    /// each SDK instance is connected to); random by default.
    #[arg(long, env = "FLAGD_REPLICA_NAME", value_parser = replica_name, global = true)]
    replica_name: Option<String>,
    /// How long a request waits for the store (a free connection, SQLite's write lock,
    /// a connection to PostgreSQL) before it is answered 503 `unavailable` (`5s`).
    #[arg(long, env = "FLAGD_STORE_TIMEOUT", default_value = "5s", value_parser = duration, global = true)]
    store_timeout: std::time::Duration,
    /// The bootstrap admin token (at least 16 characters). Without it, the first start
    /// prints a new one, once.
    #[arg(long, env = "FLAGD_ADMIN_TOKEN", hide_env_values = true, value_parser = admin_secret, global = true)]
    admin_token: Option<String>,
    /// Log format.
    #[arg(
        long,
        env = "FLAGD_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
    /// The largest request body accepted, in bytes (a 10,000-flag import is about 3 MB;
    /// the default takes the largest flag set flagd accepts, 32 MiB, with room for
    /// formatting).
    #[arg(long, env = "FLAGD_MAX_BODY_BYTES", default_value_t = 40 << 20, global = true)]
    max_body_bytes: usize,
    /// Serve OpenFeature flagd's gRPC services (`flagd.sync.v1` for in-process
    /// providers, `flagd.evaluation.v2`/`v1` for RPC providers) on this address, for the
    /// official OpenFeature flagd providers; repeat for more (OpenFeature's flagd uses
    /// 8015 for sync and 8013 for evaluation: both services are on every address).
    #[arg(
        long = "grpc-listen",
        env = "FLAGD_GRPC_LISTEN",
        value_delimiter = ',',
        global = true
    )]
    grpc_listen: Vec<SocketAddr>,
    /// The largest gRPC message, in bytes: a flag set larger than this is refused to
    /// in-process providers with an error naming its size (gRPC clients accept 4 MiB by
    /// default; raise both together).
    #[arg(long, env = "FLAGD_GRPC_MAX_MESSAGE", default_value_t = flagd::grpc::DEFAULT_MAX_MESSAGE, value_parser = positive, global = true)]
    grpc_max_message: usize,
    /// How often idle gRPC connections are pinged and event streams sent `keep_alive`.
    #[arg(long, env = "FLAGD_GRPC_KEEPALIVE", default_value = "20s", value_parser = duration, global = true)]
    grpc_keepalive: std::time::Duration,
    /// How long an SDK instance whose connection was lost (without a goodbye) is
    /// remembered as unreachable, and so counted as not converged (`10m`, `1h`).
    #[arg(long, env = "FLAGD_FLEET_TTL", default_value = "10m", value_parser = humantime::parse_duration, global = true)]
    fleet_ttl: std::time::Duration,
    /// How often flagd pings each SDK stream (`15s`, `500ms`); a stream silent for three
    /// heartbeats is closed as half-open.
    #[arg(long, env = "FLAGD_STREAM_HEARTBEAT", default_value = "15s", value_parser = duration, global = true)]
    stream_heartbeat: std::time::Duration,
    /// How long a client has to send a request's headers (`10s`), from the connection's
    /// start or a later request's first byte; a silent or slow (slowloris) client is
    /// closed after it.
    #[arg(long, env = "FLAGD_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration, global = true)]
    header_read_timeout: std::time::Duration,
    /// How long a keep-alive connection may stay idle between requests (`75s`). Streams
    /// (the SDK websocket, the UI's events) are not idle.
    #[arg(long, env = "FLAGD_IDLE_TIMEOUT", default_value = "75s", value_parser = duration, global = true)]
    idle_timeout: std::time::Duration,
    /// Open connections at most, SDK streams included; more wait until one closes. Each
    /// is an open file: flagd raises its soft open-file limit to the hard limit, and keeps
    /// 256 files beside its connections.
    #[arg(long, env = "FLAGD_MAX_CONNECTIONS", default_value_t = server::DEFAULT_MAX_CONNECTIONS, value_parser = positive, global = true)]
    max_connections: usize,
    /// Label sets per metric family with user-chosen labels (OFREP evaluations by flag
    /// and variant, HTTP requests); beyond it new ones are counted as `(other)`.
    #[arg(long, env = "FLAGD_METRICS_MAX_SERIES", default_value_t = flagd::metrics::DEFAULT_MAX_SERIES, value_parser = positive, global = true)]
    metrics_max_series: usize,
    /// Browser origins allowed to call OFREP, comma-separated (`https://app.example.com`,
    /// or `*` for any); none by default.
    #[arg(
        long,
        env = "FLAGD_CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        global = true
    )]
    cors_allowed_origins: Vec<String>,
    /// Where flagd is reached from outside (`https://flags.example.com`): notifications
    /// link to the admin UI's diff there; without it they carry the API's path.
    #[arg(long, env = "FLAGD_PUBLIC_URL", value_parser = public_url, global = true)]
    public_url: Option<String>,
    /// Let notifications be sent to loopback, private, link-local and unique-local
    /// addresses (refused by default: a channel's URL must not reach flagd's neighbours).
    #[arg(long, env = "FLAGD_NOTIFY_ALLOW_PRIVATE_ADDRESSES", global = true)]
    notify_allow_private_addresses: bool,
    /// How long one request to a notification receiver may take.
    #[arg(long, env = "FLAGD_NOTIFY_REQUEST_TIMEOUT", default_value = "10s", value_parser = duration, global = true)]
    notify_request_timeout: std::time::Duration,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Check the configuration and that the store can be reached, then exit.
    CheckConfig,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and CI output stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `--redis-url`: a URL the Redis client can read (Redis itself is reached later).
fn redis_url(s: &str) -> Result<String, String> {
    redis::Client::open(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("not a Redis URL (redis://host:6379): {e}"))
}

/// `--public-url`: an http(s) URL, kept without its trailing slash.
/// The identity provider's settings, when one is configured.
fn oidc_options(o: &Options) -> anyhow::Result<Option<flagd::people::oidc::OidcOptions>> {
    let (Some(issuer), Some(client_id)) = (&o.oidc_issuer, &o.oidc_client_id) else {
        return Ok(None);
    };
    let Some(public) = &o.public_url else {
        anyhow::bail!(
            "--oidc-issuer needs --public-url: the identity provider sends people back to {{public URL}}/api/v1/session/oidc/callback"
        );
    };
    Ok(Some(flagd::people::oidc::OidcOptions {
        issuer: issuer.clone(),
        client_id: client_id.clone(),
        client_secret: o.oidc_client_secret.clone(),
        redirect_url: format!("{public}/api/v1/session/oidc/callback"),
        display_name: o.oidc_name.clone(),
        role_claim: o.oidc_role_claim.clone(),
        roles: o.oidc_roles.clone(),
    }))
}

fn public_url(s: &str) -> Result<String, String> {
    let t = s.trim().trim_end_matches('/');
    if !(t.starts_with("https://") || t.starts_with("http://")) || t.len() <= "https://".len() {
        return Err("an http:// or https:// URL, e.g. https://flags.example.com".into());
    }
    Ok(t.to_owned())
}

/// `--replica-name`: 1–64 printable characters.
fn replica_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 64 || s.chars().any(char::is_control) {
        return Err("1 to 64 printable characters".into());
    }
    Ok(s.to_owned())
}

/// `--admin-token`: a secret that cannot be guessed by trying a few thousand values.
fn admin_secret(s: &str) -> Result<String, String> {
    if s.chars().count() < 16 {
        return Err(format!(
            "must be at least 16 characters (got {}); flagd makes a strong one when none is given",
            s.chars().count()
        ));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(s.to_owned())
}

/// Errors are one line, the chain of causes joined, never a backtrace.
fn main() -> std::process::ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run()));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("flagd: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.opts.log_format);
    let o = &cli.opts;
    // One set of metrics for the whole process: the store reports into it from the start.
    let metrics = std::sync::Arc::new(flagd::metrics::Metrics::new());
    // Every committed change goes out on this bus, announced by the store.
    let bus = std::sync::Arc::new(flagd::bus::Bus::new());
    let store_options = flagd::store::StoreOptions {
        timeout: o.store_timeout,
        observer: Some(metrics.clone()),
        listener: Some(bus.clone()),
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            server::open_store_with(&o.database_url, store_options)
                .await
                .context("migrating the store")?
                .close()
                .await;
            tracing::info!(database = %redact(&o.database_url), "migrations applied");
        }
        Command::CheckConfig => {
            let store = flagd::store::Store::connect_with(&o.database_url, store_options)
                .await
                .context("connecting to the store")?;
            let ready = store.ready().await;
            store.close().await;
            println!(
                "listen: {}\ndatabase: {} ({:?})\nstore timeout: {}\nmax body: {} bytes\nheader read timeout: {}\nidle timeout: {}\nmax connections: {}",
                o.listen,
                redact(&o.database_url),
                store.backend(),
                humantime::format_duration(o.store_timeout),
                o.max_body_bytes,
                humantime::format_duration(o.header_read_timeout),
                humantime::format_duration(o.idle_timeout),
                o.max_connections
            );
            let grpc: Vec<String> = o.grpc_listen.iter().map(ToString::to_string).collect();
            println!(
                "grpc listen: {}\ngrpc max message: {} bytes\ngrpc keepalive: {}",
                if grpc.is_empty() {
                    "off".to_owned()
                } else {
                    grpc.join(", ")
                },
                o.grpc_max_message,
                humantime::format_duration(o.grpc_keepalive)
            );
            println!(
                "public url: {}\nnotify private addresses: {}\nnotify request timeout: {}",
                o.public_url.as_deref().unwrap_or("none"),
                if o.notify_allow_private_addresses {
                    "allowed"
                } else {
                    "refused"
                },
                humantime::format_duration(o.notify_request_timeout)
            );
            match oidc_options(o)? {
                Some(x) => println!(
                    "single sign-on: {} (client {}, redirect {}, role claim {}, {} role mapping{})",
                    x.issuer,
                    x.client_id,
                    x.redirect_url,
                    x.role_claim,
                    x.roles.len(),
                    if x.roles.len() == 1 { "" } else { "s" }
                ),
                None => println!("single sign-on: none (people sign in with passwords)"),
            }
            match ready {
                Ok(()) => println!("store: reachable, migrations applied"),
                Err(e) => println!(
                    "store: reachable, not migrated ({e}); `flagd migrate` or `flagd serve` applies them"
                ),
            }
            if let Some(url) = &o.redis_url {
                flagd::announce::check(url)
                    .await
                    .with_context(|| format!("Redis at {}", redact(url)))?;
                println!("redis: {} (reachable)", redact(url));
            }
        }
        Command::Serve => {
            // Before anything opens files: every connection is one.
            match server::raise_open_file_limit() {
                Ok(Some((before, after))) if before < after => {
                    tracing::info!(before, after, "open-file limit raised to the hard limit");
                }
                Ok(Some((_, limit))) => tracing::info!(limit, "open-file limit"),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
            }
            let store = server::open_store_with(&o.database_url, store_options)
                .await
                .context("opening the store")?;
            if let Some(secret) = server::bootstrap(&store, o.admin_token.as_deref()).await? {
                println!(
                    "\nA new admin token was created. It is shown only this once; keep it safe:\n\n    {secret}\n"
                );
            }
            let listener = tokio::net::TcpListener::bind(o.listen)
                .await
                .with_context(|| format!("listening on {}", o.listen))?;
            tracing::info!(listen = %o.listen, database = %redact(&o.database_url), "flagd is serving");
            let shown = listener.local_addr().map_or(o.listen, |a| a);
            println!("Admin UI: http://{shown}/ (sign in with an API token or a personal account)");
            let mut grpc_listeners = Vec::new();
            for addr in &o.grpc_listen {
                let l = std::net::TcpListener::bind(addr)
                    .with_context(|| format!("listening for gRPC on {addr}"))?;
                println!(
                    "gRPC (OpenFeature flagd providers): {}",
                    l.local_addr().map_or(*addr, |a| a)
                );
                grpc_listeners.push(l);
            }
            let grpc = (!grpc_listeners.is_empty()).then(|| flagd::grpc::Options {
                keepalive: o.grpc_keepalive,
                max_message: o.grpc_max_message,
                ..flagd::grpc::Options::on(grpc_listeners)
            });
            let options = server::Options {
                max_body_bytes: o.max_body_bytes,
                heartbeat: o.stream_heartbeat,
                fleet_ttl: o.fleet_ttl,
                cors_origins: o.cors_allowed_origins.clone(),
                header_read_timeout: o.header_read_timeout,
                idle_timeout: o.idle_timeout,
                max_connections: o.max_connections,
                metrics_max_series: o.metrics_max_series,
                metrics,
                bus,
                follow_interval: o.follow_interval,
                plan_interval: o.plan_interval,
                prometheus_url: o.prometheus_url.clone(),
                oidc: oidc_options(o)?,
                grpc,
                redis_url: o.redis_url.clone(),
                replica: o
                    .replica_name
                    .clone()
                    .unwrap_or_else(server::random_replica_name),
                notify: flagd::notify::Options {
                    public_url: o.public_url.clone(),
                    allow_private_addresses: o.notify_allow_private_addresses,
                    request_timeout: o.notify_request_timeout,
                    ..flagd::notify::Options::default()
                },
            };
            server::run(listener, store, options, server::shutdown_signal()).await?;
            tracing::info!("stopped");
        }
    }
    Ok(())
}

/// `--stream-heartbeat`, `--header-read-timeout`, `--idle-timeout`: a duration of at
/// least 100 ms (shorter would close streams and connections as soon as they open).
fn duration(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (for example 15s or 500ms)"))?;
    if d < std::time::Duration::from_millis(100) {
        return Err(format!("must be at least 100ms, got {s}"));
    }
    Ok(d)
}

/// `--max-connections`, `--metrics-max-series`: at least one.
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (a whole number such as 10000)")),
    }
}

/// The database URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
