//! Unleash's Rust engine, `unleash-yggdrasil`, with toggles equivalent to our flags.
//!
//! - S1: a toggle with the `default` strategy (on for everyone).
//! - S2: a `flexibleRollout` of 10%, stickiness `userId`, group id the toggle name.
//! - S3: a `default` strategy constrained by `country IN [NO, SE, DK]` and
//!   `plan IN [pro]`, then a `flexibleRollout` of 25% (strategies are OR-ed, in order).
//! - S4: 1,000 toggles of S2's shape.
//!
//! The state is loaded as a real SDK does: client-features JSON, parsed and handed to
//! [`EngineState::take_state`]. Evaluation is [`EngineState::is_enabled`], the call an
//! SDK makes per `isEnabled` (SDKs then also count metrics; that is not timed here).

use std::collections::HashMap;
use std::fmt;

use serde_json::{Value as Json, json};
use unleash_yggdrasil::{ClientFeatures, Context, EngineState, UpdateMessage};

use crate::{Engine, S1_FLAG, S2_FLAG, S3_FLAG, S4_FLAGS, User, s4_flag_key};

fn rollout(name: &str, percent: u32) -> Json {
    json!({
        "name": "flexibleRollout",
        "parameters": {"rollout": percent.to_string(), "stickiness": "userId", "groupId": name}
    })
}

fn toggle(name: &str, strategies: &Json) -> Json {
    json!({"name": name, "type": "release", "enabled": true, "strategies": strategies})
}

/// The client-features document with the S1, S2 and S3 toggles.
pub fn client_features_doc() -> String {
    json!({"version": 2, "features": [
        toggle(S1_FLAG, &json!([{"name": "default", "parameters": {}}])),
        toggle(S2_FLAG, &json!([rollout(S2_FLAG, 10)])),
        toggle(S3_FLAG, &json!([
            {
                "name": "default",
                "parameters": {},
                "constraints": [
                    {"contextName": "country", "operator": "IN", "values": ["NO", "SE", "DK"]},
                    {"contextName": "plan", "operator": "IN", "values": ["pro"]}
                ]
            },
            rollout(S3_FLAG, 25)
        ])),
    ]})
    .to_string()
}

/// The client-features document of S4: [`S4_FLAGS`] toggles of S2's shape.
pub fn client_features_s4_doc() -> String {
    let features: Vec<Json> = (0..S4_FLAGS)
        .map(|i| {
            let name = s4_flag_key(i);
            toggle(&name, &json!([rollout(&name, 10)]))
        })
        .collect();
    json!({"version": 2, "features": features}).to_string()
}

/// An [`EngineState`] holding one client-features document.
pub struct Yggdrasil(pub EngineState);

impl fmt::Debug for Yggdrasil {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Yggdrasil").finish_non_exhaustive()
    }
}

impl Yggdrasil {
    /// Parses client-features JSON and loads it with `take_state`.
    pub fn load(text: &str) -> Self {
        let features: ClientFeatures = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => panic!("not Unleash client features: {e}"),
        };
        let engine = EngineState::default();
        if let Some(warnings) = engine.take_state(UpdateMessage::FullResponse(features)) {
            assert!(
                warnings.is_empty(),
                "yggdrasil warns about the benchmark toggles: {:?}",
                warnings
                    .iter()
                    .map(|w| format!("{}: {}", w.toggle_name, w.message))
                    .collect::<Vec<_>>()
            );
        }
        Self(engine)
    }
}

impl Engine for Yggdrasil {
    type Ctx = Context;
    const NAME: &'static str = "yggdrasil";

    fn small() -> Self {
        Self::load(&client_features_doc())
    }

    fn large() -> Self {
        Self::load(&client_features_s4_doc())
    }

    fn context(user: &User) -> Context {
        Context {
            user_id: Some(user.key.clone()),
            session_id: None,
            environment: None,
            app_name: None,
            current_time: None,
            remote_address: None,
            properties: Some(HashMap::from([
                ("country".to_owned(), user.country.to_owned()),
                ("plan".to_owned(), user.plan.to_owned()),
            ])),
        }
    }

    #[inline]
    fn enabled(&self, key: &str, ctx: &Context) -> bool {
        self.0.is_enabled(key, ctx, &None)
    }
}
