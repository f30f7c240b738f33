//! Connections: flagd's own accept loop over hyper, so that a connection that serves
//! no request has a deadline, and the number of open connections is capped.
//!
//! - A new connection must complete its first request's headers within the header-read
//!   timeout, and so must every later request, counted from its first byte: a client
//!   that sends nothing, or its headers a byte at a time (slowloris), is closed.
//! - Between requests, a keep-alive connection is closed after the idle timeout.
//! - While a request is served, an SSE stream's long response included, no timer runs.
//!   An upgraded connection (the SDK websocket) leaves hyper, and these timers, for good:
//!   the stream's own heartbeats watch it.
//! - At most `max_connections` connections are open, upgraded ones included (the permit
//!   lives in the socket, which a websocket keeps). Beyond the cap, new connections wait
//!   in the listen backlog until one closes.
//!
//! Why not hyper's `header_read_timeout` alone: hyper starts that timer whenever it
//! starts reading a request head, which on a keep-alive connection is as soon as the
//! previous response is written. Idle time and header time are then one budget: with a
//! 10 s header timeout no keep-alive connection could stay idle for more than 10 s (a
//! probe against hyper 1.12 closed silent, partial-header and idle keep-alive
//! connections alike at exactly the header timeout). Here the two are separate, and
//! hyper has no timer at all.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

/// How connections are limited.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// From a connection's start, or a later request's first byte, to the end of the
    /// request's headers.
    pub header_read: Duration,
    /// Between requests on a keep-alive connection.
    pub idle: Duration,
    /// Open connections at most (upgraded ones included).
    pub max_connections: usize,
}

/// Set in [`Conn::quiet`] once a byte of the next request has arrived.
const AWAITING_HEAD: u64 = 1 << 63;

/// What one connection is doing, shared by its socket, its requests and its task.
///
/// The connection's task reads the deadline only when its timer fires (see
/// [`connection`]): a change needs no wake-up, since it can only set a deadline at or
/// after the one the timer is armed for.
#[derive(Debug)]
struct Conn {
    /// Requests whose response has not been written to the end yet: the handler's future,
    /// then the response body (an SSE stream is a body that lasts).
    in_flight: AtomicUsize,
    /// When the connection last became quiet (no request in flight), in nanoseconds since
    /// `epoch`, with [`AWAITING_HEAD`] set once the next request's first byte has come.
    quiet: AtomicU64,
    epoch: Instant,
}

impl Conn {
    /// A new connection awaits its first request's headers: a silent one gets the
    /// header-read timeout, as one that sends part of them does.
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            quiet: AtomicU64::new(AWAITING_HEAD),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        // 2^63 ns is 292 years of uptime: the flag bit is never reached.
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX) & !AWAITING_HEAD
    }

    /// Bytes arrived: if the connection was idle, a request has begun and its headers
    /// are now on the header-read clock.
    fn on_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let q = self.quiet.load(Ordering::Acquire);
            if q & AWAITING_HEAD == 0 {
                self.quiet
                    .store(self.now() | AWAITING_HEAD, Ordering::Release);
            }
        }
    }

    /// When the connection is to be closed if nothing changes; `None` while a request is
    /// in flight.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let q = self.quiet.load(Ordering::Acquire);
        let since = self.epoch + Duration::from_nanos(q & !AWAITING_HEAD);
        Some(
            since
                + if q & AWAITING_HEAD == 0 {
                    limits.idle
                } else {
                    limits.header_read
                },
        )
    }

    fn awaiting_head(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self.quiet.load(Ordering::Acquire) & AWAITING_HEAD != 0
    }
}

/// One request in flight; dropped when its response body is finished (or the request
/// is abandoned), which starts the idle clock.
#[derive(Debug)]
struct InFlight(Arc<Conn>);

impl InFlight {
    fn start(conn: &Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(conn.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let c = &self.0;
        if c.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            c.quiet.store(c.now(), Ordering::Release);
        }
    }
}

/// A response body that holds its request's [`InFlight`] until hyper drops it.
#[derive(Debug)]
struct Tracked {
    body: Body,
    // Held, never read.
    _in_flight: Option<InFlight>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The router as hyper's service for one connection.
#[derive(Clone, Debug)]
struct Handler {
    router: Router,
    conn: Arc<Conn>,
}

impl hyper::service::Service<Request<Incoming>> for Handler {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = Respond;

    fn call(&self, req: Request<Incoming>) -> Respond {
        // hyper calls this once the headers are complete: the header clock stops here.
        let in_flight = InFlight::start(&self.conn);
        // A router is always ready (its poll_ready is Ready), so calling it directly is
        // what `oneshot` would do.
        let mut router = self.router.clone();
        Respond {
            inner: tower_service::Service::call(&mut router, req.map(Body::new)),
            in_flight: Some(in_flight),
        }
    }
}

/// The router's answer, whose body takes over the request's [`InFlight`] (no box per
/// request: remote evaluation serves tens of thousands a second).
struct Respond {
    inner: axum::routing::future::RouteFuture<Infallible>,
    in_flight: Option<InFlight>,
}

impl std::fmt::Debug for Respond {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Respond").finish_non_exhaustive()
    }
}

impl Future for Respond {
    type Output = Result<Response<Tracked>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let resp = match Pin::new(&mut self.inner).poll(cx) {
            Poll::Ready(Ok(r)) => r,
            Poll::Ready(Err(e)) => match e {},
            Poll::Pending => return Poll::Pending,
        };
        let in_flight = self.in_flight.take();
        Poll::Ready(Ok(resp.map(|body| Tracked {
            body,
            _in_flight: in_flight,
        })))
    }
}

/// The socket, with what must live exactly as long as it: the connection's slot under
/// the cap and the open-connections gauge. After a websocket upgrade it lives on in the
/// stream, so the stream keeps its slot.
#[derive(Debug)]
struct Io {
    stream: TcpStream,
    conn: Arc<Conn>,
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for Io {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.conn.on_read();
        }
        r
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Errors of one connection that is already gone: the loop goes on at once.
fn per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// Logs at most once per `every`, with how many times it happened meanwhile.
#[derive(Debug)]
struct Throttle {
    every: Duration,
    last: Option<Instant>,
    missed: u64,
}

impl Throttle {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            missed: 0,
        }
    }

    /// `Some(times since the last log)` when it is time to log again.
    fn tick(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|l| now < l + self.every) {
            self.missed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.missed) + 1)
    }
}

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting, lets
/// every request in flight finish, and returns when every (non-upgraded) connection has
/// closed. `open` counts the open connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    open: Gauge,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    // No timer for hyper: its header timer (see the module's comment) would be one more
    // allocation and timer entry per request, and ours close a connection sooner.
    let http = Arc::new(hyper::server::conn::http1::Builder::new());
    // Each connection's task holds a receiver: `true` asks it to finish; the sender's
    // `closed()` tells when every task has ended.
    let (stop, _) = watch::channel(false);
    let mut full = Throttle::new(Duration::from_secs(60));
    let mut failing = Throttle::new(Duration::from_secs(10));
    tokio::pin!(shutdown);
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if let Some(n) = full.tick() {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        times = n,
                        "the connection limit is reached: new connections wait until one closes (--max-connections)"
                    );
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        // The semaphore is never closed.
                        Err(_) => break,
                    },
                }
            }
        };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if per_connection(&e) => continue,
            Err(e) => {
                // Out of file descriptors (EMFILE, ENFILE) or memory: wait a little
                // instead of spinning; connections closing free what is missing.
                if let Some(n) = failing.tick() {
                    tracing::warn!(error = %e, times = n, "cannot accept connections; retrying");
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        let conn = Arc::new(Conn::new());
        open.inc();
        let io = Io {
            stream,
            conn: conn.clone(),
            _permit: permit,
            open: open.clone(),
        };
        let handler = Handler {
            router: router.clone(),
            conn: conn.clone(),
        };
        tokio::spawn(connection(
            http.clone(),
            io,
            handler,
            conn,
            limits,
            stop.subscribe(),
        ));
    }
    // Connections waiting in the backlog are refused from here on.
    drop(listener);
    stop.send_replace(true);
    stop.closed().await;
}

/// What ends a wait in [`connection`].
enum Event {
    Ended(Result<(), hyper::Error>),
    TimedOut,
    Stop,
}

/// Serves one connection until it closes, times out, or upgrades.
async fn connection(
    http: Arc<hyper::server::conn::http1::Builder>,
    io: Io,
    handler: Handler,
    conn: Arc<Conn>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let served = http
        .serve_connection(TokioIo::new(io), handler)
        .with_upgrades();
    tokio::pin!(served);
    // The timer is not moved with every request (a keep-alive connection serving
    // thousands a second would reset it twice per request). It is armed no later than
    // `quantum` from when it is armed, and every deadline is at least `quantum` after the
    // change that sets it, so it can only fire early: then the current deadline is read
    // and the timer armed again, at that deadline or one quantum on, whichever is sooner.
    let quantum = limits
        .header_read
        .min(limits.idle)
        .max(Duration::from_millis(1));
    let arm_at = |now: Instant| match conn.deadline(&limits) {
        Some(d) => d.min(now + quantum),
        None => now + quantum,
    };
    let timer = tokio::time::sleep_until(arm_at(Instant::now()));
    tokio::pin!(timer);
    let stopped = stop.changed();
    tokio::pin!(stopped);
    let mut stopping = false;
    loop {
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = served.as_mut().poll(cx) {
                return Poll::Ready(Event::Ended(r));
            }
            while timer.as_mut().poll(cx).is_ready() {
                let now = Instant::now();
                if conn.deadline(&limits).is_some_and(|d| d <= now) {
                    return Poll::Ready(Event::TimedOut);
                }
                timer.as_mut().reset(arm_at(now));
            }
            if !stopping && stopped.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Stop);
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Ended(r) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended");
                }
                return;
            }
            Event::TimedOut => {
                tracing::debug!(
                    awaiting_headers = conn.awaiting_head(),
                    "closing a connection that sent no complete request in time"
                );
                // Nothing is in flight: dropping the connection closes the socket.
                return;
            }
            Event::Stop => {
                stopping = true;
                if conn.awaiting_head() {
                    // Half a request's headers, or none: nothing to finish.
                    return;
                }
                // hyper closes an idle connection now, and a busy one after its response.
                served.as_mut().graceful_shutdown();
            }
        }
    }
}
