//! Sending: a due message claimed, attempted, and its outcome recorded; a test message
//! sent at once.

use super::*;

/// The result of one attempt, before it is recorded.
struct Tried {
    outcome: AttemptOutcome,
    /// The receiver will not take it however often it is sent.
    permanent: bool,
    retry_after: Option<Duration>,
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

impl Notifier {
    /// Claims and sends each channel's next message when it is due and the channel is
    /// neither busy nor within its vendor's interval.
    pub(super) async fn send_due(self: &Arc<Self>) -> StoreResult<()> {
        let now = store::now_ms();
        for m in self.store.next_messages().await? {
            if m.next_attempt_at > now {
                continue;
            }
            let busy = self
                .local
                .lock()
                .map_or(true, |l| l.in_flight.contains(&m.channel_id));
            if busy {
                continue;
            }
            let Some(t) = self.store.channel_target(&m.channel_id).await? else {
                continue;
            };
            if !self.paced(|l| &mut l.last_sent, &t.id, &t.kind) {
                continue;
            }
            let lease = now + to_ms(self.options.request_timeout) + 30_000;
            if !self.store.claim_message(&m, lease).await? {
                continue;
            }
            if let Ok(mut l) = self.local.lock() {
                l.in_flight.insert(t.id.clone());
            }
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.deliver(&t, &m, true).await {
                    tracing::warn!(channel = t.id, error = %e, "notifications: cannot record a delivery");
                }
                if let Ok(mut l) = me.local.lock() {
                    l.in_flight.remove(&t.id);
                }
                me.wake.notify_one();
            });
        }
        Ok(())
    }

    /// One attempt at a claimed message, recorded; with `retry`, a failure is tried
    /// again later unless the receiver can never take it.
    async fn deliver(
        &self,
        t: &ChannelTarget,
        m: &OutboxMessage,
        retry: bool,
    ) -> StoreResult<AttemptOutcome> {
        let tried = self.attempt(t, m).await;
        let mut outcome = tried.outcome;
        if !outcome.ok && retry && !tried.permanent && m.attempts + 1 < self.options.max_attempts {
            let backoff = self
                .options
                .retry_base
                .saturating_mul(2u32.saturating_pow(m.attempts.min(20)));
            let wait = tried.retry_after.unwrap_or(backoff).min(MAX_BACKOFF);
            outcome.retry_at = Some(store::now_ms().saturating_add(to_ms(wait)));
        }
        if let Ok(mut l) = self.local.lock() {
            l.last_sent.insert(t.id.clone(), Instant::now());
        }
        self.store.record_attempt(m, &outcome).await?;
        Ok(outcome)
    }

    async fn attempt(&self, t: &ChannelTarget, m: &OutboxMessage) -> Tried {
        let failed = |error: String, permanent: bool| Tried {
            outcome: AttemptOutcome {
                ok: false,
                status: None,
                body: None,
                error: Some(error),
                retry_at: None,
            },
            permanent,
            retry_after: None,
        };
        let msg: Message = match serde_json::from_value(m.payload.clone()) {
            Ok(msg) => msg,
            Err(e) => return failed(format!("the message cannot be read: {e}"), true),
        };
        let out = match vendors::render(
            &t.kind,
            &t.url,
            t.secret.as_deref(),
            &m.id,
            &msg,
            store::now_ms(),
        ) {
            Ok(o) => o,
            Err(e) => return failed(e, true),
        };
        let url = match reqwest::Url::parse(&out.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            Ok(u) => return failed(format!("{} URLs are not sent to", u.scheme()), true),
            Err(e) => return failed(format!("the URL is invalid: {e}"), true),
        };
        if let Some(ip) = guard::literal_ip(&url)
            && !self.options.allow_private_addresses
            && guard::forbidden(ip)
        {
            return failed(guard::refusal(&ip.to_string(), ip), true);
        }
        let mut req = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(out.body);
        for (k, v) in out.headers {
            req = req.header(k, v);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let text = error_chain(&e);
                // The guard's refusal will not change by retrying.
                let permanent = text.contains("--notify-allow-private-addresses");
                return failed(text, permanent);
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|h| h.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = read_answer(resp).await;
        let verdict = if status.is_success() {
            vendors::judge(&t.kind, &body)
        } else {
            Err(format!("the receiver answered {status}"))
        };
        let code = status.as_u16();
        let permanent = status.is_client_error() && !matches!(code, 408 | 425 | 429);
        Tried {
            outcome: AttemptOutcome {
                ok: verdict.is_ok(),
                status: Some(code),
                body: Some(body),
                error: verdict.err(),
                retry_at: None,
            },
            permanent,
            retry_after: if matches!(code, 429 | 503) {
                retry_after
            } else {
                None
            },
        }
    }

    /// Sends a test message to a channel now, records it in its history, and returns
    /// what the receiver answered (no retry).
    pub async fn test(&self, env: &str, channel: &str) -> StoreResult<(String, AttemptOutcome)> {
        self.store.channel(env, channel).await?;
        let Some(t) = self.store.channel_target(channel).await? else {
            return Err(store::StoreError::NotFound(format!(
                "no channel with id \"{channel}\" in \"{env}\""
            )));
        };
        let msg = message::plain(
            "test",
            env,
            "a test message from flagd",
            "This channel receives the notifications of this environment.",
            None,
        );
        let lease = store::now_ms() + to_ms(self.options.request_timeout) + 30_000;
        let m = self
            .store
            .enqueue_claimed(
                channel,
                &NewMessage {
                    id: new_id()?,
                    event: "test".into(),
                    payload: json_of(&msg)?,
                    watch: None,
                },
                lease,
            )
            .await?;
        let outcome = self.deliver(&t, &m, false).await?;
        Ok((m.id, outcome))
    }
}

/// At most [`ANSWER_BYTES`] of an answer, as text.
async fn read_answer(mut resp: reqwest::Response) -> String {
    let mut buf: Vec<u8> = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        buf.extend_from_slice(&chunk);
        if buf.len() >= ANSWER_BYTES {
            buf.truncate(ANSWER_BYTES);
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}
