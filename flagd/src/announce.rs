//! Replicas on one PostgreSQL ring each other's doorbell through Redis: after each
//! commit, the committing replica publishes `{store, replica, environment, version}`;
//! every replica subscribed reads what it is missing from the store, which stays the
//! truth, and pushes it to its own SDKs within milliseconds.
//!
//! Redis is never in the way of a write or a rollback. The bus hands each commit to the
//! announcer in line, before this replica's own fan-out, as a bounded in-process queue
//! (nothing waits on the network); a task publishes from it, and a commit is
//! acknowledged without waiting for that. Pub/sub loses
//! what is published while a replica is not subscribed, so on every (re)subscription a
//! replica compares its heads with the store, and the store is compared every
//! `--follow-interval` regardless ([`crate::hub::Hub::follow_store`]): with Redis down,
//! changes still arrive within that interval.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::hub::Hub;
use crate::store::Committed;

/// How long a Redis operation may take before Redis is taken for unreachable.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the subscription is checked to be alive (a Redis that stopped answering
/// closes nothing by itself).
const PING_EVERY: Duration = Duration::from_secs(2);

/// The longest wait between attempts to reach Redis again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One announcement.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Announcement {
    /// The store's identity: a Redis shared by several deployments mixes nothing.
    store: String,
    /// Who committed it: a replica ignores its own.
    replica: String,
    environment: String,
    version: u64,
    /// For a revert, the version it restored (for whoever reads the channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restores: Option<u64>,
}

/// The channel of a store's announcements.
pub fn channel(store_identity: &str) -> String {
    format!("flagd:changes:{store_identity}")
}

/// Whether the Redis at `url` answers a ping (`flagd check-config`).
pub async fn check(url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    tokio::time::timeout(REDIS_TIMEOUT * 2, ping)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {:?}", REDIS_TIMEOUT * 2))??;
    Ok(())
}

/// Publishes and follows announcements through Redis until the hub closes.
#[derive(Debug)]
pub struct Announcer {
    client: redis::Client,
    channel: String,
    store: String,
    replica: String,
    /// Announcements waiting for [`Announcer::publish`]: filled by the bus in line, so
    /// that they leave before this replica's own fan-out (a large revert's reload) is
    /// done; bounded, never blocking a writer.
    queue: mpsc::Sender<String>,
    queued: std::sync::Mutex<Option<mpsc::Receiver<String>>>,
}

/// Announcements queued before the oldest is dropped (the other replicas then find the
/// change in the store).
const QUEUE: usize = 4096;

impl crate::bus::Subscriber for Announcer {
    fn committed<'a>(
        &'a self,
        committed: &'a Committed,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        let text = serde_json::to_string(&Announcement {
            store: self.store.clone(),
            replica: self.replica.clone(),
            environment: committed.environment.clone(),
            version: committed.version,
            restores: committed.restores,
        })
        .unwrap_or_default();
        if committed.changed && self.queue.try_send(text).is_err() {
            tracing::warn!(
                env = committed.environment,
                version = committed.version,
                "announcements fell behind the changes; the other replicas find this one in the store"
            );
        }
        Box::pin(std::future::ready(()))
    }
}

impl Announcer {
    /// An announcer through the Redis at `url` (`redis://host:port/db`), for a store
    /// of this identity; refused only when the URL cannot be read (Redis itself may be
    /// down: it is reached in the background).
    pub fn new(url: &str, store_identity: &str, replica: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("--redis-url: {e}"))?;
        let (queue, queued) = mpsc::channel(QUEUE);
        Ok(Self {
            client,
            channel: channel(store_identity),
            store: store_identity.to_owned(),
            replica: replica.to_owned(),
            queue,
            queued: std::sync::Mutex::new(Some(queued)),
        })
    }

    /// Publishes each change committed through this replica (subscribe the announcer
    /// to the bus, in line and before the hub) until the announcer is dropped. A change
    /// published while Redis is down is lost to Redis, not to the other replicas: they
    /// find it in the store.
    pub async fn publish(self: Arc<Self>, mut closing: tokio::sync::watch::Receiver<bool>) {
        let Some(mut queued) = self.queued.lock().ok().and_then(|mut q| q.take()) else {
            return;
        };
        let mut conn: Option<redis::aio::ConnectionManager> = None;
        let mut failing = false;
        loop {
            let text = tokio::select! {
                t = queued.recv() => match t {
                    Some(t) => t,
                    None => return,
                },
                _ = closing.changed() => return,
            };
            let sent = self.publish_one(&mut conn, text).await;
            match sent {
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot announce changes on Redis; the other replicas find them in the store within --follow-interval");
                }
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("announcing changes on Redis again");
                }
                _ => {}
            }
        }
    }

    async fn publish_one(
        &self,
        conn: &mut Option<redis::aio::ConnectionManager>,
        text: String,
    ) -> anyhow::Result<()> {
        if conn.is_none() {
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(REDIS_TIMEOUT))
                .set_response_timeout(Some(REDIS_TIMEOUT))
                .set_number_of_retries(1);
            let made = tokio::time::timeout(
                REDIS_TIMEOUT * 2,
                redis::aio::ConnectionManager::new_with_config(self.client.clone(), config),
            )
            .await
            .map_err(|_| anyhow::anyhow!("Redis did not answer within {REDIS_TIMEOUT:?}"))??;
            *conn = Some(made);
        }
        let Some(m) = conn.as_mut() else {
            return Ok(());
        };
        let published = tokio::time::timeout(
            REDIS_TIMEOUT,
            redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(&text)
                .query_async::<i64>(m),
        )
        .await;
        match published {
            Ok(Ok(_)) => Ok(()),
            // The connection manager reconnects after an error (Redis restarted): the
            // announcement is tried once more on the new connection rather than lost.
            Ok(Err(_)) => {
                let again = tokio::time::timeout(
                    REDIS_TIMEOUT,
                    redis::cmd("PUBLISH")
                        .arg(&self.channel)
                        .arg(text)
                        .query_async::<i64>(m),
                )
                .await;
                match again {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.into()),
                    Err(_) => {
                        *conn = None;
                        Err(anyhow::anyhow!(
                            "Redis did not answer within {REDIS_TIMEOUT:?}"
                        ))
                    }
                }
            }
            Err(_) => {
                // Made again next time rather than trusted.
                *conn = None;
                Err(anyhow::anyhow!(
                    "Redis did not answer within {REDIS_TIMEOUT:?}"
                ))
            }
        }
    }

    /// [`Announcer::publish`] on a thread of its own, until `closing` changes: a replica
    /// fanning a change out to thousands of its own streams keeps its runtime's workers
    /// busy, and the announcement would wait behind them.
    pub fn publish_on_own_thread(
        self: Arc<Self>,
        closing: tokio::sync::watch::Receiver<bool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("flagd-announce".into())
            .spawn(move || rt.block_on(self.publish(closing)))
    }

    /// Follows the other replicas' announcements until the hub closes: subscribes (again
    /// after every loss, with jittered backoff), catches up from the store on every
    /// subscription, and reads each announced change from the store.
    pub async fn follow(self: Arc<Self>, hub: Arc<Hub>) {
        let mut closing = hub.closing();
        let mut backoff = Duration::from_millis(100);
        let mut told = false;
        loop {
            let (subscribed, error) = tokio::select! {
                o = self.follow_once(&hub) => o,
                _ = closing.changed() => return,
            };
            if subscribed {
                // A lost subscription was logged as such: the attempts after it are not.
                told = true;
                backoff = Duration::from_millis(100);
            } else if !told {
                told = true;
                tracing::warn!(%error, "cannot subscribe to Redis: changes made through other replicas arrive within --follow-interval until it can");
            }
            // Jittered, so that replicas that lost Redis together do not return at once.
            let jitter = u64::from(getrandom::u32().unwrap_or(0))
                % (u64::try_from(backoff.as_millis()).unwrap_or(1) / 2 + 1);
            tokio::select! {
                _ = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
                _ = closing.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One subscription, until it is lost.
    /// Whether it subscribed, and why it ended.
    async fn follow_once(&self, hub: &Hub) -> (bool, anyhow::Error) {
        match self.subscribe().await {
            Ok((sink, messages)) => (true, self.listen(hub, sink, messages).await),
            Err(e) => (false, e),
        }
    }

    async fn subscribe(
        &self,
    ) -> anyhow::Result<(redis::aio::PubSubSink, redis::aio::PubSubStream)> {
        let pubsub = tokio::time::timeout(REDIS_TIMEOUT * 2, self.client.get_async_pubsub())
            .await
            .map_err(|_| {
                anyhow::anyhow!("Redis did not answer within {:?}", REDIS_TIMEOUT * 2)
            })??;
        let (mut sink, messages) = pubsub.split();
        tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(&self.channel))
            .await
            .map_err(|_| anyhow::anyhow!("Redis did not confirm the subscription"))??;
        Ok((sink, messages))
    }

    /// Follows announcements on a subscription until it is lost.
    async fn listen(
        &self,
        hub: &Hub,
        mut sink: redis::aio::PubSubSink,
        mut messages: redis::aio::PubSubStream,
    ) -> anyhow::Error {
        tracing::info!(
            channel = self.channel,
            "subscribed to the other replicas' announcements on Redis"
        );
        hub.metrics.redis_subscribed.set(1);
        // Whatever was announced while this replica was not listening is in the store.
        hub.follow_all(true).await;
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        let lost = loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else { break anyhow::anyhow!("Redis closed the connection") };
                    let Ok(a) = serde_json::from_slice::<Announcement>(msg.get_payload_bytes()) else {
                        tracing::warn!(channel = self.channel, "an announcement on Redis cannot be read; ignored");
                        continue;
                    };
                    if a.store == self.store && a.replica != self.replica {
                        hub.follow_announced(&a.environment, a.version).await;
                    }
                }
                _ = ping.tick() => {
                    match tokio::time::timeout(REDIS_TIMEOUT, sink.ping::<String>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => break e.into(),
                        Err(_) => break anyhow::anyhow!("Redis did not answer a ping within {REDIS_TIMEOUT:?}"),
                    }
                }
            }
        };
        hub.metrics.redis_subscribed.set(0);
        tracing::warn!(error = %lost, "lost the subscription to Redis: following the store every --follow-interval until it is back");
        lost
    }
}
