//! The official OpenFeature flagd providers (`crate::grpc`): they are sent whole flag
//! sets (the sync protocol has no deltas) and told which flags changed, and they cannot
//! acknowledge what they applied.
//!
//! Each version's whole set is serialized once per environment and shared by every
//! provider's stream, like the SDKs' frames; what changed is counted once per version.

use super::*;
use serde_json::Map;

/// An environment's whole flag set at one version, as the providers are sent it.
#[derive(Debug)]
pub struct WholeSet {
    /// Its version.
    pub version: u64,
    /// The flagd document (`flags`, `$evaluators`, `metadata`), serialized when an
    /// in-process provider first needs it (RPC providers' events never do).
    configuration: std::sync::OnceLock<Arc<str>>,
    document: Arc<Value>,
    /// The version `changed` counts from (the set built before this one).
    from: Option<u64>,
    changed: Arc<Map<String, Value>>,
}

impl WholeSet {
    /// The set as the sync protocol sends it (`flag_configuration`), serialized once.
    pub fn configuration(&self) -> &Arc<str> {
        self.configuration
            .get_or_init(|| configuration(&self.document))
    }

    /// The flags that differ from `earlier`, as OpenFeature's flagd names them in a
    /// `configuration_change` event: key → `{"type": "write" | "update" | "delete"}`.
    /// A flag whose shared evaluator (`$ref`) or whose set's metadata changed counts as
    /// updated: what it evaluates to may have.
    pub fn changed_since(&self, earlier: &WholeSet) -> Arc<Map<String, Value>> {
        if self.from == Some(earlier.version) {
            return self.changed.clone();
        }
        Arc::new(changed_flags(&earlier.document, &self.document))
    }
}

/// What moved between two documents, by flag.
pub(super) fn changed_flags(old: &Value, new: &Value) -> Map<String, Value> {
    let empty = Map::new();
    let part = |d: &'_ Value, name: &str| -> Option<Map<String, Value>> {
        d.get(name).and_then(Value::as_object).cloned()
    };
    let (old_flags, new_flags) = (
        old.get("flags")
            .and_then(Value::as_object)
            .unwrap_or(&empty),
        new.get("flags")
            .and_then(Value::as_object)
            .unwrap_or(&empty),
    );
    let (old_evaluators, new_evaluators) = (
        part(old, "$evaluators").unwrap_or_default(),
        part(new, "$evaluators").unwrap_or_default(),
    );
    let evaluators: std::collections::HashSet<&str> = old_evaluators
        .iter()
        .filter(|(k, v)| new_evaluators.get(*k) != Some(v))
        .map(|(k, _)| k.as_str())
        .chain(
            new_evaluators
                .keys()
                .filter(|k| !old_evaluators.contains_key(*k))
                .map(String::as_str),
        )
        .collect();
    let metadata = old.get("metadata") != new.get("metadata");
    let kind = |t: &str| Value::Object(Map::from_iter([("type".to_owned(), Value::from(t))]));
    let mut out = Map::new();
    for k in old_flags.keys() {
        if !new_flags.contains_key(k) {
            out.insert(k.clone(), kind("delete"));
        }
    }
    for (k, flag) in new_flags {
        match old_flags.get(k) {
            None => {
                out.insert(k.clone(), kind("write"));
            }
            Some(before)
                if before != flag
                    || metadata
                    || (!evaluators.is_empty()
                        && flag
                            .get("targeting")
                            .is_some_and(|t| refers_to(t, &evaluators))) =>
            {
                out.insert(k.clone(), kind("update"));
            }
            Some(_) => {}
        }
    }
    out
}

/// Whether a targeting rule uses one of `names` (`{"$ref": name}`).
fn refers_to(rule: &Value, names: &std::collections::HashSet<&str>) -> bool {
    match rule {
        Value::Object(o) => o.iter().any(|(k, v)| {
            (k == "$ref" && v.as_str().is_some_and(|n| names.contains(n))) || refers_to(v, names)
        }),
        Value::Array(a) => a.iter().any(|v| refers_to(v, names)),
        _ => false,
    }
}

/// The document as the providers read it, serialized straight from the held document
/// (a set of 10,000 flags is written once per version, never copied first): `flags`,
/// `$evaluators`, and the set's `metadata`.
///
/// The version is not in the set's metadata, as remote evaluation puts it: providers
/// merge the set's metadata into every flag's, so a value that changes with every
/// version would make every change look like a change of every flag to them (the
/// JavaScript provider names every flag in its change event then).
///
/// Only what flagd's schema defines goes out: the official Python provider refuses a
/// whole set for one flag with a member it does not know, or a metadata value that is
/// not a string, number or boolean; evaluation reads none of what is left out.
fn configuration(document: &Value) -> Arc<str> {
    use serde::ser::{SerializeMap, Serializer};
    fn scalar(v: &Value) -> bool {
        matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
    }
    struct Metadata<'a>(&'a Map<String, Value>);
    impl Serialize for Metadata<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().filter(|(_, v)| scalar(v)))
        }
    }
    struct Flag<'a>(&'a Value);
    impl Serialize for Flag<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let Some(flag) = self.0.as_object() else {
                return self.0.serialize(s);
            };
            let mut m = s.serialize_map(None)?;
            for (k, v) in flag {
                match k.as_str() {
                    "state" | "variants" | "defaultVariant" | "targeting" => {
                        m.serialize_entry(k, v)?;
                    }
                    "metadata" => {
                        if let Some(o) = v.as_object() {
                            m.serialize_entry(k, &Metadata(o))?;
                        }
                    }
                    _ => {}
                }
            }
            m.end()
        }
    }
    struct Flags<'a>(&'a Map<String, Value>);
    impl Serialize for Flags<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().map(|(k, v)| (k, Flag(v))))
        }
    }
    struct Document<'a>(&'a Map<String, Value>);
    impl Serialize for Document<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let empty = Map::new();
            let flags = self.0.get("flags").and_then(Value::as_object);
            let mut m = s.serialize_map(None)?;
            m.serialize_entry("flags", &Flags(flags.unwrap_or(&empty)))?;
            if let Some(e) = self.0.get("$evaluators").filter(|e| e.is_object()) {
                m.serialize_entry("$evaluators", e)?;
            }
            if let Some(o) = self.0.get("metadata").and_then(Value::as_object) {
                m.serialize_entry("metadata", &Metadata(o))?;
            }
            m.end()
        }
    }
    let empty = Map::new();
    let doc = document.as_object().unwrap_or(&empty);
    // Serializing held JSON to a string cannot fail.
    Arc::from(serde_json::to_string(&Document(doc)).unwrap_or_default())
}

/// A provider's place in its environment's fleet: shown connected with the version last
/// sent, "not acknowledged"; when its stream ends, unreachable (it may still evaluate
/// what it was sent last) until it is forgotten or the fleet TTL passes.
#[derive(Debug)]
pub struct ProviderSeat {
    env: Arc<EnvHub>,
    member: Arc<Member>,
    /// An evaluation-stream provider evaluates through flagd: gone, it holds nothing.
    forget_on_end: bool,
}

/// Who a provider is, for the fleet view.
#[derive(Debug)]
pub struct ProviderInfo {
    /// How it is shown (`sdk`), e.g. `grpc-node-js/1.12.6 (flagd.sync.v1)`.
    pub sdk: String,
    /// Its address.
    pub host: String,
    /// Its labels (protocol, provider id, selector).
    pub labels: serde_json::Map<String, Value>,
    /// The SDK key's name.
    pub key_name: String,
    /// The SDK key's token id.
    pub token_id: String,
    /// Whether it evaluates through flagd (RPC) rather than holding the set.
    pub remote: bool,
    /// The id the provider gave itself (`provider_id`), if any: a provider that
    /// reconnects with the same one, from the same host with the same key, takes its
    /// entry over instead of leaving an unreachable one behind.
    pub provider_id: String,
}

impl ProviderSeat {
    /// Records the version sent.
    pub fn sent(&self, version: u64) {
        let before = self
            .member
            .sent
            .swap(version, std::sync::atomic::Ordering::Relaxed);
        if before != version {
            self.env.fleet_changed();
        }
    }

    /// Records why flagd could not send it the set.
    pub fn failed(&self, why: String) {
        if let Ok(mut p) = self.member.problems.lock() {
            p.1 = Some(why);
        }
        self.env.fleet_changed();
    }

    /// Its id in the fleet.
    pub fn instance(&self) -> &str {
        &self.member.info.instance
    }
}

impl Drop for ProviderSeat {
    fn drop(&mut self) {
        self.env.fleet_changed();
        if let Ok(mut f) = self.env.fleet.lock()
            && f.get(&self.member.info.instance)
                .is_some_and(|m| Arc::ptr_eq(m, &self.member))
        {
            if self.forget_on_end {
                f.remove(&self.member.info.instance);
            } else {
                self.member
                    .gone_at
                    .store(store::now_ms(), std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// The versions an environment publishes, as they go out.
#[derive(Debug)]
pub struct Changes {
    rx: broadcast::Receiver<Frame>,
}

impl Changes {
    /// The next version published (0 when some were missed: read the head), or `None`
    /// when flagd stops publishing.
    pub async fn next(&mut self) -> Option<u64> {
        match self.rx.recv().await {
            Ok(f) => Some(f.version),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(0),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Hub {
    /// Subscribes to an environment's publications (before its set is first read, so
    /// that nothing committed in between is missed).
    pub async fn changes(&self, env: &str) -> Changes {
        Changes {
            rx: self.env(env).await.tx.subscribe(),
        }
    }

    /// The environment's whole set at its head (the store is asked, as for an SDK's
    /// connection, since another replica may have committed), or at least at
    /// `at_least` when a publication named it.
    pub async fn whole_set(&self, env: &str, at_least: Option<u64>) -> ApiResult<Arc<WholeSet>> {
        let h = self.env(env).await;
        let (loaded, cached) = {
            let c = h.cache.read().await;
            (c.loaded, c.version)
        };
        let behind = match at_least {
            Some(v) => v > cached,
            None => match self.store.environment(env).await {
                Ok(e) => e.version > cached,
                // The store is down: providers get the set this replica holds.
                Err(store::StoreError::Unavailable(_)) if loaded => false,
                Err(e) => return Err(e.into()),
            },
        };
        if !loaded || behind {
            self.reload(&h, env).await?;
        }
        let mut slot = h.whole.lock().await;
        let c = h.cache.read().await;
        if let Some(w) = slot.as_ref()
            && w.version == c.version
        {
            return Ok(w.clone());
        }
        let document = Arc::new(c.document.clone());
        let version = c.version;
        drop(c);
        let (from, changed) = match slot.as_ref() {
            Some(p) => (
                Some(p.version),
                Arc::new(changed_flags(&p.document, &document)),
            ),
            None => (None, Arc::new(Map::new())),
        };
        let whole = Arc::new(WholeSet {
            version,
            configuration: std::sync::OnceLock::new(),
            document,
            from,
            changed,
        });
        *slot = Some(whole.clone());
        Ok(whole)
    }

    /// Seats a provider in the fleet of `env`.
    pub async fn seat_provider(&self, env: &str, who: ProviderInfo) -> ProviderSeat {
        let h = self.env(env).await;
        let mut id = [0u8; 6];
        if who.provider_id.is_empty() {
            // An id collision needs two providers in one fleet with the same 48 random
            // bits.
            let _ = getrandom::fill(&mut id);
        } else {
            use sha2::Digest;
            let named = sha2::Sha256::digest(
                format!("{}\n{}\n{}", who.token_id, who.host, who.provider_id).as_bytes(),
            );
            id.copy_from_slice(&named[..6]);
        }
        let instance = format!("grpc-{}", crate::auth::hex(&id));
        let member = Arc::new(Member::new(
            Instance::connected(
                instance.clone(),
                who.sdk,
                who.host,
                who.labels,
                who.key_name,
                false,
            ),
            who.token_id,
            None,
        ));
        h.fleet_changed();
        if let Ok(mut f) = h.fleet.lock() {
            f.insert(instance, member.clone());
            if f.len() % 256 == 0 {
                prune(&mut f, self.ttl_ms());
            }
        }
        ProviderSeat {
            env: h,
            member,
            forget_on_end: who.remote,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_flags_names_what_moved_as_flagd_does() {
        let old = json!({
            "flags": {
                "a": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"},
                "b": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"},
                "c": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
                      "targeting": {"if": [{"$ref": "pro"}, "on", null]}},
                "gone": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"},
            },
            "$evaluators": {"pro": {"==": [{"var": "plan"}, "pro"]}},
        });
        let mut new = old.clone();
        new["flags"]["a"]["state"] = json!("DISABLED");
        new["flags"].as_object_mut().unwrap().remove("gone");
        new["flags"]["added"] =
            json!({"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "x"});
        new["$evaluators"]["pro"] = json!({"==": [{"var": "plan"}, "premium"]});
        let changed = changed_flags(&old, &new);
        assert_eq!(
            Value::Object(changed),
            json!({
                "gone": {"type": "delete"},
                "a": {"type": "update"},
                "c": {"type": "update"},
                "added": {"type": "write"},
            })
        );
        assert!(changed_flags(&new, &new).is_empty());
    }

    #[test]
    fn the_configuration_keeps_what_flagds_schema_defines() {
        let doc = json!({
            "$schema": "https://flagd.dev/schema/v0/flags.json",
            "flags": {"f": {
                "state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
                "description": "not flagd's", "metadata": {"owner": "web", "nested": {"a": 1}, "none": null},
            }},
            "$evaluators": {"pro": {"==": [1, 1]}},
            "metadata": {"team": "web", "list": [1]},
        });
        let text = configuration(&doc);
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back,
            json!({
                "flags": {"f": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
                                "metadata": {"owner": "web"}}},
                "$evaluators": {"pro": {"==": [1, 1]}},
                "metadata": {"team": "web"},
            })
        );
        let back: Value = serde_json::from_str(&configuration(&json!({"flags": {}}))).unwrap();
        assert_eq!(back, json!({"flags": {}}));
    }
}
