//! An OpenFeature provider over the SDK (feature `openfeature`): application code keeps
//! the OpenFeature client API; evaluation is still the SDK's in-process snapshot.
//!
//! Details and error codes map one to one (reasons `STATIC`, `TARGETING_MATCH`,
//! `DEFAULT`; `FLAG_NOT_FOUND`, `TYPE_MISMATCH`, `PARSE_ERROR`, `GENERAL`). OpenFeature's
//! Rust API has no way for a provider to answer "use the caller's default" other than
//! an error, so a `DISABLED` flag, and `DEFAULT` without a default variant, come back as
//! an error with code `GENERAL` and the message `DISABLED` or `DEFAULT`.
//!
//! ```no_run
//! # async fn run(sdk: flagd_sdk::Client) {
//! use open_feature::OpenFeature;
//! let mut api = OpenFeature::singleton_mut().await;
//! api.set_provider(flagd_sdk::openfeature::Provider::new(sdk)).await;
//! let client = api.create_client();
//! let on = client.get_bool_value("new-checkout", None, None).await.unwrap_or(false);
//! # }
//! ```

use open_feature::provider::{
    FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails,
};
use open_feature::{
    EvaluationContext as OfContext, EvaluationContextFieldValue, EvaluationError,
    EvaluationErrorCode, EvaluationReason, EvaluationResult, FlagMetadata, FlagMetadataValue,
    StructValue, Value as OfValue,
};
use serde_json::Value as Json;

use crate::{Client, ErrorCode, EvaluationContext, Reason, Status, ValueType};

/// The OpenFeature provider.
#[derive(Debug)]
pub struct Provider {
    sdk: Client,
    metadata: ProviderMetadata,
}

impl Provider {
    /// A provider over a built SDK client.
    ///
    /// ```no_run
    /// # fn f(sdk: flagd_sdk::Client) {
    /// let provider = flagd_sdk::openfeature::Provider::new(sdk);
    /// # }
    /// ```
    pub fn new(sdk: Client) -> Self {
        Self {
            sdk,
            metadata: ProviderMetadata::new("flagd-sdk-rust"),
        }
    }
}

fn context(of: &OfContext) -> EvaluationContext {
    let mut ctx = match &of.targeting_key {
        Some(k) => EvaluationContext::new(k.clone()),
        None => EvaluationContext::empty(),
    };
    for (k, v) in &of.custom_fields {
        let v = match v {
            EvaluationContextFieldValue::Bool(b) => crate::Value::Bool(*b),
            EvaluationContextFieldValue::Int(i) => crate::Value::Int(*i),
            EvaluationContextFieldValue::Float(f) => crate::Value::Float(*f),
            EvaluationContextFieldValue::String(s) => crate::Value::String(s.clone()),
            // Times compare as Unix seconds, like `$flagd.timestamp`.
            EvaluationContextFieldValue::DateTime(t) => crate::Value::Int(t.unix_timestamp()),
            EvaluationContextFieldValue::Struct(any) => match any.downcast_ref::<Json>() {
                Some(j) => crate::Value::from_json(j),
                None => continue,
            },
        };
        ctx.set(k.clone(), v);
    }
    ctx
}

fn of_value(v: &Json) -> OfValue {
    match v {
        Json::Bool(b) => OfValue::Bool(*b),
        Json::Number(n) => n.as_i64().map_or_else(
            || OfValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            OfValue::Int,
        ),
        Json::String(s) => OfValue::String(s.clone()),
        Json::Array(a) => OfValue::Array(a.iter().map(of_value).collect()),
        Json::Object(o) => OfValue::Struct(StructValue {
            fields: o.iter().map(|(k, v)| (k.clone(), of_value(v))).collect(),
        }),
        Json::Null => OfValue::String(String::new()),
    }
}

fn metadata(m: &serde_json::Map<String, Json>) -> FlagMetadata {
    let mut out = FlagMetadata::default();
    for (k, v) in m {
        let v = match v {
            Json::Bool(b) => FlagMetadataValue::Bool(*b),
            Json::Number(n) => n.as_i64().map_or_else(
                || FlagMetadataValue::Float(n.as_f64().unwrap_or(f64::NAN)),
                FlagMetadataValue::Int,
            ),
            Json::String(s) => FlagMetadataValue::String(s.clone()),
            _ => continue,
        };
        out.values.insert(k.clone(), v);
    }
    out
}

fn error(code: EvaluationErrorCode, message: impl Into<String>) -> EvaluationError {
    EvaluationError {
        code,
        message: Some(message.into()),
    }
}

impl Provider {
    fn resolve<T>(
        &self,
        key: &str,
        of: &OfContext,
        ty: ValueType,
        convert: impl Fn(&Json) -> Option<T>,
    ) -> EvaluationResult<ResolutionDetails<T>> {
        let ctx = context(of);
        self.sdk.with_detail_as(key, &ctx, ty, |d| {
            if let Some(code) = d.error_code {
                let message = d.error_message.as_deref().unwrap_or_default().to_owned();
                return Err(match code {
                    ErrorCode::FlagNotFound => error(EvaluationErrorCode::FlagNotFound, message),
                    ErrorCode::TypeMismatch => error(EvaluationErrorCode::TypeMismatch, message),
                    ErrorCode::ParseError => error(EvaluationErrorCode::ParseError, message),
                    ErrorCode::TargetingKeyMissing => {
                        error(EvaluationErrorCode::TargetingKeyMissing, message)
                    }
                    ErrorCode::InvalidContext => {
                        error(EvaluationErrorCode::InvalidContext, message)
                    }
                    ErrorCode::General => {
                        error(EvaluationErrorCode::General(message.clone()), message)
                    }
                });
            }
            let Some(value) = d.value.and_then(&convert) else {
                let what = if d.reason == Reason::Disabled {
                    "DISABLED"
                } else {
                    "DEFAULT"
                };
                return Err(error(EvaluationErrorCode::General(what.to_owned()), what));
            };
            let reason = match d.reason {
                Reason::Static => EvaluationReason::Static,
                Reason::TargetingMatch => EvaluationReason::TargetingMatch,
                Reason::Default => EvaluationReason::Default,
                Reason::Disabled => EvaluationReason::Disabled,
                _ => EvaluationReason::Unknown,
            };
            Ok(ResolutionDetails {
                value,
                variant: d.variant.map(str::to_owned),
                reason: Some(reason),
                flag_metadata: Some(metadata(d.flag_metadata)),
            })
        })
    }
}

#[open_feature::async_trait]
impl FeatureProvider for Provider {
    fn status(&self) -> ProviderStatus {
        match self.sdk.status() {
            Status::Ready { .. } | Status::Stale { .. } => ProviderStatus::Ready,
            Status::Connecting { .. } => ProviderStatus::NotReady,
        }
    }

    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    async fn resolve_bool_value(
        &self,
        key: &str,
        ctx: &OfContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        self.resolve(key, ctx, ValueType::Boolean, Json::as_bool)
    }

    async fn resolve_int_value(
        &self,
        key: &str,
        ctx: &OfContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        self.resolve(key, ctx, ValueType::Integer, |v| {
            v.as_i64()
                .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
        })
    }

    async fn resolve_float_value(
        &self,
        key: &str,
        ctx: &OfContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        self.resolve(key, ctx, ValueType::Float, Json::as_f64)
    }

    async fn resolve_string_value(
        &self,
        key: &str,
        ctx: &OfContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        self.resolve(key, ctx, ValueType::String, |v| {
            v.as_str().map(str::to_owned)
        })
    }

    async fn resolve_struct_value(
        &self,
        key: &str,
        ctx: &OfContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        self.resolve(key, ctx, ValueType::Object, |v| match of_value(v) {
            OfValue::Struct(s) => Some(s),
            _ => None,
        })
    }
}
