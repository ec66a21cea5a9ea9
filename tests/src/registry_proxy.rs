//! A fault-injecting reverse proxy in front of a real schema registry: services under test talk to
//! the proxy, and the test switches it, while they run, between forwarding and answering every
//! request with a registry failure (a follower that has not replicated a schema yet: 404; an
//! outage: 500; rate limiting: 429 with `Retry-After`).
//!
//! HTTP/1.1 only, one request per connection (`connection: close` both ways): enough for the
//! registry clients under test, and every request is seen, counted and decided on its own.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How the proxy answers registry requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward to the registry.
    Forward,
    /// 404 `{"error_code":40403,"message":"Schema not found"}` (a follower behind its leader).
    NotFound,
    /// 500 `{"error_code":50001,...}` (an outage).
    ServerError,
    /// 429 with `Retry-After: 1` (Confluent Cloud's rate limit).
    TooManyRequests,
}

impl Mode {
    const ALL: [Mode; 4] = [
        Mode::Forward,
        Mode::NotFound,
        Mode::ServerError,
        Mode::TooManyRequests,
    ];

    fn index(self) -> u8 {
        Mode::ALL.iter().position(|m| *m == self).unwrap_or_default() as u8
    }

    /// The failures, in the order [`RegistryProxy::flap`] cycles through them.
    pub const FAULTS: [Mode; 3] = [Mode::NotFound, Mode::ServerError, Mode::TooManyRequests];

    fn response(self) -> Option<String> {
        let (status, extra, code, message) = match self {
            Mode::Forward => return None,
            Mode::NotFound => ("404 Not Found", "", 40403, "Schema not found"),
            Mode::ServerError => ("500 Internal Server Error", "", 50001, "Error in the backend"),
            Mode::TooManyRequests => (
                "429 Too Many Requests",
                "retry-after: 1\r\n",
                42901,
                "Rate limited",
            ),
        };
        let body = format!(r#"{{"error_code":{code},"message":"{message}"}}"#);
        Some(format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/vnd.schemaregistry.v1+json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ))
    }
}

#[derive(Debug, Default)]
struct Shared {
    mode: AtomicU8,
    forwarded: AtomicU64,
    failed: AtomicU64,
}

/// The proxy; stops when dropped.
#[derive(Debug)]
pub struct RegistryProxy {
    url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl RegistryProxy {
    /// A proxy on a free local port in front of the registry at `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> io::Result<Self> {
        let upstream = upstream
            .trim()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(serve(listener, upstream, Arc::clone(&shared)));
        Ok(Self { url, shared, task })
    }

    /// The URL to give the services under test.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answers every request from now on as `mode` says.
    pub fn set(&self, mode: Mode) {
        self.shared.mode.store(mode.index(), Ordering::Relaxed);
    }

    /// Cycles through [`Mode::FAULTS`], `step` each, for `window`, then forwards again.
    pub async fn flap(&self, window: Duration, step: Duration) {
        let end = tokio::time::Instant::now() + window;
        for mode in Mode::FAULTS.iter().cycle() {
            let now = tokio::time::Instant::now();
            if now >= end {
                break;
            }
            self.set(*mode);
            tokio::time::sleep(step.min(end - now)).await;
        }
        self.set(Mode::Forward);
    }

    /// Requests answered with a failure so far.
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Requests forwarded to the registry so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for RegistryProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, upstream: String, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let (upstream, shared) = (upstream.clone(), Arc::clone(&shared));
        tokio::spawn(async move {
            let _ = exchange(client, &upstream, &shared).await;
        });
    }
}

/// One request: answered with the current fault, or forwarded and its response relayed.
async fn exchange(mut client: TcpStream, upstream: &str, shared: &Shared) -> io::Result<()> {
    let request = read_request(&mut client).await?;
    let mode = Mode::ALL[usize::from(shared.mode.load(Ordering::Relaxed))];
    if let Some(response) = mode.response() {
        shared.failed.fetch_add(1, Ordering::Relaxed);
        client.write_all(response.as_bytes()).await?;
        return client.shutdown().await;
    }
    shared.forwarded.fetch_add(1, Ordering::Relaxed);
    let mut registry = TcpStream::connect(upstream).await?;
    registry.write_all(&request).await?;
    // `connection: close` was asked for: the registry's response ends where its stream does.
    let mut response = Vec::new();
    registry.read_to_end(&mut response).await?;
    client.write_all(&response).await?;
    client.shutdown().await
}

/// The request head (with `connection: close` in place of any connection header) and its body.
async fn read_request(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<Vec<u8>> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut length = 0;
    let mut rewritten = String::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
            continue;
        }
        rewritten.push_str(line);
        rewritten.push_str("\r\n");
    }
    rewritten.push_str("connection: close\r\n\r\n");
    while buffer.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let mut request = rewritten.into_bytes();
    request.extend_from_slice(&buffer[head_end..head_end + length]);
    Ok(request)
}
