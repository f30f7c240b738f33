//! flagctl's side of the REST API: requests, what their failures mean as exit codes,
//! and waiting for the fleet of SDK instances to apply a version.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use reqwest::{Method, StatusCode, Url, header};
use serde_json::Value;

use super::exit;

mod convergence;

pub use convergence::{Convergence, is_unacknowledging, is_unreachable};

/// Where flagd is and who is calling: flags, or the environment variables a pipeline
/// sets once.
#[derive(Debug, Args)]
pub struct Connection {
    /// flagd's base URL (a path prefix, as behind a proxy, is kept).
    #[arg(
        long,
        env = "FLAGD_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// An API token (`fd_…`). Prefer the environment variable: arguments are visible to
    /// other users of the machine.
    #[arg(long, env = "FLAGD_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// The environment the command acts on.
    #[arg(long = "env", short = 'e', env = "FLAGD_ENV", global = true)]
    pub(crate) environment: Option<String>,
    /// A PEM file of extra CA certificates, for flagd behind a private CA.
    #[arg(long, env = "FLAGD_CA_CERT", value_name = "PEM", global = true)]
    ca_cert: Option<PathBuf>,
    /// How long one request may take before flagd counts as unreachable.
    #[arg(
        long,
        env = "FLAGD_REQUEST_TIMEOUT",
        default_value = "30s",
        value_parser = humantime::parse_duration,
        global = true
    )]
    request_timeout: Duration,
}

/// Why a command failed, and so its exit code.
#[derive(Debug)]
pub enum Failure {
    /// The command line or the local configuration is wrong (exit 2).
    Usage(String),
    /// flagd answered with an error.
    Api {
        /// Its status.
        status: StatusCode,
        /// `error.code`.
        code: String,
        /// `error.message`.
        message: String,
        /// The whole body, for `--json`.
        body: Value,
    },
    /// flagd could not be reached, or did not answer in time (exit 5).
    Unreachable(String),
    /// The environment moved past the version the change was based on (exit 3).
    Conflict(String),
    /// Something asked for does not exist, found out without asking flagd for it
    /// directly (exit 4).
    NotFound(String),
    /// A change was committed but the fleet could not be seen to apply it (exit 6).
    NotApplied(String),
    /// A check failed, e.g. an invalid file (exit 1).
    Failed(String),
}

impl Failure {
    /// The documented exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => exit::USAGE,
            Self::Unreachable(_) => exit::UNREACHABLE,
            Self::Failed(_) => exit::FAILED,
            Self::Conflict(_) => exit::CONFLICT,
            Self::NotFound(_) => exit::NOT_FOUND,
            Self::NotApplied(_) => exit::NOT_APPLIED,
            Self::Api { status, .. } => match status.as_u16() {
                401 | 403 => exit::UNAUTHORIZED,
                404 => exit::NOT_FOUND,
                409 => exit::CONFLICT,
                s if s >= 500 => exit::UNREACHABLE,
                _ => exit::FAILED,
            },
        }
    }

    /// One line for standard error, and for an API error its details, each with its
    /// JSON path.
    pub fn describe(&self) -> String {
        match self {
            Self::Usage(m)
            | Self::Unreachable(m)
            | Self::Failed(m)
            | Self::Conflict(m)
            | Self::NotFound(m)
            | Self::NotApplied(m) => m.clone(),
            Self::Api {
                status,
                code,
                message,
                body,
            } => {
                let mut text = format!("flagd refused ({} {code}): {message}", status.as_u16());
                let details = body
                    .pointer("/error/details")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten();
                for d in details {
                    let path = d.get("path").and_then(Value::as_str).unwrap_or_default();
                    let msg = d.get("message").and_then(Value::as_str).unwrap_or_default();
                    let line = format!("{path}: {msg}");
                    // A single problem is often the message itself.
                    if !message.ends_with(&line) {
                        text.push_str(&format!("\n  {line}"));
                    }
                }
                if status.as_u16() == 401 {
                    text.push_str("\n  (set FLAGD_TOKEN or --token to an API token)");
                }
                text
            }
        }
    }
}

/// A flagd server, called with one token.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    environment: Option<String>,
}

/// A successful answer: its JSON body and the flag-set version in its `ETag`, if any.
#[derive(Debug)]
pub struct Answer {
    /// The body (`null` when empty).
    pub body: Value,
    /// `X-Flag-Set-Version`.
    pub version: Option<u64>,
}

impl Client {
    /// A client for the connection's URL, token and CA.
    pub fn new(c: &Connection) -> Result<Self, Failure> {
        let mut base = Url::parse(&c.url).map_err(|e| {
            Failure::Usage(format!("--url / FLAGD_URL {:?} is not a URL: {e}", c.url))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(Failure::Usage(format!(
                "--url / FLAGD_URL must be http:// or https://, got {:?}",
                c.url
            )));
        }
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5).min(c.request_timeout))
            .timeout(c.request_timeout)
            .user_agent(concat!("flagctl/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &c.ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                Failure::Usage(format!("--ca-cert {}: cannot read: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Failure::Usage(format!("--ca-cert {}: not PEM: {e}", path.display()))
            })?;
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .build()
            .map_err(|e| Failure::Usage(format!("cannot set up HTTP: {e}")))?;
        Ok(Self {
            http,
            base,
            token: c.token.clone().filter(|t| !t.trim().is_empty()),
            environment: c.environment.clone(),
        })
    }

    /// The environment given with `--env` / `FLAGD_ENV`.
    pub fn environment(&self) -> Result<&str, Failure> {
        self.environment
            .as_deref()
            .filter(|e| !e.is_empty())
            .ok_or_else(|| Failure::Usage("give the environment: --env ENV or FLAGD_ENV".into()))
    }

    /// `/api/v1/` followed by these segments, each percent-encoded (`/`, `%`, `?`,
    /// `#`, spaces and anything not ASCII included).
    fn url(&self, segments: &[&str]) -> Result<Url, Failure> {
        // An empty segment would name another route, and the URL standard removes `.`
        // and `..` (even as `%2E`): such a segment cannot be sent as itself.
        if let Some(bad) = segments.iter().find(|s| matches!(**s, "" | "." | "..")) {
            return Err(Failure::Usage(format!(
                "{bad:?} cannot be addressed in a URL (in {})",
                segments.join("/")
            )));
        }
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        Ok(url)
    }

    /// Calls the API. `query` pairs are added to the URL; `if_version` becomes
    /// `If-Match`, `if_flag_version` `If-Flag-Version`; `reason` becomes `X-Change-Reason` (RFC 8187 when not ASCII).
    ///
    /// A [`Request::repeatable`] request is sent up to three more times within a second
    /// when flagd was not reached (refused, reset) or a proxy in front of it answered
    /// 502, 503 or 504: a replica dying behind a load balancer must not fail a kill
    /// switch. With `If-Match` or `If-Flag-Version` only a refused connection is
    /// retried (nothing was sent): an attempt that was committed before its answer was
    /// lost would make the next one a 409.
    pub async fn call(&self, req: Request<'_>) -> Result<Answer, Failure> {
        let mut pause = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let (failure, again) = match self.send(&req).await {
                Ok(a) => return Ok(a),
                Err(e) => e,
            };
            let again = match again {
                Again::Never => false,
                Again::Always => true,
                Again::Unguarded => req.if_version.is_none() && req.if_flag_version.is_none(),
            };
            if !req.repeatable || !again || attempt == ATTEMPTS {
                return Err(failure);
            }
            // A responder sees why the command takes a moment longer.
            let _ = writeln!(
                std::io::stderr().lock(),
                "flagctl: {}; sending it again in {} ms",
                failure.describe(),
                pause.as_millis()
            );
            tokio::time::sleep(pause).await;
            pause *= 2;
            attempt += 1;
        }
    }

    /// One attempt of [`Client::call`]; a failure says whether another may be made.
    async fn send(&self, req: &Request<'_>) -> Result<Answer, (Failure, Again)> {
        let mut url = self.url(req.path).map_err(|f| (f, Again::Never))?;
        if !req.query.is_empty() {
            url.query_pairs_mut().extend_pairs(req.query);
        }
        let mut r = self.http.request(req.method.clone(), url.clone());
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(v) = req.if_version {
            r = r.header(header::IF_MATCH, format!("\"{v}\""));
        }
        if let Some(v) = req.if_flag_version {
            r = r.header("if-flag-version", v.to_string());
        }
        if let Some(reason) = req.reason_header {
            r = r.header("x-change-reason", header_reason(reason));
        }
        if let Some(body) = &req.body {
            r = r
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let resp = r
            .send()
            .await
            .map_err(|e| (unreachable(&url, &e), Again::after(&e)))?;
        let status = resp.status();
        let version = resp
            .headers()
            .get("x-flag-set-version")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| (unreachable(&url, &e), Again::after(&e)))?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if status.is_success() {
            return Ok(Answer { body, version });
        }
        let text = |p: &str| body.pointer(p).and_then(Value::as_str).map(str::to_owned);
        let failure = Failure::Api {
            status,
            code: text("/error/code").unwrap_or_else(|| status.as_str().to_owned()),
            message: text("/error/message").unwrap_or_else(|| {
                format!(
                    "{} from {url} (is --url flagd's address?)",
                    status.canonical_reason().unwrap_or("error")
                )
            }),
            body,
        };
        let again = match status.as_u16() {
            // What a proxy answers for a replica that died or is restarting (which may
            // have committed before it died), and flagd for a store fault (with
            // Retry-After): sent again only without a precondition, as a lost answer.
            502..=504 => Again::Unguarded,
            _ => Again::Never,
        };
        Err((failure, again))
    }

    /// Polls the fleet view until every SDK instance has applied `version` (the head
    /// when `None`) or a later one, or until `timeout`. An unreachable instance that has
    /// not applied it counts as not converged unless `allow_unreachable`. A provider
    /// that cannot acknowledge (OpenFeature's flagd providers, over gRPC) is waited for
    /// until flagd has sent it the version, and then counts as converged only with
    /// `allow_unacknowledged`: otherwise the wait ends at once, not converged.
    pub async fn wait_for_fleet(
        &self,
        env: &str,
        version: Option<u64>,
        timeout: Duration,
        allow_unreachable: bool,
        allow_unacknowledged: bool,
    ) -> Result<Convergence, Failure> {
        let started = Instant::now();
        let deadline = started + timeout;
        // Short first, for the common case of a fleet that applies within milliseconds;
        // then no more than four polls a second.
        let mut pause = Duration::from_millis(2);
        let mut version = version;
        loop {
            let polled = self
                .call(Request::get(&["environments", env, "fleet"]))
                .await;
            let now = Instant::now();
            match polled {
                Ok(a) => {
                    let head = a.body.get("version").and_then(Value::as_u64);
                    let target = match (version, head) {
                        (Some(v), Some(h)) if v > h => {
                            // No instance can ever apply it: say so now, not after the
                            // timeout.
                            return Err(Failure::NotFound(format!(
                                "{env} has no version {v}: its head is version {h}"
                            )));
                        }
                        (Some(v), _) => v,
                        (None, Some(h)) => *version.insert(h),
                        (None, None) => {
                            return Err(Failure::Failed(
                                "flagd's fleet view has no version".into(),
                            ));
                        }
                    };
                    let c = Convergence::of(&a.body, target, allow_unreachable, now - started)
                        .allowing_unacknowledged(allow_unacknowledged);
                    // Settled: what is left can never acknowledge; waiting longer
                    // changes nothing.
                    if c.converged() || c.settled() || now >= deadline {
                        return Ok(c);
                    }
                }
                // A replica restarting or a proxy hiccup must not fail a rollback that
                // has been made; keep polling until the deadline.
                Err(e) if e.exit_code() == exit::UNREACHABLE => {
                    if now >= deadline {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }
}

fn unreachable(url: &Url, e: &reqwest::Error) -> Failure {
    // reqwest's own text repeats the URL; its sources say what went wrong.
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    let why = if e.is_timeout() {
        "no answer in time (--request-timeout)".to_owned()
    } else if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    };
    Failure::Unreachable(format!("cannot reach flagd at {url}: {why}"))
}

/// How many times a [`Request::repeatable`] request is sent at most: after 100, 200 and
/// 400 ms, within a second of the first answer.
const ATTEMPTS: u32 = 4;

/// Whether a failed attempt may be made again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Again {
    /// flagd answered (or the time ran out): the answer stands.
    Never,
    /// No connection was made: nothing was sent.
    Always,
    /// Sent, but lost on the way or refused by a proxy: again only when the request
    /// holds no precondition a committed first attempt would fail.
    Unguarded,
}

impl Again {
    fn after(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            // --request-timeout is the responder's bound; repeating would multiply it.
            Self::Never
        } else if e.is_connect() {
            Self::Always
        } else {
            Self::Unguarded
        }
    }
}

/// RFC 8187 for a reason that is not plain ASCII, as flagd reads it.
fn header_reason(reason: &str) -> String {
    if reason.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return reason.to_owned();
    }
    let mut out = String::from("UTF-8''");
    for b in reason.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One API request.
#[derive(Debug)]
pub struct Request<'a> {
    method: Method,
    path: &'a [&'a str],
    query: &'a [(&'a str, String)],
    body: Option<String>,
    if_version: Option<u64>,
    if_flag_version: Option<u64>,
    reason_header: Option<&'a str>,
    repeatable: bool,
}

impl<'a> Request<'a> {
    /// `GET /api/v1/{path}`.
    pub fn get(path: &'a [&'a str]) -> Self {
        Self::new(Method::GET, path)
    }

    /// Any method.
    pub fn new(method: Method, path: &'a [&'a str]) -> Self {
        Self {
            method,
            path,
            query: &[],
            body: None,
            if_version: None,
            if_flag_version: None,
            reason_header: None,
            repeatable: false,
        }
    }

    /// With query parameters.
    pub fn query(mut self, q: &'a [(&'a str, String)]) -> Self {
        self.query = q;
        self
    }

    /// With a JSON body.
    pub fn json(mut self, body: &Value) -> Self {
        self.body = Some(body.to_string());
        self
    }

    /// With a body that is already JSON text.
    pub fn raw(mut self, body: String) -> Self {
        self.body = Some(body);
        self
    }

    /// Refused with 409 unless the head is still `v`.
    pub fn if_version(mut self, v: Option<u64>) -> Self {
        self.if_version = v;
        self
    }

    /// Refused with 409 unless the flag was last changed by version `v`.
    pub fn if_flag_version(mut self, v: Option<u64>) -> Self {
        self.if_flag_version = v;
        self
    }

    /// Safe to send twice: the change sets a state rather than adding one (a kill
    /// switch, enabling a flag), so a second sending after a lost answer leaves what
    /// the first did. [`Client::call`] then rides out a replica dying behind a proxy.
    pub fn repeatable(mut self) -> Self {
        self.repeatable = true;
        self
    }

    /// The reason, in `X-Change-Reason` (for writes whose body is a document).
    pub fn reason_header(mut self, r: Option<&'a str>) -> Self {
        self.reason_header = r;
        self
    }
}

#[cfg(test)]
mod tests;
