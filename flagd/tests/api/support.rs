//! What the server tests share: real flagd servers (started by `flagd-harness`, in this
//! process) on SQLite files or databases of the run's PostgreSQL server, and their REST
//! API called over real HTTP.

use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};

use flagd_harness::InProcess;
pub(crate) use flagd_harness::{ADMIN_TOKEN as ADMIN, Backend};

/// A flagd server on its own store (a new SQLite file, or a new PostgreSQL database),
/// served in-process on a random loopback port.
pub(crate) struct Server {
    pub(crate) base: String,
    http: reqwest::Client,
    server: flagd_harness::Server,
}

/// A response: status, JSON body (or null), headers.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: StatusCode,
    pub(crate) body: Value,
    pub(crate) headers: HeaderMap,
}

impl Resp {
    pub(crate) fn version(&self) -> Option<u64> {
        self.headers
            .get("x-flag-set-version")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    #[track_caller]
    pub(crate) fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }
}

impl Server {
    pub(crate) async fn start(backend: &Backend) -> anyhow::Result<Self> {
        Self::start_with(backend, flagd::server::Options::default()).await
    }

    pub(crate) async fn start_with(
        backend: &Backend,
        options: flagd::server::Options,
    ) -> anyhow::Result<Self> {
        let mut server = InProcess::new().options(options);
        if let Backend::Postgres(pg) = backend {
            server = server.database_url(pg.database().await?);
        }
        let server = server.try_start().await?;
        Ok(Self {
            base: server.url("/api/v1"),
            http: reqwest::Client::new(),
            server,
        })
    }

    /// Serves this database (one that outlives the server: a restart).
    pub(crate) async fn start_on(
        url: &str,
        options: flagd::server::Options,
    ) -> anyhow::Result<Self> {
        let server = InProcess::new()
            .options(options)
            .database_url(url)
            .try_start()
            .await?;
        Ok(Self {
            base: server.url("/api/v1"),
            http: reqwest::Client::new(),
            server,
        })
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.body(b.to_string());
        }
        let resp = r.send().await.expect("request reaches the server");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("response body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
        };
        Resp {
            status,
            body,
            headers,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, Some(ADMIN), None, &[]).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(ADMIN), Some(body), &[])
            .await
    }

    pub(crate) async fn put(&self, path: &str, body: Value) -> Resp {
        self.call(Method::PUT, path, Some(ADMIN), Some(body), &[])
            .await
    }

    /// The version numbers `GET {path}` lists (a `/versions` page), newest first.
    pub(crate) async fn version_numbers(&self, path: &str) -> Vec<u64> {
        self.get(path).await.expect(200).body["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["version"].as_u64())
            .collect()
    }

    /// A new token with a role (and optionally environments); returns its secret.
    pub(crate) async fn token(&self, name: &str, role: &str, envs: Option<&[&str]>) -> String {
        let mut body = json!({"name": name, "role": role});
        if let Some(e) = envs {
            body["environments"] = json!(e);
        }
        let r = self.post("/tokens", body).await.expect(201);
        r.body["secret"].as_str().expect("secret").to_owned()
    }

    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.server.stop().await
    }
}

/// The JSON paths an error answer names (`error.details[].path`).
pub(crate) fn error_paths(body: &Value) -> Vec<&str> {
    body["error"]["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["path"].as_str())
        .collect()
}

/// A flag with on/off variants and a fractional split.
pub(crate) fn rollout_flag(on_percent: u64) -> Value {
    json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
           "targeting": {"fractional": [["on", on_percent], ["off", 100 - on_percent]]}})
}

/// A new SDK key for `env`.
pub(crate) async fn sdk_key(s: &Server, env: &str) -> String {
    s.post(&format!("/environments/{env}/sdk-keys"), json!({}))
        .await
        .expect(201)
        .body["secret"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
