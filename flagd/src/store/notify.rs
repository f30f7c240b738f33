//! Notification channels and their outbox: where an environment's changes are
//! announced, the messages to send (durable: they survive a restart), and every
//! delivery attempt. What a message says and how it is sent is `crate::notify`'s.

use super::*;

/// A channel's record as the API shows it: never its URL's secret part or its signing
/// secret.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelInfo {
    /// Identifier.
    pub id: String,
    /// The environment whose changes it announces.
    pub environment: String,
    /// Its name.
    pub name: String,
    /// `slack`, `teams`, `feishu`, `dingtalk`, `wecom` or `webhook`.
    pub kind: String,
    /// The URL's scheme and host and the last characters of the rest (the rest is a
    /// secret for most vendors).
    pub target: String,
    /// Whether it has a signing secret.
    pub has_secret: bool,
    /// The events it is sent.
    pub events: Vec<String>,
    /// How long a version's follow-up waits for the fleet to apply it.
    pub converge_timeout: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// Who created it.
    pub created_by: String,
    /// The newest message's status (`pending`, `delivered`, `failed`), if any.
    pub last_delivery: Option<LastDelivery>,
}

/// The newest message of a channel, for its list entry.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastDelivery {
    /// `pending`, `watching`, `delivered` or `failed`.
    pub status: String,
    /// Its event.
    pub event: String,
    /// When it was made (RFC 3339).
    pub at: String,
    /// The receiver's last HTTP status, if it answered.
    pub http_status: Option<u16>,
}

/// What sending to a channel takes: its kind, URL and secret (never leaves flagd).
#[derive(Clone)]
pub struct ChannelTarget {
    /// Identifier.
    pub id: String,
    /// The environment.
    pub environment: String,
    /// The vendor.
    pub kind: String,
    /// The full URL.
    pub url: String,
    /// The signing secret.
    pub secret: Option<String>,
    /// The events it is sent.
    pub events: Vec<String>,
    /// Follow-up timeout.
    pub converge_timeout: std::time::Duration,
    /// The last version considered for messages.
    pub notified_version: u64,
}

impl std::fmt::Debug for ChannelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelTarget")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A new channel, or the parts of one that change (`PATCH`): `None` keeps a part.
#[derive(Clone, Default)]
pub struct ChannelFields {
    /// Its name.
    pub name: Option<String>,
    /// The vendor (creation only).
    pub kind: Option<String>,
    /// The URL.
    pub url: Option<String>,
    /// The signing secret (`Some(None)` removes it).
    pub secret: Option<Option<String>>,
    /// The events.
    pub events: Option<Vec<String>>,
    /// The follow-up timeout.
    pub converge_timeout: Option<std::time::Duration>,
}

impl std::fmt::Debug for ChannelFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelFields")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// One message of the outbox.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxMessage {
    /// Its order among all messages.
    #[serde(skip)]
    pub seq: i64,
    /// Identifier (a Standard Webhooks `webhook-id`: the same for every attempt).
    pub id: String,
    /// The channel.
    pub channel_id: String,
    /// What it announces (`kill-switch`, `applied`, `not-converged`, `refused`, …).
    pub event: String,
    /// What it says (see `crate::notify::Message`).
    pub payload: Value,
    /// `pending`, `watching`, `delivered` or `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it is due (ms): the next attempt, or a follow-up's deadline.
    #[serde(skip)]
    pub next_attempt_at: i64,
    /// A follow-up: the version the fleet is watched for.
    #[serde(skip)]
    pub watch_version: Option<u64>,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// When it was delivered or given up (RFC 3339).
    pub finished_at: Option<String>,
    /// The receiver's last HTTP status.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Every attempt, oldest first (filled by [`Store::deliveries`] only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attempt_log: Vec<Attempt>,
}

/// One delivery attempt.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1, 2, …
    pub attempt: u32,
    /// When (RFC 3339).
    pub at: String,
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// Whether the receiver took it.
    pub ok: bool,
    /// Its HTTP status, if it answered.
    pub status: Option<u16>,
    /// Its answer (at most 2 KiB), if it answered.
    pub body: Option<String>,
    /// Why it failed without an answer, or why the answer is a failure.
    pub error: Option<String>,
}

/// A message to put in the outbox.
#[derive(Clone, Debug)]
pub struct NewMessage {
    /// Identifier.
    pub id: String,
    /// The event.
    pub event: String,
    /// What it says.
    pub payload: Value,
    /// A follow-up watching the fleet for this version (status `watching`) until
    /// `due` (ms); otherwise a message to send now.
    pub watch: Option<(u64, i64)>,
}

/// How an attempt ended, for [`Store::record_attempt`].
#[derive(Clone, Debug)]
pub struct AttemptOutcome {
    /// Whether the receiver took it.
    pub ok: bool,
    /// Its HTTP status.
    pub status: Option<u16>,
    /// Its answer.
    pub body: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// When to try again (ms); `None`: delivered, or given up.
    pub retry_at: Option<i64>,
}

/// `https://hooks.slack.com/…abcd`: enough to recognise a URL, not to use it.
pub fn mask_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (host, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    // The host may carry credentials (`user:pass@host`).
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let tail: String = {
        let chars: Vec<char> = path.chars().collect();
        if chars.len() <= 8 {
            return format!("{scheme}://{host}/…");
        }
        chars[chars.len() - 4..].iter().collect()
    };
    format!("{scheme}://{host}/…{tail}")
}

fn channel_info(r: &AnyRow, last: Option<LastDelivery>) -> StoreResult<ChannelInfo> {
    let events: String = r.try_get("events")?;
    let url: String = r.try_get("url")?;
    let timeout = std::time::Duration::from_millis(to_u64(r.try_get("converge_timeout_ms")?));
    Ok(ChannelInfo {
        id: r.try_get("id")?,
        environment: r.try_get("env")?,
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        target: mask_url(&url),
        has_secret: r.try_get::<Option<String>, _>("secret")?.is_some(),
        events: serde_json::from_str(&events).map_err(|e| StoreError::Internal(e.into()))?,
        converge_timeout: humantime::format_duration(timeout).to_string(),
        created_at: rfc3339(r.try_get("created_at")?),
        created_by: r.try_get("created_by")?,
        last_delivery: last,
    })
}

fn channel_target(r: &AnyRow) -> StoreResult<ChannelTarget> {
    let events: String = r.try_get("events")?;
    Ok(ChannelTarget {
        id: r.try_get("id")?,
        environment: r.try_get("env")?,
        kind: r.try_get("kind")?,
        url: r.try_get("url")?,
        secret: r.try_get("secret")?,
        events: serde_json::from_str(&events).map_err(|e| StoreError::Internal(e.into()))?,
        converge_timeout: std::time::Duration::from_millis(to_u64(
            r.try_get("converge_timeout_ms")?,
        )),
        notified_version: to_u64(r.try_get("notified_version")?),
    })
}

fn outbox_of(r: &AnyRow) -> StoreResult<OutboxMessage> {
    let payload: String = r.try_get("payload")?;
    Ok(OutboxMessage {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        channel_id: r.try_get("channel_id")?,
        event: r.try_get("event")?,
        payload: serde_json::from_str(&payload).map_err(|e| StoreError::Internal(e.into()))?,
        status: r.try_get("status")?,
        attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        next_attempt_at: r.try_get("next_attempt_at")?,
        watch_version: r.try_get::<Option<i64>, _>("watch_version")?.map(to_u64),
        created_at: rfc3339(r.try_get("created_at")?),
        finished_at: r.try_get::<Option<i64>, _>("finished_at")?.map(rfc3339),
        last_status: r
            .try_get::<Option<i64>, _>("last_status")?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: r.try_get("last_error")?,
        attempt_log: Vec::new(),
    })
}

fn to_json<T: Serialize>(v: &T) -> StoreResult<Value> {
    serde_json::to_value(v).map_err(|e| StoreError::Internal(e.into()))
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

async fn insert_messages(tx: &mut Tx, channel: &str, messages: &[NewMessage]) -> StoreResult<()> {
    let now = now_ms();
    for m in messages {
        let (status, due, watch) = match m.watch {
            Some((version, due)) => ("watching", due, Some(to_i64(version))),
            None => ("pending", now, None),
        };
        sqlx::query("INSERT INTO notify_outbox (id, channel_id, event, payload, status, next_attempt_at, watch_version, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(&m.id)
            .bind(channel)
            .bind(&m.event)
            .bind(m.payload.to_string())
            .bind(status)
            .bind(due)
            .bind(watch)
            .bind(now)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

impl Store {
    /// Creates a channel, with its audit entry (never its secrets). It announces the
    /// versions made after the environment's head at this moment.
    pub async fn create_channel(
        &self,
        actor: &str,
        id: &str,
        env: &str,
        f: &ChannelFields,
    ) -> StoreResult<ChannelInfo> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let head = sqlx::query("SELECT head_version FROM environments WHERE key = $1")
            .bind(env)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no environment \"{env}\"")))?
            .try_get::<i64, _>(0)?;
        sqlx::query("INSERT INTO notify_channels (id, env, name, kind, url, secret, events, converge_timeout_ms, notified_version, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
            .bind(id)
            .bind(env)
            .bind(f.name.clone().unwrap_or_default())
            .bind(f.kind.clone().unwrap_or_default())
            .bind(f.url.clone().unwrap_or_default())
            .bind(f.secret.clone().flatten())
            .bind(to_json(&f.events.clone().unwrap_or_default())?.to_string())
            .bind(ms(f.converge_timeout.unwrap_or_default()))
            .bind(head)
            .bind(now_ms())
            .bind(actor)
            .execute(&mut *tx)
            .await?;
        let info = channel_info(
            &sqlx::query("SELECT * FROM notify_channels WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?,
            None,
        )?;
        audit(
            &mut tx,
            &AuditRecord {
                actor: actor.into(),
                action: "channel.create".into(),
                env: Some(env.into()),
                target: info.name.clone(),
                reason: None,
                before: None,
                after: Some(to_json(&info)?),
            },
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(info)
    }

    async fn last_delivery(&self, channel: &str) -> StoreResult<Option<LastDelivery>> {
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT status, event, created_at, last_status FROM notify_outbox WHERE channel_id = $1 ORDER BY seq DESC LIMIT 1")
            .bind(channel)
            .fetch_optional(&mut *conn)
            .await?;
        row.map(|r| {
            Ok(LastDelivery {
                status: r.try_get("status")?,
                event: r.try_get("event")?,
                at: rfc3339(r.try_get("created_at")?),
                http_status: r
                    .try_get::<Option<i64>, _>("last_status")?
                    .and_then(|s| u16::try_from(s).ok()),
            })
        })
        .transpose()
    }

    /// An environment's channels, oldest first.
    pub async fn channels(&self, env: &str) -> StoreResult<Vec<ChannelInfo>> {
        let rows = {
            let mut conn = self.read().await?;
            sqlx::query("SELECT * FROM notify_channels WHERE env = $1 AND deleted_at IS NULL ORDER BY created_at, id")
                .bind(env)
                .fetch_all(&mut *conn)
                .await?
        };
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.try_get("id")?;
            out.push(channel_info(r, self.last_delivery(&id).await?)?);
        }
        Ok(out)
    }

    /// One channel of an environment.
    pub async fn channel(&self, env: &str, id: &str) -> StoreResult<ChannelInfo> {
        let row = {
            let mut conn = self.read().await?;
            sqlx::query(
                "SELECT * FROM notify_channels WHERE id = $1 AND env = $2 AND deleted_at IS NULL",
            )
            .bind(id)
            .bind(env)
            .fetch_optional(&mut *conn)
            .await?
        };
        let Some(row) = row else {
            return Err(StoreError::NotFound(format!(
                "no channel with id \"{id}\" in \"{env}\""
            )));
        };
        channel_info(&row, self.last_delivery(id).await?)
    }

    /// What sending to a channel takes; `None` once it is deleted.
    pub async fn channel_target(&self, id: &str) -> StoreResult<Option<ChannelTarget>> {
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT * FROM notify_channels WHERE id = $1 AND deleted_at IS NULL")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(channel_target).transpose()
    }

    /// Changes a channel, with its audit entry (before and after, never secrets).
    pub async fn update_channel(
        &self,
        actor: &str,
        env: &str,
        id: &str,
        f: &ChannelFields,
    ) -> StoreResult<ChannelInfo> {
        let before = self.channel(env, id).await?;
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        if let Some(name) = &f.name {
            sqlx::query("UPDATE notify_channels SET name = $1 WHERE id = $2")
                .bind(name)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(url) = &f.url {
            sqlx::query("UPDATE notify_channels SET url = $1 WHERE id = $2")
                .bind(url)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(secret) = &f.secret {
            sqlx::query("UPDATE notify_channels SET secret = $1 WHERE id = $2")
                .bind(secret.clone())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(events) = &f.events {
            sqlx::query("UPDATE notify_channels SET events = $1 WHERE id = $2")
                .bind(to_json(events)?.to_string())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(t) = f.converge_timeout {
            sqlx::query("UPDATE notify_channels SET converge_timeout_ms = $1 WHERE id = $2")
                .bind(ms(t))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let after = channel_info(
            &sqlx::query("SELECT * FROM notify_channels WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?,
            before.last_delivery.clone(),
        )?;
        audit(
            &mut tx,
            &AuditRecord {
                actor: actor.into(),
                action: "channel.update".into(),
                env: Some(env.into()),
                target: after.name.clone(),
                reason: None,
                before: Some(to_json(&before)?),
                after: Some(to_json(&after)?),
            },
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Deletes a channel, with its audit entry: its pending messages are not sent. Its
    /// history stays readable for as long as the row does (it is only marked deleted).
    pub async fn delete_channel(&self, actor: &str, env: &str, id: &str) -> StoreResult<()> {
        let info = self.channel(env, id).await?;
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let now = now_ms();
        sqlx::query("UPDATE notify_channels SET deleted_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE notify_outbox SET status = 'failed', finished_at = $1, last_error = 'the channel was deleted' WHERE channel_id = $2 AND status IN ('pending', 'watching')")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            &AuditRecord {
                actor: actor.into(),
                action: "channel.delete".into(),
                env: Some(env.into()),
                target: info.name.clone(),
                reason: None,
                before: Some(to_json(&info)?),
                after: None,
            },
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Channels whose environment has versions they have not been considered for, with
    /// the environment's head.
    pub async fn channels_behind(&self) -> StoreResult<Vec<(ChannelTarget, u64)>> {
        let mut conn = self.read().await?;
        let rows = sqlx::query("SELECT c.*, e.head_version FROM notify_channels c JOIN environments e ON e.key = c.env WHERE c.deleted_at IS NULL AND c.notified_version < e.head_version")
            .fetch_all(&mut *conn)
            .await?;
        rows.iter()
            .map(|r| Ok((channel_target(r)?, to_u64(r.try_get("head_version")?))))
            .collect()
    }

    /// Versions `after < v <= upto` of an environment, oldest first, with the audit
    /// actions each one recorded (`flag.disable`, …).
    pub async fn versions_between(
        &self,
        env: &str,
        after: u64,
        upto: u64,
    ) -> StoreResult<Vec<(VersionInfo, Vec<String>)>> {
        let mut conn = self.read().await?;
        let rows = sqlx::query(
            "SELECT * FROM versions WHERE env = $1 AND version > $2 AND version <= $3 ORDER BY version",
        )
        .bind(env)
        .bind(to_i64(after))
        .bind(to_i64(upto))
        .fetch_all(&mut *conn)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let v = version_of(r)?;
            let actions = sqlx::query(
                "SELECT DISTINCT action FROM audit WHERE env = $1 AND version = $2 ORDER BY action",
            )
            .bind(env)
            .bind(to_i64(v.version))
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|a| a.try_get::<String, _>(0))
            .collect::<Result<Vec<_>, _>>()?;
            out.push((v, actions));
        }
        Ok(out)
    }

    /// Moves a channel's `notified_version` from `from` to `to` and puts `messages` in
    /// its outbox, in one transaction. `false` (and nothing written) when another
    /// replica moved it first: each version is turned into messages once.
    pub async fn advance_channel(
        &self,
        channel: &str,
        from: u64,
        to: u64,
        messages: &[NewMessage],
    ) -> StoreResult<bool> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let moved = sqlx::query("UPDATE notify_channels SET notified_version = $1 WHERE id = $2 AND notified_version = $3")
            .bind(to_i64(to))
            .bind(channel)
            .bind(to_i64(from))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_messages(&mut tx, channel, messages).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Puts a message in the outbox of every channel of `env` that is sent `event`;
    /// returns how many. `id` makes each message's id (one per channel).
    pub async fn enqueue(
        &self,
        env: &str,
        event: &str,
        payload: &Value,
        mut id: impl FnMut() -> StoreResult<String>,
    ) -> StoreResult<usize> {
        let targets = {
            let mut conn = self.read().await?;
            sqlx::query("SELECT * FROM notify_channels WHERE env = $1 AND deleted_at IS NULL")
                .bind(env)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(channel_target)
                .collect::<StoreResult<Vec<_>>>()?
        };
        let targets: Vec<_> = targets
            .into_iter()
            .filter(|t| t.events.iter().any(|e| e == event))
            .collect();
        if targets.is_empty() {
            return Ok(0);
        }
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        for t in &targets {
            let m = NewMessage {
                id: id()?,
                event: event.to_owned(),
                payload: payload.clone(),
                watch: None,
            };
            insert_messages(&mut tx, &t.id, std::slice::from_ref(&m)).await?;
        }
        tx.commit().await?;
        Ok(targets.len())
    }

    /// Puts one message in a channel's outbox, already claimed until `lease_until` by
    /// the caller, who sends it at once (a test message).
    pub async fn enqueue_claimed(
        &self,
        channel: &str,
        m: &NewMessage,
        lease_until: i64,
    ) -> StoreResult<OutboxMessage> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        insert_messages(&mut tx, channel, std::slice::from_ref(m)).await?;
        sqlx::query("UPDATE notify_outbox SET lease_until = $1 WHERE id = $2")
            .bind(lease_until)
            .bind(&m.id)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT * FROM notify_outbox WHERE id = $1")
            .bind(&m.id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        outbox_of(&row)
    }

    /// The oldest pending message of each channel (messages of one channel go out in
    /// order: a follow-up never overtakes its version's message), due or not, and
    /// not claimed by a replica now.
    pub async fn next_messages(&self) -> StoreResult<Vec<OutboxMessage>> {
        let mut conn = self.read().await?;
        let rows = sqlx::query("SELECT o.* FROM notify_outbox o WHERE o.status = 'pending' AND o.seq = (SELECT MIN(p.seq) FROM notify_outbox p WHERE p.channel_id = o.channel_id AND p.status = 'pending') AND (o.lease_until IS NULL OR o.lease_until < $1)")
            .bind(now_ms())
            .fetch_all(&mut *conn)
            .await?;
        rows.iter().map(outbox_of).collect()
    }

    /// Claims a pending message until `lease_until` (ms): `false` when another replica
    /// holds it, or it is no longer pending.
    pub async fn claim_message(&self, seq: i64, lease_until: i64) -> StoreResult<bool> {
        let mut conn = self.acquire().await?;
        let n = sqlx::query("UPDATE notify_outbox SET lease_until = $1 WHERE seq = $2 AND status = 'pending' AND (lease_until IS NULL OR lease_until < $3)")
            .bind(lease_until)
            .bind(seq)
            .bind(now_ms())
            .execute(&mut *conn)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Records an attempt at a message and what follows: delivered, retried at
    /// `retry_at`, or given up; the lease is released.
    pub async fn record_attempt(&self, m: &OutboxMessage, o: &AttemptOutcome) -> StoreResult<()> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let now = now_ms();
        let attempt = i64::from(m.attempts) + 1;
        sqlx::query("INSERT INTO notify_attempts (outbox_seq, attempt, at, ok, status, body, error) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(m.seq)
            .bind(attempt)
            .bind(now)
            .bind(i64::from(o.ok))
            .bind(o.status.map(i64::from))
            .bind(o.body.clone())
            .bind(o.error.clone())
            .execute(&mut *tx)
            .await?;
        let (status, finished) = match (o.ok, o.retry_at) {
            (true, _) => ("delivered", Some(now)),
            (false, Some(_)) => ("pending", None),
            (false, None) => ("failed", Some(now)),
        };
        sqlx::query("UPDATE notify_outbox SET status = $1, attempts = $2, next_attempt_at = $3, lease_until = NULL, finished_at = $4, last_status = $5, last_error = $6 WHERE seq = $7")
            .bind(status)
            .bind(attempt)
            .bind(o.retry_at.unwrap_or(now))
            .bind(finished)
            .bind(o.status.map(i64::from))
            .bind(o.error.clone())
            .bind(m.seq)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Follow-ups watching the fleet.
    pub async fn watching_messages(&self) -> StoreResult<Vec<OutboxMessage>> {
        let mut conn = self.read().await?;
        let rows = sqlx::query("SELECT * FROM notify_outbox WHERE status = 'watching'")
            .fetch_all(&mut *conn)
            .await?;
        rows.iter().map(outbox_of).collect()
    }

    /// Turns a follow-up into a message to send (`Some`: its event and payload), or
    /// drops it (`None`: nothing to say). `false` when another replica did first.
    pub async fn finish_watch(&self, seq: i64, then: Option<(&str, &Value)>) -> StoreResult<bool> {
        let mut conn = self.acquire().await?;
        let n = match then {
            Some((event, payload)) => sqlx::query("UPDATE notify_outbox SET status = 'pending', event = $1, payload = $2, next_attempt_at = $3 WHERE seq = $4 AND status = 'watching'")
                .bind(event)
                .bind(payload.to_string())
                .bind(now_ms())
                .bind(seq)
                .execute(&mut *conn)
                .await?,
            None => sqlx::query("DELETE FROM notify_outbox WHERE seq = $1 AND status = 'watching'")
                .bind(seq)
                .execute(&mut *conn)
                .await?,
        }
        .rows_affected();
        Ok(n == 1)
    }

    /// A channel's messages, newest first, each with its attempts: `limit` of them
    /// made before the message `before` (its id), when given.
    pub async fn deliveries(
        &self,
        env: &str,
        channel: &str,
        before: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMessage>> {
        // Deleted channels' history stays readable.
        let known = {
            let mut conn = self.read().await?;
            sqlx::query("SELECT id FROM notify_channels WHERE id = $1 AND env = $2")
                .bind(channel)
                .bind(env)
                .fetch_optional(&mut *conn)
                .await?
        };
        if known.is_none() {
            return Err(StoreError::NotFound(format!(
                "no channel with id \"{channel}\" in \"{env}\""
            )));
        }
        let mut conn = self.read().await?;
        let before_seq = match before {
            Some(id) => sqlx::query("SELECT seq FROM notify_outbox WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
                .map(|r| r.try_get::<i64, _>(0))
                .transpose()?
                .ok_or_else(|| StoreError::invalid("before", format!("no delivery \"{id}\"")))?,
            None => i64::MAX,
        };
        let rows = sqlx::query("SELECT * FROM notify_outbox WHERE channel_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3")
            .bind(channel)
            .bind(before_seq)
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut m = outbox_of(r)?;
            let attempts =
                sqlx::query("SELECT * FROM notify_attempts WHERE outbox_seq = $1 ORDER BY attempt")
                    .bind(m.seq)
                    .fetch_all(&mut *conn)
                    .await?;
            for a in &attempts {
                let at: i64 = a.try_get("at")?;
                m.attempt_log.push(Attempt {
                    attempt: u32::try_from(a.try_get::<i64, _>("attempt")?).unwrap_or(0),
                    at: rfc3339(at),
                    at_ms: at,
                    ok: a.try_get::<i64, _>("ok")? != 0,
                    status: a
                        .try_get::<Option<i64>, _>("status")?
                        .and_then(|s| u16::try_from(s).ok()),
                    body: a.try_get("body")?,
                    error: a.try_get("error")?,
                });
            }
            out.push(m);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::mask_url;

    #[test]
    fn masks_all_but_the_host_and_a_tail() {
        assert_eq!(
            mask_url("https://hooks.slack.com/services/T000/B000/XXXXsecret1234"),
            "https://hooks.slack.com/…1234"
        );
        assert_eq!(
            mask_url("https://user:pw@example.com/hook"),
            "https://example.com/…"
        );
    }
}
