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
//!   stragglers after `drain_timeout`.
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
        let service = TowerToHyperService::new(
            router
                .clone()
                .map_request(|request: hyper::Request<Incoming>| request.map(axum::body::Body::new))
                .map_future(move |response| {
                    let busy = Busy::start(Arc::clone(&activity));
                    async move {
                        let response = response.await;
                        drop(busy);
                        response
                    }
                }),
        );
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
    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_for_the_rest_of_the_process() {
        assert_eq!(connection_cap(4096, None), Ok(4096));
        assert_eq!(connection_cap(4096, Some(1_048_576)), Ok(4096));
        assert_eq!(connection_cap(4096, Some(1024)), Ok(768));
        assert!(connection_cap(4096, Some(200)).is_err());
        assert!(open_files_limit().is_none_or(|limit| limit > 0));
    }
}
