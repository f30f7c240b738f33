//! The gRPC services of OpenFeature's flagd, so that the official OpenFeature flagd
//! providers (Go, Java, JavaScript, Python, .NET, Rust) connect to this flagd with a
//! configuration change and no code change:
//!
//! - `flagd.sync.v1.FlagSyncService` ([`sync`]): whole flag sets streamed to providers
//!   in *in-process* mode, on connect and after every change;
//! - `flagd.evaluation.v2.Service` and `v1` ([`evaluation`]): `Resolve*` (and v1's
//!   `ResolveAll`) evaluated on the environment's compiled head (the one OFREP
//!   evaluates), and the `EventStream` that tells *RPC*-mode providers what changed.
//!
//! Every call is authenticated with an SDK key, which names the environment: in the
//! metadata (`authorization: Bearer …`, `x-api-key`), or, for providers that cannot
//! add metadata (the JavaScript one), as the channel's authority (its
//! `defaultAuthority` option). The provider's selector, when it sends one, must name
//! the key's environment.
//! Kill switches and reverts reach these providers through the same commit path as the
//! SDKs: each published version wakes their streams.

mod convert;
pub mod evaluation;
pub mod sync;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use crate::auth::Caller;
use crate::state::AppState;

/// The code generated from the vendored protocol definitions (`flagd/proto`).
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod proto {
    /// `flagd.sync.v1`.
    pub mod sync {
        tonic::include_proto!("flagd.sync.v1");
    }
    /// `flagd.evaluation.v1`.
    pub mod evaluation {
        tonic::include_proto!("flagd.evaluation.v1");
    }
    /// `flagd.evaluation.v2`.
    pub mod evaluation_v2 {
        tonic::include_proto!("flagd.evaluation.v2");
    }
}

/// The largest message the official providers accept by default (gRPC's 4 MiB).
pub const DEFAULT_MAX_MESSAGE: usize = 4 << 20;

/// How the gRPC port serves.
#[derive(Clone, Debug)]
pub struct Options {
    /// The sockets to serve on, bound by the caller (taken once, when serving starts).
    pub listeners: Arc<Mutex<Vec<std::net::TcpListener>>>,
    /// How often an idle connection is pinged (HTTP/2) and an event stream is sent
    /// `keep_alive`.
    pub keepalive: Duration,
    /// The largest message sent or received: a flag set larger than this is refused
    /// with a clear error rather than sent to providers that would drop it.
    pub max_message: usize,
}

impl Options {
    /// Serving on `listeners`, with flagd's defaults.
    pub fn on(listeners: Vec<std::net::TcpListener>) -> Self {
        Self {
            listeners: Arc::new(Mutex::new(listeners)),
            keepalive: Duration::from_secs(20),
            max_message: DEFAULT_MAX_MESSAGE,
        }
    }
}

/// What every call starts with: the SDK key's caller and environment.
#[derive(Clone, Debug)]
pub(crate) struct Authorized {
    pub(crate) caller: Caller,
    pub(crate) environment: String,
}

/// The metadata header OpenFeature's flagd reads a selector from.
const SELECTOR_HEADER: &str = "flagd-selector";

/// The header [`authority_as_key`] moves an SDK key given as the authority to.
const AUTHORITY_KEY: &str = "x-flagd-authority-key";

/// The SDK key a call carries: `authorization: Bearer …` or `x-api-key` (as OFREP), or
/// the channel's authority.
fn secret(metadata: &MetadataMap) -> Option<&str> {
    let get = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok());
    get("authorization")
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| get("x-api-key"))
        .or_else(|| get(AUTHORITY_KEY))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// A provider that cannot add metadata to its calls (the official JavaScript one has
/// no option for it) can still name its SDK key on every call, its event stream
/// included, as the channel's authority (`defaultAuthority: "fdsdk_…"`); gRPC carries
/// the authority as the `:authority` pseudo-header, which tonic does not show as
/// metadata: an SDK key found there is moved to a header of its own, and any such
/// header a client sent itself is dropped first.
fn authority_as_key<B>(mut request: axum::http::Request<B>) -> axum::http::Request<B> {
    request.headers_mut().remove(AUTHORITY_KEY);
    let key = request
        .uri()
        .authority()
        .map(axum::http::uri::Authority::as_str)
        .filter(|a| a.starts_with("fdsdk_"))
        .and_then(|a| axum::http::HeaderValue::from_str(a).ok());
    if let Some(k) = key {
        request.headers_mut().insert(AUTHORITY_KEY, k);
    }
    request
}

/// The environment a selector names: empty (the key's), `production`,
/// `environment=production` or `flagSetId=production` (comma-separated terms, each
/// naming the same environment).
fn selected(selector: &str) -> Result<Option<&str>, Status> {
    let mut chosen: Option<&str> = None;
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let name = match term.split_once('=') {
            None => term,
            Some((k, v)) if matches!(k.trim(), "environment" | "flagSetId" | "env") => v.trim(),
            Some((k, _)) => {
                return Err(Status::invalid_argument(format!(
                    "selector \"{selector}\": this flagd selects by environment \
                     (`environment=NAME`, `flagSetId=NAME` or `NAME`), not by `{}`",
                    k.trim()
                )));
            }
        };
        match chosen {
            Some(c) if c != name => {
                return Err(Status::invalid_argument(format!(
                    "selector \"{selector}\" names two environments, \"{c}\" and \"{name}\""
                )));
            }
            _ => chosen = Some(name),
        }
    }
    Ok(chosen)
}

/// The SDK key a call carries, or the refusal.
fn secret_of<T>(request: &Request<T>) -> Result<&str, Status> {
    secret(request.metadata()).ok_or_else(|| {
        Status::unauthenticated(
            "an SDK key is required: metadata `authorization: Bearer fdsdk_…` (or `x-api-key`), \
             or the SDK key as the channel's authority (the provider's defaultAuthority)",
        )
    })
}

fn not_an_sdk_key() -> Status {
    Status::permission_denied(
        "this takes an SDK key (POST /api/v1/environments/{env}/sdk-keys), not an API token",
    )
}

/// Refuses a selector (the `flagd-selector` header, else the request's own field) that
/// names another environment than the key's.
fn check_selector<T>(
    request: &Request<T>,
    field_selector: Option<&str>,
    environment: &str,
) -> Result<(), Status> {
    let header = request
        .metadata()
        .get(SELECTOR_HEADER)
        .and_then(|v| v.to_str().ok());
    let selector = header.or(field_selector).unwrap_or_default();
    match selected(selector)? {
        Some(name) if name != environment => Err(Status::permission_denied(format!(
            "the selector asks for environment \"{name}\"; this SDK key is for \"{environment}\""
        ))),
        _ => Ok(()),
    }
}

/// A one-shot call's environment: the key checked as OFREP checks it (from memory when
/// checked in the last seconds: a digest and a lookup, no copy of the caller).
pub(crate) async fn environment<T>(
    state: &AppState,
    request: &Request<T>,
) -> Result<String, Status> {
    let environment = match state.hub.sdk_key(secret_of(request)?).await {
        Ok(crate::hub::SdkKey::Environment(env)) => env,
        Ok(crate::hub::SdkKey::NotAnSdkKey) => return Err(not_an_sdk_key()),
        Ok(crate::hub::SdkKey::Unknown) => {
            return Err(Status::unauthenticated("unknown or revoked SDK key"));
        }
        Err(e) => return Err(unavailable(&e)),
    };
    check_selector(request, None, &environment)?;
    Ok(environment)
}

/// Authenticates a stream and picks its environment: the caller is kept, so that the
/// key's revocation ends the stream. The selector must agree.
pub(crate) async fn authorize<T>(
    state: &AppState,
    request: &Request<T>,
    field_selector: Option<&str>,
) -> Result<Authorized, Status> {
    let caller = match state.hub.sdk_caller(secret_of(request)?).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(Status::unauthenticated("unknown or revoked SDK key")),
        Err(crate::error::ApiError::Forbidden(_)) => return Err(not_an_sdk_key()),
        Err(e) => return Err(unavailable(&e)),
    };
    let Some(environment) = caller
        .environments
        .as_ref()
        .and_then(|e| e.first())
        .cloned()
    else {
        return Err(Status::permission_denied(
            "this SDK key names no environment",
        ));
    };
    check_selector(request, field_selector, &environment)?;
    Ok(Authorized {
        caller,
        environment,
    })
}

/// flagd cannot answer now (its store is down and nothing is held): the provider
/// retries.
pub(crate) fn unavailable(e: &crate::error::ApiError) -> Status {
    tracing::warn!(error = %e, "a gRPC call failed");
    Status::unavailable("flagd cannot answer now; see its log")
}

/// Who is calling, for the fleet view: the client library (`user-agent`) and address.
pub(crate) fn peer<T>(request: &Request<T>) -> (String, String) {
    let agent = request
        .metadata()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("gRPC client")
        .chars()
        .take(120)
        .collect();
    let host = request
        .remote_addr()
        .map_or_else(|| "unknown".to_owned(), |a: SocketAddr| a.ip().to_string());
    (agent, host)
}

/// Serves both services on every listener until `closing` turns true (flagd shutting
/// down; the streams have been told to end by then).
pub async fn serve(
    options: Options,
    state: AppState,
    closing: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let listeners: Vec<std::net::TcpListener> = options
        .listeners
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "gRPC: flagd.sync.v1, flagd.evaluation.v2 and v1");
        let incoming = tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(60)));
        let sync = proto::sync::flag_sync_service_server::FlagSyncServiceServer::new(
            sync::Sync::new(state.clone(), options.clone()),
        )
        .max_decoding_message_size(options.max_message)
        // A set too large is refused by the service with a clear error, before this.
        .max_encoding_message_size(usize::MAX);
        let v1 = proto::evaluation::service_server::ServiceServer::new(
            evaluation::EvaluationV1::new(state.clone(), options.keepalive),
        )
        .max_decoding_message_size(options.max_message)
        .max_encoding_message_size(options.max_message);
        let v2 = proto::evaluation_v2::service_server::ServiceServer::new(
            evaluation::EvaluationV2::new(state.clone(), options.keepalive),
        )
        .max_decoding_message_size(options.max_message)
        .max_encoding_message_size(options.max_message);
        let mut closing = closing.clone();
        let server = tonic::transport::Server::builder()
            .layer(tower::util::MapRequestLayer::new(authority_as_key))
            // Pings every `keepalive` keep idle connections through NATs and proxies,
            // and find a dead peer; the clients' own pings (the Go client's every 30 s,
            // even between streams) are answered, never refused as too many.
            .http2_keepalive_interval(Some(options.keepalive))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(sync)
            .add_service(v2)
            .add_service(v1);
        tasks.spawn(async move {
            let stop = async move {
                let _ = closing.wait_for(|c| *c).await;
            };
            if let Err(e) = server.serve_with_incoming_shutdown(incoming, stop).await {
                tracing::error!(%addr, error = %e, "the gRPC server stopped");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}
