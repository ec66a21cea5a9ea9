//! The HTTP server loop: hyper (HTTP/1.1 and HTTP/2) with an accept loop that bounds what a client
//! can hold without sending requests, which `axum::serve` does not:
//!
//! - **A connection cap.** At most `max_connections` connections are served at once; past it the
//!   loop stops accepting (new connections wait in the kernel's backlog) instead of running the
//!   process out of file descriptors.
//! - **A deadline on every idle phase.** A connection must complete its first request head within
//!   `header_read_timeout` of being accepted: that covers a socket that never sends a byte, the
//!   protocol detection (HTTP/1 or the HTTP/2 preface), the HTTP/2 preface and SETTINGS exchange,
//!   and the first HTTP/1 head. Later, a connection with no request in progress is closed after
//!   `idle_timeout` (HTTP/1 keep-alive, an HTTP/2 connection without streams). HTTP/1 heads after
//!   the first are bounded by hyper's `header_read_timeout`; HTTP/2 peers are pinged and dropped
//!   when they stop answering.
//! - **A graceful shutdown** that stops accepting, lets in-flight requests finish, and closes the
//!   stragglers after `drain_timeout`. Idle keep-alive connections are not closed at once (that
//!   would cut off a request already on its way): each is closed after its next request, answered
//!   with `Connection: close`, or after a short linger.
//!
//! Request bodies and handlers bound their own time (the services' body-read and publish deadlines).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// Server settings.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// A connection must deliver its first complete request head within this time of being accepted
    /// (slowloris and idle-socket protection); later HTTP/1 heads too. Also the HTTP/2 ping interval
    /// and ping answer deadline.
    pub header_read_timeout: Duration,
    /// A connection with no request in progress is closed after this time.
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests before closing their connections.
    pub drain_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// How long a connection told to close gracefully (idle, or the server draining) may take before it
/// is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How long an idle connection stays open once the server drains, so that a request the client
/// sent at that moment is answered (with `Connection: close`) rather than cut off.
const DRAIN_LINGER: Duration = Duration::from_secs(2);

/// Where the server is in its life; connections watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Finish in-flight requests, then close.
    Draining,
    /// The drain deadline passed: close now.
    Closing,
}

/// Serves `router` on `listener` until `shutdown` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(options.header_read_timeout)
        .keep_alive_timeout(options.header_read_timeout);
    let max_connections = options.max_connections.clamp(1, u32::MAX as usize);
    let slots = Arc::new(Semaphore::new(max_connections));
    let (phase, phase_seen) = watch::channel(Phase::Serving);
    let mut shutdown = pin!(shutdown);

    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (activity, idle) = watch::channel(0_usize);
        let activity = Arc::new(activity);
        let (router, draining) = (router.clone(), phase_seen.clone());
        let service =
            TowerToHyperService::new(tower::service_fn(move |request: hyper::Request<Incoming>| {
                let busy = Busy::start(Arc::clone(&activity));
                let http1 = request.version() <= axum::http::Version::HTTP_11;
                let (router, draining) = (router.clone(), draining.clone());
                async move {
                    let mut response = router.oneshot(request.map(axum::body::Body::new)).await?;
                    // Past the shutdown, an HTTP/1 client learns from the response itself that
                    // the connection closes after it (hyper closes it once written), so it does
                    // not send another request on it. (HTTP/2 has GOAWAY for that.)
                    if http1 && *draining.borrow() != Phase::Serving {
                        response.headers_mut().insert(
                            axum::http::header::CONNECTION,
                            axum::http::HeaderValue::from_static("close"),
                        );
                    }
                    drop(busy);
                    Ok::<_, std::convert::Infallible>(response)
                }
            }));
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let phase_seen = phase_seen.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut connection = pin!(connection);
            let closed_by = tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(error) = ended {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                    return;
                }
                () = expire_idle(idle, options.header_read_timeout, options.idle_timeout) => "idle",
                () = wait_for(phase_seen.clone(), Phase::Draining) => "shutdown",
            };
            if closed_by == "shutdown" {
                // Closing an idle HTTP/1 keep-alive connection now would race the client's next
                // request, which may already be on the wire: it would be cut off unanswered, and
                // a POST is not retried. So the connection lingers: its next request is answered
                // with `Connection: close` (and hyper closes it then), or `DRAIN_LINGER` passes.
                tokio::select! {
                    ended = connection.as_mut() => {
                        if let Err(error) = ended {
                            tracing::debug!(%error, closed_by, "connection ended with an error");
                        }
                        return;
                    }
                    () = tokio::time::sleep(DRAIN_LINGER) => {}
                    () = wait_for(phase_seen.clone(), Phase::Closing) => {}
                }
            }
            connection.as_mut().graceful_shutdown();
            let grace = async {
                if closed_by == "idle" {
                    tokio::time::sleep(CLOSE_GRACE).await;
                } else {
                    wait_for(phase_seen, Phase::Closing).await;
                }
            };
            tokio::select! {
                ended = connection => {
                    if let Err(error) = ended {
                        tracing::debug!(%error, closed_by, "connection ended with an error");
                    }
                }
                () = grace => tracing::debug!(closed_by, "connection dropped"),
            }
        });
    }

    drop(listener);
    let open = max_connections - slots.available_permits();
    tracing::info!(
        connections = open,
        "stopped accepting; draining in-flight requests"
    );
    phase.send_replace(Phase::Draining);
    let all_closed = slots.acquire_many(max_connections as u32);
    if tokio::time::timeout(options.drain_timeout, all_closed)
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?options.drain_timeout, "drain timed out; closing remaining connections");
        phase.send_replace(Phase::Closing);
        // The connection tasks drop their sockets as soon as they see the phase.
        let _ = tokio::time::timeout(CLOSE_GRACE, slots.acquire_many(max_connections as u32)).await;
    }
    Ok(())
}

/// Counts a request as in progress on its connection until dropped.
struct Busy(Arc<watch::Sender<usize>>);

impl Busy {
    fn start(activity: Arc<watch::Sender<usize>>) -> Self {
        activity.send_modify(|active| *active += 1);
        Self(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_modify(|active| *active -= 1);
    }
}

/// Completes once the connection has had no request in progress for `first` (before its first
/// request) or `idle` (after it). Every request start or end restarts the clock.
async fn expire_idle(mut activity: watch::Receiver<usize>, first: Duration, idle: Duration) {
    let mut limit = first;
    loop {
        let active = *activity.borrow_and_update();
        if active > 0 {
            if activity.changed().await.is_err() {
                return std::future::pending().await;
            }
            limit = idle;
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(limit) => return,
            changed = activity.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
                limit = idle;
            }
        }
    }
}

/// Completes once the server reaches `phase` (or a later one).
async fn wait_for(mut seen: watch::Receiver<Phase>, phase: Phase) {
    let reached = |current: &Phase| match phase {
        Phase::Serving => true,
        Phase::Draining => *current != Phase::Serving,
        Phase::Closing => *current == Phase::Closing,
    };
    if seen.wait_for(reached).await.is_err() {
        // The server is gone: close.
    }
}

/// The soft limit on open file descriptors (`RLIMIT_NOFILE`) as `/proc/self/limits` reports it;
/// `None` where that file does not exist or says "unlimited".
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// File descriptors kept free for everything but client connections: Kafka and registry
/// sockets, the admin listener and its clients, log files, the runtime.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// `requested` connections, or fewer when the file descriptor limit (`limit`, see
/// [`open_files_limit`]) cannot hold them besides [`RESERVED_DESCRIPTORS`]. `Err` when the limit leaves
/// fewer than 16.
pub fn connection_cap(requested: usize, limit: Option<u64>) -> Result<usize, String> {
    let Some(limit) = limit else {
        return Ok(requested);
    };
    let room = limit.saturating_sub(RESERVED_DESCRIPTORS);
    if room < 16 {
        return Err(format!(
            "the open files limit ({limit}) leaves room for {room} connections; raise it (ulimit -n)"
        ));
    }
    Ok(requested.min(usize::try_from(room).unwrap_or(usize::MAX)))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// Writes one HTTP/1.1 request on `stream`, reads the response and returns its head.
    async fn request(stream: &mut TcpStream) -> String {
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0_u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let read = stream.read(&mut byte).await.unwrap();
            if read == 0 {
                break;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .map_or(0, |length| length.trim().parse().unwrap());
        let mut body = vec![0_u8; length];
        stream.read_exact(&mut body).await.unwrap();
        head
    }

    #[tokio::test]
    async fn a_request_on_an_idle_connection_during_drain_is_answered_then_the_connection_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let server = tokio::spawn(serve(listener, router, ServeOptions::default(), async {
            let _ = stopped.await;
        }));

        let mut stream = TcpStream::connect(address).await.unwrap();
        let first = request(&mut stream).await;
        assert!(first.starts_with("http/1.1 200"), "{first}");
        assert!(!first.contains("connection: close"), "{first}");

        // The connection is idle when the drain starts; the client's next request comes after.
        stop.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second = request(&mut stream).await;
        assert!(
            second.starts_with("http/1.1 200"),
            "a request sent on an idle connection during the drain is answered: {second:?}"
        );
        assert!(second.contains("connection: close"), "{second}");
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("the connection closes after the response")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stops once its connections are closed")
            .unwrap()
            .unwrap();
    }

    #[test]
    fn the_cap_leaves_descriptors_for_the_rest_of_the_process() {
        assert_eq!(connection_cap(4096, None), Ok(4096));
        assert_eq!(connection_cap(4096, Some(1_048_576)), Ok(4096));
        assert_eq!(connection_cap(4096, Some(1024)), Ok(768));
        assert!(connection_cap(4096, Some(200)).is_err());
        assert!(open_files_limit().is_none_or(|limit| limit > 0));
    }
}
