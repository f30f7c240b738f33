//! `flagd.evaluation.v2.Service`, which the current official providers speak: a value
//! and a variant may be left out, so it answers exactly what OFREP answers.

use std::pin::Pin;

use flagd_core::ValueType;
use futures_util::Stream;
use prost_types::Struct;
use serde_json::Value as Json;
use tonic::{Request, Response, Status};

use super::super::proto::evaluation_v2::service_server::Service;
use super::super::proto::evaluation_v2::*;
use super::{Evaluator, convert};
use crate::state::AppState;

/// The v2 service.
#[derive(Debug)]
pub struct EvaluationV2(Evaluator);

impl EvaluationV2 {
    /// Over flagd's state, sending `keep_alive` every `keepalive`.
    pub fn new(state: AppState, keepalive: std::time::Duration) -> Self {
        Self(Evaluator { state, keepalive })
    }
}

fn event(kind: &str, data: Option<Struct>) -> EventStreamResponse {
    EventStreamResponse {
        r#type: kind.to_owned(),
        data,
    }
}

type Events = Pin<Box<dyn Stream<Item = Result<EventStreamResponse, Status>> + Send>>;

/// One typed answer: `read` takes the value (absent: the caller's default).
macro_rules! resolve {
    ($self:ident, $request:ident, $ty:expr, $response:ident, $read:expr) => {{
        let r = $request.get_ref();
        let o = $self
            .0
            .resolve(&$request, &r.flag_key, r.context.as_ref(), $ty)
            .await?;
        let read: fn(&Json) -> Option<_> = $read;
        Ok(Response::new($response {
            value: o.value.as_ref().and_then(read),
            reason: o.reason.to_owned(),
            variant: o.variant,
            metadata: o.metadata,
        }))
    }};
}

#[tonic::async_trait]
impl Service for EvaluationV2 {
    type EventStreamStream = Events;

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
        resolve!(
            self,
            request,
            ValueType::Object,
            ResolveObjectResponse,
            |v| v.as_object().map(convert::object)
        )
    }

    async fn event_stream(
        &self,
        request: Request<EventStreamRequest>,
    ) -> Result<Response<Self::EventStreamStream>, Status> {
        let mut rx = self
            .0
            .event_stream(&request, "flagd.evaluation.v2", event)
            .await?;
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Response::new(Box::pin(stream)))
    }
}
