//! The shutdown signal: SIGTERM (what Kubernetes and docker send) or Ctrl-C.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal as listen};

/// Takes over SIGTERM and SIGINT now and returns a future that completes on the first of them.
///
/// The handlers are installed by this call, not when the future is first polled: a service polls
/// it only once it has started (topics, schemas, the group join), and a signal that arrived before
/// would otherwise kill the process with the default action instead of shutting it down. Call it
/// first thing in a serving command, before its configuration is loaded; never in a command that
/// does not wait for the future (the signals would no longer stop it). Needs a Tokio runtime.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    let terminate = listen(SignalKind::terminate());
    let interrupt = listen(SignalKind::interrupt());
    let received = |listener: std::io::Result<tokio::signal::unix::Signal>| async move {
        match listener {
            Ok(mut listener) => {
                listener.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    async move {
        tokio::select! {
            () = received(interrupt) => tracing::info!("SIGINT received, shutting down"),
            () = received(terminate) => tracing::info!("SIGTERM received, shutting down"),
        }
    }
}
