//! The outbox: versions turned into messages, claimed with a lease, sent, recorded.

use super::*;

impl Store {
    /// No channel exists and the outbox holds nothing to send or watch: one read, so
    /// that an idle notifier costs a commit nothing more.
    pub async fn notifications_idle(&self) -> StoreResult<bool> {
        let mut conn = self.read().await?;
        let row = sqlx::query(
            "SELECT CAST(CASE WHEN EXISTS (SELECT 1 FROM notify_channels WHERE deleted_at IS NULL) \
             OR EXISTS (SELECT 1 FROM notify_outbox WHERE status IN ('pending', 'watching')) \
             THEN 0 ELSE 1 END AS BIGINT)",
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(row.try_get::<i64, _>(0)? == 1)
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

    /// Claims a pending message, as [`Store::next_messages`] read it, until
    /// `lease_until` (ms): `false` when another replica holds it, it is no longer
    /// pending, or it was attempted since it was read. The attempt count matters: a
    /// replica whose read predates another's failed attempt would otherwise send it at
    /// once, past its backoff, and then fail to record the attempt under the number
    /// already taken, leaving it leased and pending, to be sent again (twice, if the
    /// receiver took it).
    pub async fn claim_message(&self, m: &OutboxMessage, lease_until: i64) -> StoreResult<bool> {
        let mut conn = self.acquire().await?;
        let n = sqlx::query("UPDATE notify_outbox SET lease_until = $1 WHERE seq = $2 AND status = 'pending' AND attempts = $3 AND (lease_until IS NULL OR lease_until < $4)")
            .bind(lease_until)
            .bind(m.seq)
            .bind(i64::from(m.attempts))
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
