//! The application state every handler gets: the store, the hub and the metrics. A
//! leaf: it names the parts and imports nothing that imports it.

use std::sync::Arc;

use crate::store::Store;

/// Shared state of every handler: one reference-counted [`Parts`]. axum clones the state
/// at least twice per request (the route's handler, the `State` extractor); each clone
/// is then one shared count taken and dropped, not one per part, on cache lines both
/// cores write under load.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Parts>);

impl AppState {
    /// The state made of these parts.
    pub fn new(parts: Parts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct Parts {
    /// The store.
    pub store: Arc<Store>,
    /// Live push to SDKs.
    pub hub: Arc<crate::hub::Hub>,
    /// Outgoing notifications: [`crate::notify::Notifier::announce`] announces a refused
    /// automatic action, [`crate::notify::Notifier::test`] tests a channel.
    pub notifier: Arc<crate::notify::Notifier>,
    /// Release plans: whether their gates can be checked.
    pub planner: Arc<crate::plans::Planner>,
    /// The identity provider people sign in with, if one is configured.
    pub oidc: Option<Arc<crate::people::oidc::Oidc>>,
}
