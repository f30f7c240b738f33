//! Outgoing notifications: each environment's channels (Slack, Teams, Feishu, DingTalk,
//! WeCom, a Standard Webhooks endpoint) are told of the changes they asked for, and,
//! in a follow-up, how many SDK instances applied them.
//!
//! Nothing here is on the commit path. A channel remembers the last version it was
//! considered for (`notified_version`); [`Notifier::run`] turns the versions after it
//! into messages in the outbox, in the transaction that moves it, so that a version
//! committed while no flagd ran is announced at the next start and none twice (with
//! several replicas, the conditional move lets one win). Messages are sent from the
//! outbox by whichever replica claims them (a lease), retried with exponential backoff
//! (`Retry-After` honoured), one channel's in order and paced to the vendor's rate
//! limit; a burst of versions found at once is one message.

mod guard;
pub mod message;
mod send;
pub mod vendors;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::broadcast;

use crate::hub::Hub;
use crate::store::{
    self, AttemptOutcome, ChannelTarget, Committed, NewMessage, OutboxMessage, Store, StoreResult,
};
pub use guard::forbidden;
pub use message::{DEFAULT_EVENTS, EVENTS, Message};
pub use vendors::KINDS;

/// How notifications are sent.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where flagd is reached from outside (`https://flags.example.com`): messages link
    /// to the admin UI's diff there; without it they carry the API's path.
    pub public_url: Option<String>,
    /// Send to loopback, private and link-local addresses too (tests, closed networks).
    pub allow_private_addresses: bool,
    /// How long one request to a receiver may take.
    pub request_timeout: Duration,
    /// The first retry's delay; each later one doubles it, up to [`MAX_BACKOFF`].
    pub retry_base: Duration,
    /// Attempts at one message before it is given up.
    pub max_attempts: u32,
    /// How often the outbox and the channels are looked at when nothing wakes them.
    pub poll_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            public_url: None,
            allow_private_addresses: false,
            request_timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(1),
            // About an hour of retries with the default base.
            max_attempts: 15,
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// The longest wait between two attempts, `Retry-After` included.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// A channel's follow-up timeout when none is given.
pub const DEFAULT_CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Versions turned into messages at most per look at a channel (one message).
const VERSIONS_PER_SCAN: u64 = 1_000;

/// Beyond one report interval, how long another replica's report may take to land.
const SETTLE_MS: i64 = 250;

/// The most of a receiver's answer kept in the history.
const ANSWER_BYTES: usize = 2048;

/// What this replica remembers between two looks: nothing that must survive it.
#[derive(Debug, Default)]
struct Local {
    /// Channels with a request in flight from here: one at a time per channel.
    in_flight: HashSet<String>,
    /// When each channel was last sent to, and last scanned, for pacing.
    last_sent: HashMap<String, Instant>,
    last_scan: HashMap<String, Instant>,
}

/// Sends the notifications of every environment (see the module's documentation).
#[derive(Debug)]
pub struct Notifier {
    store: Arc<Store>,
    hub: Arc<Hub>,
    client: reqwest::Client,
    options: Options,
    wake: tokio::sync::Notify,
    local: Mutex<Local>,
}

/// What one look at the store found.
enum Look {
    /// No channel and nothing in the outbox: nothing to do.
    Idle,
    /// Channels or messages, each looked at.
    Busy,
}

fn ms_of_rfc3339(t: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(t).ok()?;
    i64::try_from(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()
}

fn to_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Notifier {
    /// A notifier for the channels in `store`, watching `hub`'s fleet for follow-ups.
    pub fn new(store: Arc<Store>, hub: Arc<Hub>, options: Options) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(guard::Guard {
                allow_private: options.allow_private_addresses,
            }))
            // A redirect could lead anywhere, a private address included; a proxy
            // would resolve the name itself, past the guard.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(options.request_timeout)
            .user_agent(concat!("flagd/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            store,
            hub,
            client,
            options,
            wake: tokio::sync::Notify::new(),
            local: Mutex::new(Local::default()),
        })
    }

    /// The options it sends with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Until the hub closes: turns new versions into messages, watches the fleet for
    /// follow-ups, sends what is due. `changes` (the bus) wakes it at once after a
    /// commit here; changes through other replicas are found within the poll interval.
    pub async fn run(self: Arc<Self>, mut changes: broadcast::Receiver<Arc<Committed>>) {
        let mut closing = self.hub.closing();
        let mut failing = false;
        loop {
            let result = self.look().await;
            // With no channel and nothing in the outbox, a commit has no one to tell:
            // the commits that follow wait for the poll (or a new channel's wake-up)
            // instead of costing three reads each.
            let idle = matches!(result, Ok(Look::Idle));
            match result {
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "notifications: cannot read or write the outbox; retrying");
                }
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("notifications: the outbox is reachable again");
                }
                _ => {}
            }
            // One timer for the whole wait: commits arriving while idle do not put the
            // poll off.
            let poll = tokio::time::sleep(self.options.poll_interval);
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    () = &mut poll => break,
                    () = self.wake.notified() => break,
                    r = changes.recv() => {
                        if matches!(r, Err(broadcast::error::RecvError::Closed)) {
                            // No more commits from here; keep polling the store.
                            changes = broadcast::channel(1).1;
                        }
                        if !idle {
                            break;
                        }
                    }
                    _ = closing.changed() => return,
                }
            }
        }
    }

    /// Looks at once: a channel was made, whose first change should not wait for the
    /// poll.
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    async fn look(self: &Arc<Self>) -> StoreResult<Look> {
        if self.store.notifications_idle().await? {
            return Ok(Look::Idle);
        }
        self.scan().await?;
        self.watch().await?;
        self.send_due().await?;
        Ok(Look::Busy)
    }

    fn paced(
        &self,
        which: fn(&mut Local) -> &mut HashMap<String, Instant>,
        t: &str,
        kind: &str,
    ) -> bool {
        let Ok(mut l) = self.local.lock() else {
            return true;
        };
        let map = which(&mut l);
        match map.get(t) {
            Some(at) if at.elapsed() < vendors::min_interval(kind) => false,
            _ => {
                map.insert(t.to_owned(), Instant::now());
                true
            }
        }
    }

    /// Turns the versions each channel has not been considered for into (at most) one
    /// message and its follow-up.
    async fn scan(&self) -> StoreResult<()> {
        for (t, head) in self.store.channels_behind().await? {
            // Within the vendor's interval of the last look, the versions wait and are
            // announced together at the next.
            if !self.paced(|l| &mut l.last_scan, &t.id, &t.kind) {
                continue;
            }
            let upto = head.min(t.notified_version + VERSIONS_PER_SCAN);
            let versions = self
                .store
                .versions_between(&t.environment, t.notified_version, upto)
                .await?;
            let wanted: Vec<_> = versions
                .into_iter()
                .filter(|(v, _)| {
                    let e = message::event_of(&v.kind);
                    t.events.iter().any(|w| w == e)
                })
                .collect();
            let mut messages = Vec::new();
            if let Some(m) =
                message::for_versions(&t.environment, &wanted, self.options.public_url.as_deref())
            {
                let last = wanted.last().map(|(v, _)| v);
                let watch = message::Watch {
                    environment: t.environment.clone(),
                    version: m.to_version.unwrap_or(upto),
                    committed_at: last
                        .and_then(|v| ms_of_rfc3339(&v.created_at))
                        .unwrap_or_else(store::now_ms),
                    since: store::now_ms(),
                    link: m.link.clone(),
                };
                messages.push(NewMessage {
                    id: new_id()?,
                    event: m.event.clone(),
                    payload: json_of(&m)?,
                    watch: None,
                });
                messages.push(NewMessage {
                    id: new_id()?,
                    event: "applied".into(),
                    payload: json_of(&watch)?,
                    watch: Some((
                        watch.version,
                        store::now_ms().saturating_add(to_ms(t.converge_timeout)),
                    )),
                });
            }
            self.store
                .advance_channel(&t.id, t.notified_version, upto, &messages)
                .await?;
        }
        Ok(())
    }

    /// Follow-ups: once every instance of the fleet applied the version, "applied by
    /// N/N"; at the deadline, the laggards (for channels sent `not-converged`).
    async fn watch(&self) -> StoreResult<()> {
        for w in self.store.watching_messages().await? {
            let Ok(watch) = serde_json::from_value::<message::Watch>(w.payload.clone()) else {
                self.store.finish_watch(w.seq, None).await?;
                continue;
            };
            let fleet = match self.hub.cluster_fleet(&watch.environment).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::debug!(error = %e, "notifications: cannot read the fleet");
                    continue;
                }
            };
            let now = store::now_ms();
            if fleet.is_empty() {
                // No SDK instance: nothing was applied, nothing to say.
                self.store.finish_watch(w.seq, None).await?;
                continue;
            }
            let lagging: Vec<String> = fleet
                .iter()
                .filter(|i| i.applied_version.is_none_or(|v| v < watch.version))
                .map(|i| {
                    // An OpenFeature flagd provider (gRPC) is never known to have
                    // applied anything: say what it was sent.
                    let on = match (i.acknowledges, i.sent_version) {
                        (false, Some(v)) => {
                            format!("a gRPC provider: sent v{v}, cannot acknowledge")
                        }
                        (false, None) => "a gRPC provider: sent nothing yet".to_owned(),
                        _ => i
                            .applied_version
                            .map_or_else(|| "nothing applied".to_owned(), |v| format!("on v{v}")),
                    };
                    if i.state == "unreachable" {
                        format!("{} (unreachable, {on})", i.instance)
                    } else {
                        format!("{} ({on})", i.instance)
                    }
                })
                .collect();
            // With replicas on PostgreSQL, another replica's SDK instances are known
            // here from its report, written every REPORT_EVERY: "N/N" is said only
            // once every replica has reported since the commit, so that an instance
            // connected to another replica is never left out of the count.
            let settled = !self.hub.clustered()
                || now >= watch.committed_at + to_ms(crate::hub::REPORT_EVERY) + SETTLE_MS;
            if lagging.is_empty() && !settled {
                continue;
            }
            if lagging.is_empty() {
                // Measured to the last acknowledgement, not to when it was seen here.
                let last_ack = fleet
                    .iter()
                    .filter_map(|i| i.last_ack.as_deref().and_then(ms_of_rfc3339))
                    .max()
                    .unwrap_or(now);
                let seconds = (last_ack - watch.committed_at).max(0) as f64 / 1000.0;
                let m = message::applied(&watch, fleet.len(), seconds);
                self.store
                    .finish_watch(w.seq, Some(("applied", &json_of(&m)?)))
                    .await?;
                self.wake.notify_one();
            } else if now >= w.next_attempt_at {
                let wants = self
                    .store
                    .channel_target(&w.channel_id)
                    .await?
                    .is_some_and(|t| t.events.iter().any(|e| e == "not-converged"));
                if wants {
                    let after = Duration::from_millis(
                        u64::try_from(w.next_attempt_at - watch.since).unwrap_or(0),
                    );
                    let m = message::not_converged(&watch, after, &lagging, fleet.len());
                    self.store
                        .finish_watch(w.seq, Some(("not-converged", &json_of(&m)?)))
                        .await?;
                    self.wake.notify_one();
                } else {
                    self.store.finish_watch(w.seq, None).await?;
                }
            }
        }
        Ok(())
    }

    /// Announces what no version says, as `event`: an automatic action refused (the
    /// Alertmanager receiver, event `refused`), a release plan held, rolled back or
    /// paused by a step it cannot apply (event `plan`). A message to every channel of
    /// `env` sent `event`, durable and delivered like the others. `title` is one line,
    /// `text` why, `link` where to see more. Returns how many channels it was queued for.
    pub async fn announce(
        &self,
        event: &str,
        env: &str,
        title: &str,
        text: &str,
        link: Option<&str>,
    ) -> StoreResult<usize> {
        let msg = message::plain(event, env, title, text, link);
        let n = self
            .store
            .enqueue(env, event, &json_of(&msg)?, new_id)
            .await?;
        if n > 0 {
            self.wake.notify_one();
        }
        Ok(n)
    }
}

fn new_id() -> StoreResult<String> {
    crate::auth::new_id().map_err(store::StoreError::Internal)
}

fn json_of<T: serde::Serialize>(v: &T) -> StoreResult<Value> {
    serde_json::to_value(v).map_err(|e| store::StoreError::Internal(e.into()))
}
