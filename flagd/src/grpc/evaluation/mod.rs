//! `flagd.evaluation.v2.Service` and `flagd.evaluation.v1.Service`: remote evaluation
//! for RPC-mode providers, and the event stream that tells them what changed. The
//! current official providers speak v2; v1 serves older ones (and `ResolveAll`).
//!
//! Evaluations run on the environment's head compiled once per version, the one OFREP
//! evaluates: the same values, variants, reasons and metadata (with `flagSetVersion`).
//! Errors are gRPC statuses, as OpenFeature's flagd answers them and its providers read
//! them: `NOT_FOUND` for an unknown flag, `INVALID_ARGUMENT` for a type mismatch,
//! `DATA_LOSS` for a targeting rule that cannot run, `UNKNOWN` otherwise (the
//! OpenFeature code leads the message).
//!
//! v2 says what OFREP says: a disabled flag, or one whose targeting and default variant
//! leave no value, answers its reason (`DISABLED`, `DEFAULT`) and no value, so the
//! provider returns the caller's default. v1 cannot leave a value out: as flagd answers
//! v1, a disabled flag is the type's zero value with reason `DISABLED`, and a flag with
//! no value is `NOT_FOUND`.

mod v1;
mod v2;

pub use v1::EvaluationV1;
pub use v2::EvaluationV2;

use std::sync::Arc;
use std::time::Duration;

use flagd_core::{Detail, ErrorCode, Reason, ValueType};
use prost_types::Struct;
use serde_json::{Value as Json, json};
use tokio::sync::{broadcast, mpsc};
use tonic::{Request, Status};

use super::convert;
use super::{Authorized, authorize, unavailable};
use crate::hub::{Compiled, ProviderSeat, Revoked, WholeSet};
use crate::state::AppState;

/// What both versions evaluate with.
#[derive(Debug, Clone)]
struct Evaluator {
    state: AppState,
    keepalive: Duration,
}

impl Evaluator {
    /// The key's environment and its compiled head, as OFREP reads them.
    async fn head<T>(&self, request: &Request<T>) -> Result<(String, Arc<Compiled>), Status> {
        let env = super::environment(&self.state, request).await?;
        let compiled = self
            .state
            .hub
            .compiled(&env)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok((env, compiled))
    }

    /// One flag, typed.
    async fn resolve<T>(
        &self,
        request: &Request<T>,
        key: &str,
        context: Option<&Struct>,
        ty: ValueType,
    ) -> Result<Outcome, Status> {
        let (env, compiled) = self.head(request).await?;
        let ctx = convert::context(context);
        let snapshot = &compiled.snapshot;
        let d = snapshot.evaluate_as(key, &ctx, ty);
        count(&self.state, &env, key, &d);
        outcome(key, &d, snapshot.version())
    }

    /// Opens an event stream: `provider_ready`, then what changed, until the provider
    /// goes. `make` builds the version's message from a type and its data.
    async fn event_stream<T: Sync, R: Send + 'static>(
        &self,
        request: &Request<T>,
        protocol: &str,
        make: fn(&str, Option<Struct>) -> R,
    ) -> Result<mpsc::Receiver<Result<R, Status>>, Status> {
        let who = authorize(&self.state, request, None).await?;
        let seat = super::sync::seat(&self.state, request, &who, protocol, "", true).await;
        tracing::info!(
            env = who.environment,
            instance = seat.instance(),
            protocol,
            "gRPC event stream connected"
        );
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(events(
            self.state.clone(),
            self.keepalive,
            who,
            seat,
            make,
            tx,
        ));
        Ok(rx)
    }
}

/// What one typed evaluation answers. `value: None` is "no value" (reasons `DISABLED`
/// and `DEFAULT`): the caller's default.
#[derive(Debug)]
struct Outcome {
    value: Option<Json>,
    reason: &'static str,
    variant: Option<String>,
    metadata: Option<Struct>,
}

fn outcome(key: &str, d: &Detail<'_>, version: u64) -> Result<Outcome, Status> {
    let metadata = Some(convert::metadata(d.flag_metadata, version));
    if let Some(code) = d.error_code {
        let message = match code {
            ErrorCode::FlagNotFound => format!("flag `{key}` does not exist"),
            _ => format!(
                "{code}: {}",
                d.error_message.as_deref().unwrap_or("evaluation failed")
            ),
        };
        return Err(match code {
            ErrorCode::FlagNotFound => Status::not_found(message),
            ErrorCode::TypeMismatch => Status::invalid_argument(message),
            ErrorCode::ParseError => Status::data_loss(message),
            ErrorCode::TargetingKeyMissing | ErrorCode::InvalidContext | ErrorCode::General => {
                Status::unknown(message)
            }
        });
    }
    let disabled = d.reason == Reason::Disabled;
    Ok(Outcome {
        value: d.value.filter(|_| !disabled).cloned(),
        reason: d.reason.as_str(),
        variant: d.variant.filter(|_| !disabled).map(str::to_owned),
        metadata,
    })
}

/// Counts an evaluation for `/metrics`, as OFREP's are.
fn count(state: &AppState, env: &str, key: &str, d: &Detail<'_>) {
    state.hub.metrics.count_detail(env, key, d);
}

fn data(v: &Json) -> Option<Struct> {
    v.as_object().map(convert::object)
}

/// The stream's end as a status that is not OK: providers reconnect after an error,
/// and some (the JavaScript one) never after a stream that ends cleanly.
fn ended(why: &str) -> Status {
    Status::unavailable(why.to_owned())
}

/// Sends `provider_ready`, then a `configuration_change` for every version that changed
/// a flag (`{"flags": {"key": {"type": "update"}}}`, as OpenFeature's flagd sends it,
/// plus `flagSetVersion`), and `keep_alive` between them, until the provider goes, its
/// key is revoked, or flagd shuts down.
async fn events<R>(
    state: AppState,
    keepalive: Duration,
    who: Authorized,
    seat: ProviderSeat,
    make: impl Fn(&str, Option<Struct>) -> R,
    tx: mpsc::Sender<Result<R, Status>>,
) {
    let env = who.environment.as_str();
    let hub = &state.hub;
    let mut changes = hub.changes(env).await;
    let mut revoked = hub.revocations();
    let mut closing = hub.closing();
    let mut held: Arc<WholeSet> = match hub.whole_set(env, None).await {
        Ok(w) => w,
        Err(e) => {
            let _ = tx.send(Err(unavailable(&e))).await;
            return;
        }
    };
    let ready = make(
        "provider_ready",
        data(&json!({"flagSetVersion": held.version})),
    );
    if tx.send(Ok(ready)).await.is_err() {
        return;
    }
    seat.sent(held.version);
    let mut alive = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    loop {
        if *closing.borrow() {
            let _ = tx.send(Err(ended("flagd is shutting down"))).await;
            return;
        }
        let at_least = tokio::select! {
            v = changes.next() => match v {
                Some(0) => None,
                Some(v) if v <= held.version => continue,
                Some(v) => Some(v),
                None => {
                    let _ = tx.send(Err(ended("flagd stopped publishing"))).await;
                    return;
                }
            },
            _ = alive.tick() => {
                if tx.send(Ok(make("keep_alive", None))).await.is_err() {
                    return;
                }
                continue;
            }
            r = revoked.recv() => {
                if revoked_now(&state, &who, r).await {
                    let _ = tx.send(Err(Status::unauthenticated("the SDK key was revoked"))).await;
                    return;
                }
                continue;
            }
            _ = closing.changed() => continue,
            () = tx.closed() => return,
        };
        let whole = match hub.whole_set(env, at_least).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(env, error = %e, "cannot read the flag set for an event stream");
                continue;
            }
        };
        if whole.version <= held.version {
            continue;
        }
        let changed = whole.changed_since(&held);
        held = whole;
        if changed.is_empty() {
            continue;
        }
        let msg = make(
            "configuration_change",
            data(&json!({"flags": *changed, "flagSetVersion": held.version})),
        );
        if tx.send(Ok(msg)).await.is_err() {
            return;
        }
        seat.sent(held.version);
    }
}

/// Whether a revocation heard ends a stream of `who`'s key (when some were missed, the
/// store says whether the key still holds).
pub(super) async fn revoked_now(
    state: &AppState,
    who: &Authorized,
    heard: Result<Revoked, broadcast::error::RecvError>,
) -> bool {
    match heard {
        Ok(Revoked::Token(t)) => t == who.caller.token_id,
        Err(broadcast::error::RecvError::Lagged(_)) => !matches!(
            state.store.token_by_id(&who.caller.token_id).await,
            Ok(Some(_))
        ),
        _ => false,
    }
}

/// An integer flag's value (the type check accepted it: an integer, or a float with no
/// fraction).
fn integer(v: &Json) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
}
