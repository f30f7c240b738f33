//! flagd's own heads: the compiled head of each environment (OFREP evaluates it) and
//! the SDK keys recently checked.

use super::*;
use crate::store::StoreError;

/// An environment's head compiled once for remote evaluation (OFREP).
#[derive(Debug)]
pub struct Compiled {
    /// The snapshot, at the head's version.
    pub snapshot: Arc<flagd_core::Snapshot>,
    /// Its flag keys, sorted once per version for bulk evaluation's stable order.
    pub sorted_keys: Arc<[Box<str>]>,
    /// When the store's head was last checked (another replica may have committed).
    checked: std::time::Instant,
}

impl Compiled {
    /// This head with `changes` applied as `version` (`document` is the head with them),
    /// compiling only what changed ([`flagd_core::Snapshot::with_changes`]); `None` when
    /// only a whole compile can apply them.
    pub(super) fn advance(
        &self,
        changes: &[flagd_core::wire::Change],
        version: u64,
        document: &Value,
    ) -> Option<Arc<Self>> {
        let flags = document.get("flags").and_then(Value::as_object);
        let snapshot = self
            .snapshot
            .with_changes(changes, version, |k| flags.and_then(|f| f.get(k)))?;
        // The sorted keys stay unless a flag came or went.
        let same_keys = snapshot.len() == self.snapshot.len()
            && changes
                .iter()
                .filter(|c| c.kind == flagd_core::wire::ItemKind::Flag)
                .all(|c| self.snapshot.contains(&c.key) && snapshot.contains(&c.key));
        let sorted_keys = if same_keys {
            self.sorted_keys.clone()
        } else {
            let mut keys: Vec<Box<str>> = snapshot.keys().map(Box::from).collect();
            keys.sort_unstable();
            keys.into()
        };
        Some(Arc::new(Self {
            snapshot: Arc::new(snapshot),
            sorted_keys,
            checked: std::time::Instant::now(),
        }))
    }
}

/// What a secret presented for remote evaluation is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SdkKey {
    /// An SDK key of this environment.
    Environment(String),
    /// A valid credential that is not an SDK key (an API token).
    NotAnSdkKey,
    /// Unknown or revoked.
    Unknown,
}

/// What a secret checked as an SDK key is.
enum Checked {
    Key(Caller),
    NotAnSdkKey,
    Unknown,
}

/// How long a compiled head is served before the store is asked whether another replica
/// has committed since.
pub(super) const HEAD_CHECK: Duration = Duration::from_secs(1);

/// How long an SDK key is trusted without asking the store again.
pub(super) const KEY_TTL: Duration = Duration::from_secs(10);

impl Hub {
    /// What a secret is, for remote evaluation: an SDK key's environment comes from
    /// memory when checked in the last seconds.
    pub async fn sdk_key(&self, secret: &str) -> ApiResult<SdkKey> {
        // Every remote evaluation starts here: a key checked recently costs its digest,
        // a lookup and the environment's name, not a copy of the whole caller.
        let digest = crate::auth::digest_secret(secret);
        if let Ok(keys) = self.sdk_keys.lock()
            && let Some((caller, at)) = keys.get(&digest)
            && at.elapsed() < KEY_TTL
        {
            let env = caller.environments.as_ref().and_then(|e| e.first());
            return Ok(SdkKey::Environment(env.cloned().unwrap_or_default()));
        }
        Ok(match self.check_sdk_key(secret).await? {
            Checked::Key(caller) => SdkKey::Environment(
                caller
                    .environments
                    .and_then(|e| e.into_iter().next())
                    .unwrap_or_default(),
            ),
            Checked::NotAnSdkKey => SdkKey::NotAnSdkKey,
            Checked::Unknown => SdkKey::Unknown,
        })
    }

    /// The caller an SDK key makes, for the stream: from memory when checked in the last
    /// seconds, so that thousands of SDKs failing over to this replica at once do not
    /// each cost a store query. `None` for an unknown or revoked secret; 403 for a
    /// credential that is not an SDK key. A revocation through any replica empties the
    /// memory (within `--follow-interval` for another replica's).
    pub async fn sdk_caller(&self, secret: &str) -> ApiResult<Option<Caller>> {
        match self.check_sdk_key(secret).await? {
            Checked::Key(caller) => Ok(Some(caller)),
            Checked::NotAnSdkKey => Err(ApiError::Forbidden(
                "the stream takes an SDK key (POST /environments/{env}/sdk-keys)".into(),
            )),
            Checked::Unknown => Ok(None),
        }
    }

    async fn check_sdk_key(&self, secret: &str) -> ApiResult<Checked> {
        let digest = crate::auth::digest_secret(secret);
        if let Ok(keys) = self.sdk_keys.lock()
            && let Some((caller, at)) = keys.get(&digest)
            && at.elapsed() < KEY_TTL
        {
            return Ok(Checked::Key(caller.clone()));
        }
        let hash = crate::auth::hex(&digest);
        let token = match self.store.token_by_hash(&hash).await {
            Ok(t) => t,
            // The store is down: a key checked before stays good (a revocation needs
            // the store, so none can have happened through any replica since).
            Err(StoreError::Unavailable(why)) => {
                let held = self
                    .sdk_keys
                    .lock()
                    .ok()
                    .and_then(|k| k.get(&digest).map(|(c, _)| c.clone()));
                match held {
                    Some(caller) => {
                        tracing::debug!(
                            why,
                            "store unavailable: an SDK key checked before is trusted"
                        );
                        return Ok(Checked::Key(caller));
                    }
                    None => return Err(StoreError::Unavailable(why).into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        let Some(token) = token else {
            return Ok(Checked::Unknown);
        };
        let is_key = token.role == Role::Sdk.as_str()
            && token.environments.as_ref().is_some_and(|e| !e.is_empty());
        if !is_key {
            return Ok(Checked::NotAnSdkKey);
        }
        let caller = crate::auth::caller_of(token, None)?;
        if let Ok(mut keys) = self.sdk_keys.lock() {
            if keys.len() > 10_000 {
                keys.clear();
            }
            keys.insert(digest, (caller.clone(), std::time::Instant::now()));
        }
        Ok(Checked::Key(caller))
    }

    /// Forgets the SDK keys held in memory (a token was revoked).
    pub fn forget_sdk_keys(&self) {
        if let Ok(mut keys) = self.sdk_keys.lock() {
            keys.clear();
        }
    }

    /// The environment's head, compiled once per version for remote evaluation.
    pub async fn compiled(&self, env: &str) -> ApiResult<Arc<Compiled>> {
        let hub = self.env(env).await;
        let fresh = |hub: &EnvHub| {
            hub.compiled
                .lock()
                .ok()
                .and_then(|c| c.clone())
                .filter(|c| c.checked.elapsed() < HEAD_CHECK)
        };
        if let Some(c) = fresh(&hub) {
            return Ok(c);
        }
        let _one = hub.compiling.lock().await;
        if let Some(c) = fresh(&hub) {
            return Ok(c);
        }
        let (loaded, cached) = {
            let c = hub.cache.read().await;
            (c.loaded, c.version)
        };
        match self.store.environment(env).await {
            Ok(e) if !loaded || e.version > cached => self.reload(&hub, env).await?,
            Ok(_) => {}
            // The store is down: remote evaluation goes on with the head this replica
            // holds (what its SDKs hold too), checked again in a moment.
            Err(StoreError::Unavailable(why)) if loaded => {
                tracing::debug!(env, why, "store unavailable: evaluating the head held");
            }
            Err(e) => return Err(e.into()),
        }
        let held = hub.compiled.lock().ok().and_then(|c| c.clone());
        let c = hub.cache.read().await;
        let (snapshot, sorted_keys) = match held {
            Some(h) if h.snapshot.version() == c.version => {
                (h.snapshot.clone(), h.sorted_keys.clone())
            }
            _ => {
                // Isolated: a stored flag that cannot be compiled answers ERROR alone.
                let snapshot = flagd_core::Snapshot::load(&c.document, c.version).map_err(|e| {
                    ApiError::Internal(anyhow::anyhow!("stored flag set unreadable: {e}"))
                })?;
                let mut keys: Vec<Box<str>> = snapshot.keys().map(Box::from).collect();
                keys.sort_unstable();
                (Arc::new(snapshot), keys.into())
            }
        };
        let compiled = Arc::new(Compiled {
            snapshot,
            sorted_keys,
            checked: std::time::Instant::now(),
        });
        if let Ok(mut slot) = hub.compiled.lock() {
            *slot = Some(compiled.clone());
        }
        Ok(compiled)
    }
}
