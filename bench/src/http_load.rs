//! Sends pre-signed webhooks over HTTP/1.1 keep-alive connections, either closed-loop (a fixed
//! number of requests in flight) or open-loop (a fixed rate, see [`Pacer`]), and records each
//! request's latency.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http::header::CONTENT_TYPE;
use tokio::sync::{Semaphore, mpsc};

use crate::pacing::Pacer;
use crate::report::{self, Run};
use crate::workload::Webhook;

/// Open-loop runs never have more requests than this in flight (a dead server must not make the
/// generator run out of memory); beyond it the generator falls behind, which the latencies show.
const MAX_IN_FLIGHT: usize = 8192;

/// An HTTP client for load: keep-alive, HTTP/1.1, no proxy, a generous timeout.
pub fn client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .pool_max_idle_per_host(concurrency.max(1))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// How one request ended: success, or the error key it is counted under.
pub type Outcome = Result<(), String>;

/// POSTs one webhook to `url` and reads the answer.
pub async fn send(client: &reqwest::Client, url: &str, webhook: &Webhook) -> Outcome {
    let response = if webhook.query.is_empty() {
        client.post(url)
    } else {
        client.post(format!("{url}{}", webhook.query))
    };
    let response = response
        .header(CONTENT_TYPE, webhook.content_type)
        .header("x-twilio-signature", &webhook.signature)
        .header("i-twilio-idempotency-token", &webhook.event_id)
        .body(webhook.body.clone())
        .send()
        .await
        .map_err(|e| error_kind(&e))?;
    let status = response.status();
    // Read the body so that the connection goes back to the pool.
    response.bytes().await.map_err(|e| error_kind(&e))?;
    if status.is_success() {
        Ok(())
    } else {
        Err(status.as_u16().to_string())
    }
}

fn error_kind(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout".to_owned()
    } else if error.is_connect() {
        "connect".to_owned()
    } else {
        "io".to_owned()
    }
}

/// Per-worker tallies, merged at the end.
#[derive(Debug)]
pub struct Tally {
    pub histogram: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            histogram: report::histogram(),
            errors: BTreeMap::new(),
        }
    }
}

impl Tally {
    pub fn add(&mut self, latency: Duration, outcome: Outcome) {
        report::record(&mut self.histogram, latency);
        if let Err(kind) = outcome {
            *self.errors.entry(kind).or_default() += 1;
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.histogram
            .add(&other.histogram)
            .expect("same histogram bounds");
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
    }
}

/// A closed-loop run: `concurrency` workers, each sending its next request when the previous one
/// is answered, for `duration` after `warmup` unmeasured requests. Requests are taken in order and
/// wrap around when the workload runs out.
pub async fn closed_loop(
    target: &str,
    url: &str,
    webhooks: Arc<[Webhook]>,
    concurrency: usize,
    duration: Duration,
    warmup: usize,
) -> anyhow::Result<Run> {
    let client = client(concurrency)?;
    let url: Arc<str> = url.into();
    let send_one = move |index: usize| {
        let (client, url, webhooks) = (client.clone(), Arc::clone(&url), Arc::clone(&webhooks));
        async move { send(&client, &url, &webhooks[index % webhooks.len()]).await }
    };
    drive_closed_loop(target, send_one, concurrency, duration, warmup).await
}

/// The closed loop every baseline shares: `concurrency` workers, each calling `send_one` with the
/// next request index when its previous call returned; first `warmup` unmeasured calls, then
/// `duration` of measured ones. `send_one` maps the index onto its workload (wrapping around).
pub async fn drive_closed_loop<S, F>(
    target: &str,
    send_one: S,
    concurrency: usize,
    duration: Duration,
    warmup: usize,
) -> anyhow::Result<Run>
where
    S: Fn(usize) -> F + Clone + Send + 'static,
    F: Future<Output = Outcome> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let worker = |until: Option<Instant>, limit: usize| {
        let (send_one, next) = (send_one.clone(), Arc::clone(&next));
        tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                if until.is_some_and(|until| Instant::now() >= until) {
                    break;
                }
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= limit {
                    break;
                }
                let started = Instant::now();
                let outcome = send_one(index).await;
                tally.add(started.elapsed(), outcome);
            }
            tally
        })
    };
    let warmup_workers: Vec<_> = (0..concurrency).map(|_| worker(None, warmup)).collect();
    for handle in warmup_workers {
        handle.await?;
    }
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| worker(Some(started + duration), usize::MAX))
        .collect();
    let mut total = Tally::default();
    for handle in workers {
        total.merge(handle.await?);
    }
    let elapsed = started.elapsed();
    Ok(Run::new(
        target,
        format!("concurrency {concurrency}"),
        &total.histogram,
        elapsed,
    )
    .with_errors(total.errors))
}

/// When each request was answered 2xx, in nanoseconds after the run's start (0: not answered 2xx).
#[derive(Debug)]
pub struct Acks {
    pub start: Instant,
    nanos: Vec<AtomicU64>,
}

impl Acks {
    pub fn new(start: Instant, count: usize) -> Self {
        Self {
            start,
            nanos: (0..count).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn set(&self, index: usize, at: Instant) {
        let nanos = u64::try_from(at.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX);
        self.nanos[index].store(nanos.max(1), Ordering::Release);
    }

    pub fn get(&self, index: usize) -> Option<Instant> {
        match self.nanos[index].load(Ordering::Acquire) {
            0 => None,
            nanos => Some(self.start + Duration::from_nanos(nanos)),
        }
    }
}

/// An open-loop run: the first `count` webhooks at `pacer`'s rate, latency from each request's due
/// time. Every 2xx is recorded in the returned [`Acks`] and, when `notify` is given, its index sent
/// there.
pub async fn open_loop(
    target: &str,
    url: &str,
    webhooks: Arc<[Webhook]>,
    pacer: Pacer,
    count: usize,
    notify: Option<mpsc::UnboundedSender<usize>>,
) -> anyhow::Result<(Run, Arc<Acks>)> {
    anyhow::ensure!(
        count <= webhooks.len(),
        "only {} webhooks were pre-signed for {count} requests",
        webhooks.len()
    );
    let client = client(256)?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let start = Instant::now();
    let acks = Arc::new(Acks::new(start, count));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..count {
        let due = start + pacer.due(index);
        tokio::time::sleep_until(due.into()).await;
        let permit = Arc::clone(&permits).acquire_owned().await?;
        let (client, url, webhooks, tally, acks, notify) = (
            client.clone(),
            url.to_owned(),
            Arc::clone(&webhooks),
            Arc::clone(&tally),
            Arc::clone(&acks),
            notify.clone(),
        );
        tasks.spawn(async move {
            let outcome = send(&client, &url, &webhooks[index]).await;
            let answered = Instant::now();
            if outcome.is_ok() {
                acks.set(index, answered);
                if let Some(notify) = notify {
                    let _ = notify.send(index);
                }
            }
            tally
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .add(answered.saturating_duration_since(due), outcome);
            drop(permit);
        });
        // Reap finished tasks as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(PoisonError::into_inner));
    let mut run = Run::new(
        target,
        format!("rate {:.0}/s", pacer.rate()),
        &tally.histogram,
        elapsed,
    )
    .with_errors(tally.errors);
    run.offered_rate = Some(pacer.rate());
    Ok((run, acks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_remember_when_each_request_was_answered() {
        let start = Instant::now();
        let acks = Acks::new(start, 3);
        acks.set(1, start + Duration::from_millis(5));
        acks.set(2, start);
        assert_eq!(acks.get(0), None);
        assert_eq!(acks.get(1), Some(start + Duration::from_millis(5)));
        assert!(acks.get(2).is_some(), "an answer at the very start still counts");
    }

    #[test]
    fn tallies_merge_latencies_and_errors() {
        let mut a = Tally::default();
        a.add(Duration::from_millis(1), Ok(()));
        a.add(Duration::from_millis(2), Err("503".to_owned()));
        let mut b = Tally::default();
        b.add(Duration::from_millis(3), Err("503".to_owned()));
        a.merge(b);
        assert_eq!(a.histogram.len(), 3);
        assert_eq!(a.errors["503"], 2);
    }
}
