//! The OpenFeature provider, through the OpenFeature client API, against a real flagd.

use std::time::Duration;

use flagd_sdk::{Client, Status};
use open_feature::{EvaluationContext, EvaluationErrorCode, EvaluationReason, OpenFeature};
use serde_json::json;

mod common;

use common::{api, sdk_key};
use flagd_harness::InProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openfeature_client_over_the_sdk() {
    let flagd = InProcess::new().start().await;
    let base = flagd.base();

    let key = sdk_key(&base).await;
    api(&base, reqwest::Method::PUT, "/environments/production/flags", json!({
        "metadata": {"team": "web"},
        "flags": {
            "checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                         "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", null]}, "metadata": {"jira": 7}},
            "provider": {"state": "ENABLED", "variants": {"a": "stripe", "b": "adyen"}, "defaultVariant": "a"},
            "page-size": {"state": "ENABLED", "variants": {"s": 10, "l": 50}, "defaultVariant": "l"},
            "ratio": {"state": "ENABLED", "variants": {"x": 0.25}, "defaultVariant": "x"},
            "banner": {"state": "ENABLED", "variants": {"x": {"text": "hi", "n": [1, 2]}}, "defaultVariant": "x"},
            "off": {"state": "DISABLED", "variants": {"on": true}, "defaultVariant": "on"}
        }
    })).await;
    let sdk = Client::builder(&base, &key)
        .wait_for_first_snapshot(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    assert_eq!(sdk.status(), Status::Ready { version: 1 });

    let mut api_guard = OpenFeature::singleton_mut().await;
    api_guard
        .set_provider(flagd_sdk::openfeature::Provider::new(sdk))
        .await;
    let client = api_guard.create_client();
    drop(api_guard);

    let pro = EvaluationContext::default()
        .with_targeting_key("user-1")
        .with_custom_field("plan", "pro");
    let free = EvaluationContext::default()
        .with_targeting_key("user-2")
        .with_custom_field("plan", "free");
    let d = client
        .get_bool_details("checkout", Some(&pro), None)
        .await
        .unwrap();
    assert_eq!(
        (d.value, d.variant.as_deref(), d.reason),
        (true, Some("on"), Some(EvaluationReason::TargetingMatch))
    );
    assert_eq!(
        d.flag_metadata.values.len(),
        2,
        "flag metadata over flag-set metadata"
    );
    let d = client
        .get_bool_details("checkout", Some(&free), None)
        .await
        .unwrap();
    assert_eq!(
        (d.value, d.reason),
        (false, Some(EvaluationReason::Default))
    );
    assert_eq!(
        client
            .get_string_value("provider", None, None)
            .await
            .unwrap(),
        "stripe"
    );
    assert_eq!(
        client.get_int_value("page-size", None, None).await.unwrap(),
        50
    );
    assert_eq!(
        client.get_float_value("ratio", None, None).await.unwrap(),
        0.25
    );
    let s = client
        .get_struct_value::<open_feature::StructValue>("banner", None, None)
        .await
        .unwrap();
    assert_eq!(
        s.fields.get("text"),
        Some(&open_feature::Value::String("hi".into()))
    );

    let e = client
        .get_bool_value("missing", None, None)
        .await
        .unwrap_err();
    assert_eq!(e.code, EvaluationErrorCode::FlagNotFound);
    let e = client
        .get_int_value("provider", None, None)
        .await
        .unwrap_err();
    assert_eq!(e.code, EvaluationErrorCode::TypeMismatch);
    let e = client.get_bool_value("off", None, None).await.unwrap_err();
    assert_eq!(e.code, EvaluationErrorCode::General("DISABLED".into()));
    // The application's default then applies, as OpenFeature clients do.
    assert!(
        client
            .get_bool_value("off", None, None)
            .await
            .unwrap_or(true)
    );
}
