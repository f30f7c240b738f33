//! Notification channels and their outbox: where an environment's changes are
//! announced, the messages to send (durable: they survive a restart), and every
//! delivery attempt. What a message says and how it is sent is `crate::notify`'s.
//! Here the channels; the outbox's queue and leases in `outbox`.

mod outbox;

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
