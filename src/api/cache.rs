/*! The response cache: bodies of successful reads, shared by every statement and session of a
process, so that the same listing asked for twice (a shell user repeating a query, several
panels of a dashboard) is sent once.

An entry is keyed by who asked (a hash of the API base and the token, never the token), the
request line (method, path and query, so page and page size) and its X-Filter. It lives for a
time to live; a change sent with a token drops every entry of that token. Concurrent identical
reads share one request in flight. The bodies are kept as the bytes that arrived, up to a
bound: the oldest go first. */

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::ApiError;

/// Bytes of response bodies kept at most: the listings of accounts of a few ten thousand
/// images (about 0.6 MB per thousand), while a scan of 100 000 images still streams in
/// memory that does not grow with the account.
const MAX_BYTES: usize = 16 << 20;

/// What an entry is for: who asked and what exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The API base and token, hashed.
    pub client: u64,
    /// `GET /path?query`.
    pub request: String,
    pub filter: Option<String>,
}

type Flight = Shared<BoxFuture<'static, Result<Bytes, ApiError>>>;

enum Slot {
    Ready { body: Bytes, stored: Instant },
    InFlight { id: u64, flight: Flight },
}

#[derive(Default)]
struct Entries {
    slots: HashMap<Key, Slot>,
    bytes: usize,
    next_flight: u64,
}

pub struct ResponseCache {
    /// `None`: nothing is kept (single flight still applies).
    ttl: Option<Duration>,
    entries: Mutex<Entries>,
}

impl ResponseCache {
    /// Whether `bytes` of bodies can be kept together: a listing larger than that would only
    /// push out its own first pages, and is read past the cache.
    pub fn holds(&self, bytes: u64) -> bool {
        self.ttl.is_some() && bytes <= MAX_BYTES as u64
    }
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl ResponseCache {
    /// Entries live for `ttl`; zero keeps nothing.
    pub fn new(ttl: Duration) -> ResponseCache {
        ResponseCache { ttl: (!ttl.is_zero()).then_some(ttl), entries: Mutex::default() }
    }

    pub fn disabled() -> ResponseCache {
        ResponseCache::new(Duration::ZERO)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self, stored: Instant) -> bool {
        self.ttl.is_some_and(|ttl| stored.elapsed() < ttl)
    }

    /// The body kept for `key`, while it is fresh.
    pub fn get(&self, key: &Key) -> Option<Bytes> {
        match self.lock().slots.get(key) {
            Some(Slot::Ready { body, stored }) if self.fresh(*stored) => Some(body.clone()),
            _ => None,
        }
    }

    /// The body for `key`: kept, in flight for someone else, or fetched by `fetch` (and
    /// shared with whoever asks for it meanwhile).
    pub async fn get_or_fetch(
        &self,
        key: Key,
        fetch: impl FnOnce() -> BoxFuture<'static, Result<Bytes, ApiError>>,
    ) -> Result<Bytes, ApiError> {
        let (id, flight) = {
            let mut entries = self.lock();
            match entries.slots.get(&key) {
                Some(Slot::Ready { body, stored }) if self.fresh(*stored) => return Ok(body.clone()),
                Some(Slot::InFlight { id, flight }) => (*id, flight.clone()),
                _ => {
                    entries.next_flight += 1;
                    let id = entries.next_flight;
                    let flight = fetch().shared();
                    if let Some(Slot::Ready { body, .. }) =
                        entries.slots.insert(key.clone(), Slot::InFlight { id, flight: flight.clone() })
                    {
                        entries.bytes -= body.len();
                    }
                    (id, flight)
                }
            }
        };
        let result = flight.await;
        self.settle(key, id, &result);
        result
    }

    /// Turns flight `id` into an entry (or drops it after a failure), unless it was dropped
    /// or replaced meanwhile (a change made it stale).
    fn settle(&self, key: Key, id: u64, result: &Result<Bytes, ApiError>) {
        let mut entries = self.lock();
        if !matches!(entries.slots.get(&key), Some(Slot::InFlight { id: current, .. }) if *current == id) {
            return;
        }
        match result {
            Ok(body) if self.ttl.is_some() && body.len() <= MAX_BYTES => {
                entries.bytes += body.len();
                entries.slots.insert(key, Slot::Ready { body: body.clone(), stored: Instant::now() });
                self.evict(&mut entries);
            }
            _ => {
                entries.slots.remove(&key);
            }
        }
    }

    /// Drops expired entries, then the oldest until the bodies fit [`MAX_BYTES`].
    fn evict(&self, entries: &mut Entries) {
        let expired: Vec<Key> = entries
            .slots
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Ready { stored, .. } if !self.fresh(*stored)))
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            remove(entries, &key);
        }
        while entries.bytes > MAX_BYTES {
            let oldest = entries
                .slots
                .iter()
                .filter_map(|(key, slot)| match slot {
                    Slot::Ready { stored, .. } => Some((key, *stored)),
                    Slot::InFlight { .. } => None,
                })
                .min_by_key(|(_, stored)| *stored)
                .map(|(key, _)| key.clone());
            match oldest {
                Some(key) => remove(entries, &key),
                None => break,
            }
        }
    }

    /// Drops everything read with `client`: after a change, nothing it read may be reused.
    pub fn forget(&self, client: u64) {
        let mut entries = self.lock();
        let stale: Vec<Key> = entries.slots.keys().filter(|k| k.client == client).cloned().collect();
        for key in stale {
            remove(&mut entries, &key);
        }
    }
}

fn remove(entries: &mut Entries, key: &Key) {
    if let Some(Slot::Ready { body, .. }) = entries.slots.remove(key) {
        entries.bytes -= body.len();
    }
}
