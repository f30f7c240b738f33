//! The admin UI's live events: who changed what, environments made or removed.

use super::*;

/// Something open pages should know about.
#[derive(Clone, Debug)]
pub struct UiEvent {
    /// The environment it concerns; `None` for all.
    pub environment: Option<String>,
    /// The SSE event name (`change`, `environments`).
    pub name: &'static str,
    /// Its data.
    pub data: Value,
}

/// Open UI pages learn who changed what: the bus's changes, as `change` events, until
/// the bus closes. A page that missed changes (this listener lagged) is told to reload.
pub async fn forward_changes_to_ui(
    hub: Arc<Hub>,
    mut changes: broadcast::Receiver<Arc<Committed>>,
) {
    loop {
        match changes.recv().await {
            Ok(c) => {
                let flags = &c.changed_flags[..c.changed_flags.len().min(100)];
                hub.notify_ui(UiEvent {
                    environment: Some(c.environment.clone()),
                    name: "change",
                    data: serde_json::json!({"environment": c.environment, "version": c.version, "kind": c.kind,
                        "author": c.author, "reason": c.reason, "changedFlags": flags,
                        "at": store::rfc3339(c.at)}),
                });
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "UI events fell behind the changes; pages reload");
                hub.notify_ui(UiEvent {
                    environment: None,
                    name: "resync",
                    data: serde_json::json!({"missed": missed}),
                });
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

impl Hub {
    /// Tells open admin UI pages about something (a change, a new environment).
    pub fn notify_ui(&self, event: crate::hub::UiEvent) {
        let _ = self.ui.send(event);
    }

    /// The admin UI's events.
    pub fn ui_events(&self) -> broadcast::Receiver<crate::hub::UiEvent> {
        self.ui.subscribe()
    }
}
