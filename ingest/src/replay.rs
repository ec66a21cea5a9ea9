//! The recent-events cache: which events this instance has already made durable, so that a replay
//! of one is answered 200 without a second record and without spending the source's rate limit.
//!
//! One captured, validly signed request replayed at full speed used to use up its source's rate
//! limit, so the provider's genuine deliveries got 429. Now the pipeline asks [`RecentEvents::claim`]
//! with the envelope's (source, event id) before the rate limit:
//!
//! - **Seen**: Kafka acknowledged that event within `ttl`: answer as if stored (it is).
//! - **Claimed**: the caller publishes, and calls [`Pending::stored`] once Kafka acknowledged it.
//!   Only then is the id remembered: an event whose publish failed is not answered 200 later.
//! - A duplicate arriving while the first copy is still being published waits for that outcome
//!   instead of publishing a second copy; if the first fails, one waiter takes over.
//!
//! Bounded: at most `capacity` remembered ids (the oldest are forgotten first) plus one pending
//! entry per request in flight. Ids are kept as SHA-256 digests of (source, event id), 32 bytes each
//! whatever the id's length. The cache is per process: another replica, or this one after a restart,
//! publishes a replay once more, and the processor's dedup drops it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

type Key = [u8; 32];

/// Recently stored event ids.
#[derive(Debug)]
pub struct RecentEvents {
    capacity: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Key, Slot>,
    /// Stored ids in the order they were stored, for expiry and eviction. May hold ids that were
    /// stored again later; those are skipped when their time comes.
    stored: VecDeque<(Key, Instant)>,
}

#[derive(Debug)]
enum Slot {
    /// Being published; the value turns `true` once Kafka acknowledged it.
    Pending(watch::Receiver<bool>),
    Stored(Instant),
}

/// The answer of [`RecentEvents::claim`].
#[derive(Debug)]
pub enum Claim<'a> {
    /// Already stored within the TTL.
    Seen,
    /// Not known: the caller publishes it.
    Claimed(Pending<'a>),
}

/// An event being published. Dropping it without [`Pending::stored`] forgets the claim and wakes the
/// duplicates that wait for it.
#[derive(Debug)]
pub struct Pending<'a> {
    events: &'a RecentEvents,
    key: Key,
    done: watch::Sender<bool>,
    stored: bool,
}

impl RecentEvents {
    /// Remembers up to `capacity` ids for `ttl` each.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity,
            ttl,
            inner: Mutex::default(),
        }
    }

    /// Whether `source`'s `event_id` was stored recently; if not, the caller's claim to publish it.
    /// Waits while another request publishes the same event.
    pub async fn claim(&self, source: &str, event_id: &str) -> Claim<'_> {
        let key = key(source, event_id);
        loop {
            let mut first = {
                let mut inner = self.lock();
                match inner.entries.get(&key) {
                    Some(Slot::Stored(at)) if at.elapsed() < self.ttl => return Claim::Seen,
                    Some(Slot::Pending(first)) => first.clone(),
                    _ => {
                        let (done, pending) = watch::channel(false);
                        inner.entries.insert(key, Slot::Pending(pending));
                        return Claim::Claimed(Pending {
                            events: self,
                            key,
                            done,
                            stored: false,
                        });
                    }
                }
            };
            // `Err`: the first copy's publish failed; look again (and maybe take over).
            let _ = first.wait_for(|stored| *stored).await;
        }
    }

    /// Ids currently remembered as stored (expired ones included until they are pruned).
    pub fn len(&self) -> usize {
        self.lock()
            .entries
            .values()
            .filter(|slot| matches!(slot, Slot::Stored(_)))
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Pending<'_> {
    /// Kafka acknowledged the event: remember it and release the waiting duplicates.
    pub fn stored(mut self) {
        let now = Instant::now();
        {
            let mut inner = self.events.lock();
            inner.entries.insert(self.key, Slot::Stored(now));
            inner.stored.push_back((self.key, now));
            prune(&mut inner, self.events.capacity, self.events.ttl, now);
        }
        self.stored = true;
        self.done.send_replace(true);
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.stored {
            let mut inner = self.events.lock();
            if matches!(inner.entries.get(&self.key), Some(Slot::Pending(_))) {
                inner.entries.remove(&self.key);
            }
        }
        // Dropping `done` wakes the waiters.
    }
}

/// Forgets expired ids, then the oldest ones beyond `capacity`.
fn prune(inner: &mut Inner, capacity: usize, ttl: Duration, now: Instant) {
    while let Some(&(key, at)) = inner.stored.front() {
        let expired = now.duration_since(at) >= ttl;
        if !expired && inner.stored.len() <= capacity {
            break;
        }
        inner.stored.pop_front();
        // Only if this is still the entry that was stored at `at` (not a later store of the id).
        if matches!(inner.entries.get(&key), Some(Slot::Stored(stored_at)) if *stored_at == at) {
            inner.entries.remove(&key);
        }
    }
}

fn key(source: &str, event_id: &str) -> Key {
    let mut hash = Sha256::new();
    hash.update((source.len() as u64).to_be_bytes());
    hash.update(source.as_bytes());
    hash.update(event_id.as_bytes());
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn claimed(claim: Claim<'_>) -> Pending<'_> {
        match claim {
            Claim::Claimed(pending) => pending,
            Claim::Seen => panic!("expected a claim, got Seen"),
        }
    }

    #[tokio::test]
    async fn an_id_is_seen_only_once_stored() {
        let events = RecentEvents::new(10, Duration::from_secs(60));
        let first = claimed(events.claim("stripe", "evt_1").await);
        drop(first); // the publish failed
        let again = claimed(events.claim("stripe", "evt_1").await);
        again.stored();
        assert!(matches!(events.claim("stripe", "evt_1").await, Claim::Seen));
        // Per source.
        claimed(events.claim("generic/gh", "evt_1").await).stored();
        assert_eq!(events.len(), 2);
    }

    #[tokio::test]
    async fn ids_expire_and_the_oldest_are_evicted() {
        let events = RecentEvents::new(3, Duration::from_millis(50));
        for id in ["a", "b", "c", "d"] {
            claimed(events.claim("s", id).await).stored();
        }
        assert_eq!(events.len(), 3);
        claimed(events.claim("s", "a").await).stored();
        tokio::time::sleep(Duration::from_millis(60)).await;
        claimed(events.claim("s", "b").await).stored();
        assert_eq!(events.len(), 1, "the others expired");
    }

    #[tokio::test]
    async fn a_duplicate_waits_for_the_first_copy() {
        let events = Arc::new(RecentEvents::new(10, Duration::from_secs(60)));
        let first = claimed(events.claim("s", "x").await);
        let waiter = {
            let events = Arc::clone(&events);
            tokio::spawn(async move { matches!(events.claim("s", "x").await, Claim::Seen) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        first.stored();
        assert!(waiter.await.unwrap(), "the duplicate sees the stored event");

        // A failed first copy hands over to one waiter.
        let failing = claimed(events.claim("s", "y").await);
        let taker = {
            let events = Arc::clone(&events);
            tokio::spawn(async move {
                let pending = claimed(events.claim("s", "y").await);
                pending.stored();
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(failing);
        taker.await.unwrap();
        assert!(matches!(events.claim("s", "y").await, Claim::Seen));
    }
}
