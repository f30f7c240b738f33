//! `flagd.evaluation.v1.Service`.

use std::pin::Pin;

use flagd_core::{EvaluationContext, ValueType};
use futures_util::Stream;
use prost_types::Struct;
use serde_json::Value as Json;
use tonic::{Request, Response, Status};

use super::super::proto::evaluation::service_server::Service;
use super::super::proto::evaluation::*;
use super::{Evaluator, Outcome, convert, count, outcome};
use crate::state::AppState;

/// The v1 service.
#[derive(Debug)]
pub struct EvaluationV1(Evaluator);

impl EvaluationV1 {
    /// Over flagd's state, sending `keep_alive` every `keepalive`.
    pub fn new(state: AppState, keepalive: std::time::Duration) -> Self {
        Self(Evaluator { state, keepalive })
    }

    /// v1 has no "no value": a disabled flag is the type's zero (reason `DISABLED`); a
    /// flag left without a value is `NOT_FOUND`, as flagd answers v1.
    async fn resolve<T, V>(
        &self,
        request: &Request<T>,
        key: &str,
        context: Option<&Struct>,
        ty: ValueType,
        read: impl FnOnce(&Json) -> Option<V>,
    ) -> Result<(V, Outcome), Status>
    where
        V: Default,
    {
        let o = self.0.resolve(request, key, context, ty).await?;
        match o.value.as_ref() {
            Some(v) => Ok((read(v).unwrap_or_default(), o)),
            None if o.reason == "DISABLED" => Ok((V::default(), o)),
            None => Err(Status::not_found(format!(
                "flag `{key}` has no default variant and its targeting chose none: use the caller's default"
            ))),
        }
    }
}

fn event(kind: &str, data: Option<Struct>) -> EventStreamResponse {
    EventStreamResponse {
        r#type: kind.to_owned(),
        data,
    }
}

type Events = Pin<Box<dyn Stream<Item = Result<EventStreamResponse, Status>> + Send>>;

/// One typed answer: `read` takes the value (a disabled flag's is the type's zero).
macro_rules! resolve {
    ($self:ident, $request:ident, $ty:expr, $response:ident, $read:expr) => {{
        let r = $request.get_ref();
        let (value, o) = $self
            .resolve(&$request, &r.flag_key, r.context.as_ref(), $ty, $read)
            .await?;
        Ok(Response::new($response {
            value,
            reason: o.reason.to_owned(),
            variant: o.variant.unwrap_or_default(),
            metadata: o.metadata,
        }))
    }};
}

#[tonic::async_trait]
impl Service for EvaluationV1 {
    type EventStreamStream = Events;

    async fn resolve_all(
        &self,
        request: Request<ResolveAllRequest>,
    ) -> Result<Response<ResolveAllResponse>, Status> {
        let (env, compiled) = self.0.head(&request).await?;
        let ctx: EvaluationContext = convert::context(request.get_ref().context.as_ref());
        let snapshot = &compiled.snapshot;
        let mut flags = std::collections::HashMap::with_capacity(compiled.sorted_keys.len());
        for key in compiled.sorted_keys.iter() {
            let d = snapshot.evaluate(key, &ctx);
            count(&self.0.state, &env, key, &d);
            // As flagd: flags in error, disabled, or without a value are left out.
            let Ok(Outcome {
                value: Some(value),
                reason,
                variant,
                metadata,
            }) = outcome(key, &d, snapshot.version())
            else {
                continue;
            };
            let value = match &value {
                Json::Bool(b) => any_flag::Value::BoolValue(*b),
                Json::String(s) => any_flag::Value::StringValue(s.clone()),
                Json::Number(n) => any_flag::Value::DoubleValue(n.as_f64().unwrap_or_default()),
                Json::Object(o) => any_flag::Value::ObjectValue(convert::object(o)),
                // An array variant has no place in AnyFlag.
                _ => continue,
            };
            flags.insert(
                key.to_string(),
                AnyFlag {
                    reason: reason.to_owned(),
                    variant: variant.unwrap_or_default(),
                    value: Some(value),
                    metadata,
                },
            );
        }
        Ok(Response::new(ResolveAllResponse {
            flags,
            metadata: Some(convert::metadata(snapshot.metadata(), snapshot.version())),
        }))
    }

    async fn resolve_boolean(
        &self,
        request: Request<ResolveBooleanRequest>,
    ) -> Result<Response<ResolveBooleanResponse>, Status> {
        resolve!(
            self,
            request,
            ValueType::Boolean,
            ResolveBooleanResponse,
            Json::as_bool
        )
    }

    async fn resolve_string(
        &self,
        request: Request<ResolveStringRequest>,
    ) -> Result<Response<ResolveStringResponse>, Status> {
        resolve!(
            self,
            request,
            ValueType::String,
            ResolveStringResponse,
            |v| v.as_str().map(str::to_owned)
        )
    }

    async fn resolve_float(
        &self,
        request: Request<ResolveFloatRequest>,
    ) -> Result<Response<ResolveFloatResponse>, Status> {
        resolve!(
            self,
            request,
            ValueType::Float,
            ResolveFloatResponse,
            Json::as_f64
        )
    }

    async fn resolve_int(
        &self,
        request: Request<ResolveIntRequest>,
    ) -> Result<Response<ResolveIntResponse>, Status> {
        resolve!(
            self,
            request,
            ValueType::Integer,
            ResolveIntResponse,
            super::integer
        )
    }

    async fn resolve_object(
        &self,
        request: Request<ResolveObjectRequest>,
    ) -> Result<Response<ResolveObjectResponse>, Status> {
        let r = request.get_ref();
        let (value, o) = self
            .resolve(
                &request,
                &r.flag_key,
                r.context.as_ref(),
                ValueType::Object,
                |v| v.as_object().map(convert::object),
            )
            .await?;
        Ok(Response::new(ResolveObjectResponse {
            value: Some(value),
            reason: o.reason.to_owned(),
            variant: o.variant.unwrap_or_default(),
            metadata: o.metadata,
        }))
    }

    async fn event_stream(
        &self,
        request: Request<EventStreamRequest>,
    ) -> Result<Response<Self::EventStreamStream>, Status> {
        let mut rx = self
            .0
            .event_stream(&request, "flagd.evaluation.v1", event)
            .await?;
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Response::new(Box::pin(stream)))
    }
}
