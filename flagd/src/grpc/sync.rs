//! `flagd.sync.v1.FlagSyncService`: whole flag sets for in-process providers.
//!
//! As OpenFeature's flagd does: the whole set on connect and after every change (the
//! protocol has no deltas), with an empty `sync_context` (this flagd adds no static
//! context to evaluations).

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::proto::sync::flag_sync_service_server::FlagSyncService;
use super::proto::sync::{
    FetchAllFlagsRequest, FetchAllFlagsResponse, GetMetadataRequest, GetMetadataResponse,
    SyncFlagsRequest, SyncFlagsResponse,
};
use super::{Authorized, Options, authorize, peer, unavailable};
use crate::hub::{ProviderInfo, ProviderSeat, WholeSet};
use crate::state::AppState;

/// The service.
#[derive(Debug)]
pub struct Sync {
    state: AppState,
    options: Options,
}

impl Sync {
    /// Over flagd's state.
    pub fn new(state: AppState, options: Options) -> Self {
        Self { state, options }
    }
}

type Responses = Pin<Box<dyn Stream<Item = Result<SyncFlagsResponse, Status>> + Send>>;

/// Refuses a set larger than providers accept, naming both limits.
pub(super) fn fits(whole: &WholeSet, env: &str, max: usize) -> Result<(), Status> {
    // The message adds a few bytes of framing to the text.
    let size = whole.configuration().len() + 16;
    if size <= max {
        return Ok(());
    }
    let mib = |b: usize| b as f64 / f64::from(1 << 20);
    Err(Status::resource_exhausted(format!(
        "the flag set of \"{env}\" (version {}) is {:.2} MiB, over the {:.2} MiB gRPC message limit \
         (flagd's --grpc-max-message; the providers' default is 4 MiB): raise both, or use \
         remote evaluation (RPC mode) or flagd's own SDK, which take sets of any size",
        whole.version,
        mib(size),
        mib(max)
    )))
}

fn response(whole: &WholeSet) -> SyncFlagsResponse {
    SyncFlagsResponse {
        flag_configuration: whole.configuration().to_string(),
        // flagd sends its static context values, none by default: an empty struct.
        sync_context: Some(prost_types::Struct::default()),
    }
}

/// Sends the set at every version until the provider goes, its key is revoked, or
/// flagd shuts down.
async fn follow(
    state: AppState,
    options: Options,
    who: Authorized,
    seat: ProviderSeat,
    tx: mpsc::Sender<Result<SyncFlagsResponse, Status>>,
) {
    let env = who.environment.as_str();
    let hub = &state.hub;
    // Subscribed before the first set is read: nothing committed in between is missed.
    let mut changes = hub.changes(env).await;
    let mut revoked = hub.revocations();
    let mut closing = hub.closing();
    let mut sent = None;
    let mut at_least = None;
    loop {
        match hub.whole_set(env, at_least).await {
            Ok(whole) if sent.is_none_or(|s| whole.version > s) => {
                if let Err(status) = fits(&whole, env, options.max_message) {
                    tracing::warn!(env, instance = seat.instance(), "{}", status.message());
                    seat.failed(status.message().to_owned());
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                if tx.send(Ok(response(&whole))).await.is_err() {
                    return;
                }
                seat.sent(whole.version);
                sent = Some(whole.version);
            }
            Ok(_) => {}
            Err(e) => {
                // Nothing held and the store down: the provider retries (with backoff).
                let _ = tx.send(Err(unavailable(&e))).await;
                return;
            }
        }
        at_least = loop {
            if *closing.borrow() {
                // Not OK: providers reconnect (to another replica, or to this one
                // restarted); the JavaScript one never does after a clean end.
                let _ = tx
                    .send(Err(Status::unavailable("flagd is shutting down")))
                    .await;
                return;
            }
            tokio::select! {
                v = changes.next() => match v {
                    Some(0) => break None,
                    Some(v) if sent.is_some_and(|s| v <= s) => {}
                    Some(v) => break Some(v),
                    None => {
                        let _ = tx.send(Err(Status::unavailable("flagd stopped publishing"))).await;
                        return;
                    }
                },
                r = revoked.recv() => {
                    if super::evaluation::revoked_now(&state, &who, r).await {
                        let _ = tx.send(Err(Status::unauthenticated("the SDK key was revoked"))).await;
                        return;
                    }
                }
                _ = closing.changed() => {}
                () = tx.closed() => return,
            }
        };
    }
}

/// The provider's labels in the fleet view.
fn labels(
    protocol: &str,
    provider_id: &str,
    selector: &str,
) -> serde_json::Map<String, serde_json::Value> {
    let mut l = serde_json::Map::new();
    l.insert("protocol".into(), protocol.into());
    if !provider_id.is_empty() {
        l.insert(
            "providerId".into(),
            provider_id.chars().take(120).collect::<String>().into(),
        );
    }
    if !selector.is_empty() {
        l.insert(
            "selector".into(),
            selector.chars().take(120).collect::<String>().into(),
        );
    }
    l
}

/// Seats a provider of `protocol` in its environment's fleet.
pub(super) async fn seat<T>(
    state: &AppState,
    request: &Request<T>,
    who: &Authorized,
    protocol: &str,
    provider_id: &str,
    remote: bool,
) -> ProviderSeat {
    let (agent, host) = peer(request);
    let selector = request
        .metadata()
        .get(super::SELECTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    state
        .hub
        .seat_provider(
            &who.environment,
            ProviderInfo {
                sdk: format!("{agent} ({protocol})"),
                host,
                labels: labels(protocol, provider_id, selector),
                key_name: who.caller.name.clone(),
                token_id: who.caller.token_id.clone(),
                remote,
                provider_id: provider_id.chars().take(120).collect(),
            },
        )
        .await
}

#[tonic::async_trait]
impl FlagSyncService for Sync {
    type SyncFlagsStream = Responses;

    async fn sync_flags(
        &self,
        request: Request<SyncFlagsRequest>,
    ) -> Result<Response<Self::SyncFlagsStream>, Status> {
        #[allow(deprecated)]
        let field = request.get_ref().selector.clone();
        let who = authorize(&self.state, &request, Some(&field)).await?;
        let provider_id = request.get_ref().provider_id.clone();
        let seat = seat(
            &self.state,
            &request,
            &who,
            "flagd.sync.v1",
            &provider_id,
            false,
        )
        .await;
        tracing::info!(
            env = who.environment,
            instance = seat.instance(),
            provider_id,
            "gRPC sync provider connected"
        );
        // Two in flight at most: a provider that stops reading is sent the newest set
        // when it reads again, never a queue of old ones.
        let (tx, mut rx) = mpsc::channel(1);
        tokio::spawn(follow(
            self.state.clone(),
            self.options.clone(),
            who,
            seat,
            tx,
        ));
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn fetch_all_flags(
        &self,
        request: Request<FetchAllFlagsRequest>,
    ) -> Result<Response<FetchAllFlagsResponse>, Status> {
        #[allow(deprecated)]
        let field = request.get_ref().selector.clone();
        let who = authorize(&self.state, &request, Some(&field)).await?;
        let whole: Arc<WholeSet> = self
            .state
            .hub
            .whole_set(&who.environment, None)
            .await
            .map_err(|e| unavailable(&e))?;
        fits(&whole, &who.environment, self.options.max_message)?;
        Ok(Response::new(FetchAllFlagsResponse {
            flag_configuration: whole.configuration().to_string(),
        }))
    }

    #[allow(deprecated)]
    async fn get_metadata(
        &self,
        request: Request<GetMetadataRequest>,
    ) -> Result<Response<GetMetadataResponse>, Status> {
        // Deprecated for `sync_context`; answered as flagd does (its static context
        // values: none), for providers that still ask.
        authorize(&self.state, &request, None).await?;
        Ok(Response::new(GetMetadataResponse {
            metadata: Some(prost_types::Struct::default()),
        }))
    }
}
