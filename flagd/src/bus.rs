//! The one path out of every committed change. The store announces each commit here,
//! once, while it still holds the environment's write lock, so announcements of one
//! environment come in version order; no HTTP handler takes part.
//!
//! Two kinds of subscriber:
//! - **In line** ([`Bus::subscribe`]): awaited, in subscription order, before the write
//!   is acknowledged: the SDK fan-out and flagd's own heads (so that once a client has
//!   its 2xx, every stream has been handed the change and OFREP answers with it), and
//!   the change counters. They do process-local work only (a lock, a channel send); one
//!   that waited on the network would hold the environment's writers.
//! - **In the background** ([`Bus::listen`]): a channel of the last
//!   [`BACKGROUND_CAPACITY`] changes (their records, without the items' definitions),
//!   never blocking the writer: the UI's event stream
//!   now; fan-out to other replicas, notifications and automations are meant to plug in
//!   here. A listener that falls further behind loses the oldest and is told how many
//!   ([`tokio::sync::broadcast::error::RecvError::Lagged`]): it must then catch up from
//!   the store (the versions are there), never assume it saw everything.

use std::sync::{Arc, RwLock, Weak};

use tokio::sync::broadcast;

use crate::store::{CommitListener, Committed};

/// Changes a background listener may be behind before it loses the oldest.
pub const BACKGROUND_CAPACITY: usize = 4096;

/// A subscriber that hears of every commit before it is acknowledged.
pub trait Subscriber: Send + Sync + std::fmt::Debug {
    /// A change was committed and made a new version (the store announces nothing for
    /// a write that changed nothing).
    fn committed<'a>(
        &'a self,
        committed: &'a Committed,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// The in-process bus of committed changes.
#[derive(Debug)]
pub struct Bus {
    /// Held weakly: the store holds the bus, and a subscriber (the hub) holds the store;
    /// a strong reference back would keep all three, and SQLite's file lock, forever.
    inline: RwLock<Vec<Weak<dyn Subscriber>>>,
    background: broadcast::Sender<Arc<Committed>>,
}

impl Default for Bus {
    fn default() -> Self {
        Self {
            inline: RwLock::new(Vec::new()),
            background: broadcast::channel(BACKGROUND_CAPACITY).0,
        }
    }
}

impl Bus {
    /// A bus with no subscriber.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an in-line subscriber, after the ones already there, for as long as it
    /// lives elsewhere (the bus does not keep it alive).
    pub fn subscribe(&self, s: &Arc<dyn Subscriber>) {
        if let Ok(mut subs) = self.inline.write() {
            subs.retain(|w| w.strong_count() > 0);
            subs.push(Arc::downgrade(s));
        }
    }

    /// A background listener: every change committed from now on, in order.
    pub fn listen(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.background.subscribe()
    }

    /// Announces a commit: in-line subscribers in order, then the background channel.
    pub async fn announce(&self, committed: &Committed) {
        let subs: Vec<Arc<dyn Subscriber>> = match self.inline.read() {
            Ok(s) => s.iter().filter_map(Weak::upgrade).collect(),
            Err(_) => Vec::new(),
        };
        for s in subs {
            s.committed(committed).await;
        }
        if committed.changed && self.background.receiver_count() > 0 {
            // Background listeners get the record without the items' definitions (a
            // large import's would be copied for nobody): what changed is in the store.
            let _ = self.background.send(Arc::new(committed.summary()));
        }
    }
}

impl CommitListener for Bus {
    fn committed<'a>(
        &'a self,
        committed: &'a Committed,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(self.announce(committed))
    }
}

#[cfg(test)]
mod tests;
