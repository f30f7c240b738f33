//! flagd served in the test process: the server code the binary runs
//! (`flagd::server::{open_store_for, bootstrap, run}`), on a real loopback socket.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;

use crate::{ADMIN_TOKEN, SqliteFile};

/// How long a stopping server may take to finish its requests and close its store.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How to serve flagd in-process: built with [`InProcess::new`], then started as a task
/// ([`InProcess::start`], async tests) or on a thread with a runtime of its own
/// ([`InProcess::start_thread`], sync tests).
///
/// By default it serves a new [`SqliteFile`] on a free loopback port with
/// `flagd::server::Options::default()`, bootstrapped with the admin token
/// [`ADMIN_TOKEN`].
#[derive(Debug, Default)]
pub struct InProcess {
    database_url: Option<String>,
    options: flagd::server::Options,
    port: u16,
}

impl InProcess {
    /// A new SQLite file, default options, a free port.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves this database instead of a new SQLite file: a file that outlives this
    /// server ([`SqliteFile::url`]), or [`crate::Postgres::database`].
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// Serves with these options (the store is opened with them too: its metrics, its
    /// bus).
    pub fn options(mut self, options: flagd::server::Options) -> Self {
        self.options = options;
        self
    }

    /// Listens on 127.0.0.1 at this port (the same port across restarts) instead of a
    /// free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Starts serving as a task of the current runtime; panics if it cannot.
    pub async fn start(self) -> Server {
        self.try_start().await.expect("flagd serves in-process")
    }

    /// Starts serving as a task of the current runtime: the store opened and migrated,
    /// bootstrapped, the port bound.
    pub async fn try_start(self) -> anyhow::Result<Server> {
        let ready = self.prepare().await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(flagd::server::run(
            ready.listener,
            ready.store,
            ready.options,
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Server {
            addr: ready.addr,
            database_url: ready.url,
            stop: Some(stop),
            task,
            _sqlite: ready.sqlite,
        })
    }

    /// Serves in the calling task until `shutdown` completes, as the flagd binary does
    /// (its accept loop on the thread that drives it, not on a worker): for a process
    /// that is flagd, such as the load harness's. `ready` is called once the port is
    /// bound.
    pub async fn serve_here(
        self,
        ready: impl FnOnce(SocketAddr),
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let r = self.prepare().await?;
        ready(r.addr);
        let _sqlite = r.sqlite;
        flagd::server::run(r.listener, r.store, r.options, shutdown).await
    }

    /// The store opened, migrated and bootstrapped, and the port bound.
    async fn prepare(self) -> anyhow::Result<Prepared> {
        let sqlite = self.database_url.is_none().then(SqliteFile::new);
        let url = match (self.database_url, &sqlite) {
            (Some(url), _) => url,
            (None, Some(file)) => file.url(),
            (None, None) => unreachable!("a database either way"),
        };
        let store = flagd::server::open_store_for(&url, &self.options)
            .await
            .with_context(|| format!("opening {url}"))?;
        flagd::server::bootstrap(&store, Some(ADMIN_TOKEN)).await?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .with_context(|| format!("listening on 127.0.0.1:{}", self.port))?;
        let addr = listener.local_addr()?;
        Ok(Prepared {
            store,
            listener,
            addr,
            url,
            sqlite,
            options: self.options,
        })
    }

    /// Starts serving on a thread of its own, with a runtime of its own (two worker
    /// threads), for a test that is not async; panics if it cannot.
    pub fn start_thread(self) -> ThreadServer {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let server = match self.try_start().await {
                    Ok(server) => server,
                    Err(e) => {
                        let _ = started_tx.send(Err(format!("{e:#}")));
                        return Err(e);
                    }
                };
                let _ = started_tx.send(Ok((server.addr, server.database_url.clone())));
                let _ = stopped.await;
                server.stop().await
            })
        });
        match started_rx.recv() {
            Ok(Ok((addr, database_url))) => ThreadServer {
                addr,
                database_url,
                stop: Some(stop),
                thread: Some(thread),
            },
            Ok(Err(e)) => panic!("flagd did not serve in-process: {e}"),
            Err(_) => panic!(
                "flagd's thread ended before serving: {:?}",
                thread.join().map(|r| r.map_err(|e| format!("{e:#}")))
            ),
        }
    }
}

/// flagd serving in-process as a task (see [`InProcess::start`]). [`Server::stop`]
/// stops it cleanly; dropped, it is told to stop and finishes in the background.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    database_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The SQLite file it serves when none was given.
    _sqlite: Option<SqliteFile>,
}

endpoint!(Server);

impl Server {
    /// Stops it as a shutdown signal does: streams are told to reconnect, requests in
    /// flight finish, the store is closed. Fails if serving failed, or if stopping takes
    /// longer than 30 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(STOP_TIMEOUT, &mut self.task)
            .await
            .context("flagd did not stop within 30 s")?
            .context("flagd's task")?
    }

    /// Waits for it to end without stopping it: it serves until it fails (a server
    /// that is meant to run until its process ends).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        // `self`, and so the sender whose drop would stop it, lives until the task ends.
        (&mut self.task).await.context("flagd's task")?
    }
}

/// flagd serving in-process on a thread of its own (see [`InProcess::start_thread`]).
/// Stopped, and its thread joined, when dropped or by [`ThreadServer::stop`].
#[derive(Debug)]
pub struct ThreadServer {
    addr: SocketAddr,
    database_url: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

endpoint!(ThreadServer);

impl ThreadServer {
    /// Stops it cleanly (see [`Server::stop`]) and joins its thread.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| anyhow::anyhow!("flagd's thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for ThreadServer {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// What serving needs, ready.
struct Prepared {
    store: std::sync::Arc<flagd::store::Store>,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    url: String,
    sqlite: Option<SqliteFile>,
    options: flagd::server::Options,
}
