//! L1: the in-process tier (moka), with single-flight loads.
//!
//! # Concurrent calls on the same key
//! Concurrent misses on one key share one load (one Redis read, at most one Postgres
//! query). A load installs its result only if no invalidation of its key, no flush and no
//! bypass happened since it began: installing and invalidating take the same lock, so an
//! invalidation either comes after the install (and removes it) or cancels the load
//! (which then installs nothing). A load whose caller is dropped is taken over by the next
//! waiter (`tokio::sync::OnceCell`); nothing is installed twice.
//!
//! # Loads that are not shared
//! Deep history is read per page, with the page's own cursor: sharing one read among
//! readers of different cursors would leave most of them with a run that does not hold
//! their page. Such a load takes a [`Ticket`] before it reads and installs with it: the
//! install happens only if no invalidation of the key (a generation per stripe of keys;
//! a collision only skips an install), no flush and no bypass came in between.
//!
//! A `std::sync::Mutex` and not a Tokio one: it is held only around a map operation and a
//! moka insert or invalidate, never across an `.await`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::domain::ChannelId;

use super::entry::JitteredTtl;
pub use super::entry::{CachedFeed, CachedWindow, Entry, Key};
use super::paths::Path;

/// Most loads in flight that later callers can join. Past it (a storm of distinct
/// misses), a load runs on its own and installs nothing, so the table never grows without
/// bound.
pub const MAX_FLIGHTS: usize = 65_536;

/// Stripes of the generation table of [`Ticket`]s.
const STRIPES: usize = 4096;

/// Taken before a load that is not shared; see [`L1::install_with`].
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    stripe: usize,
    generation: u64,
    epoch: u64,
}

/// What a load found.
#[derive(Clone, Debug)]
pub enum Loaded {
    /// A value to serve and, when the load was not overtaken, to keep in L1; the path
    /// says whether Redis held it or a Postgres fill made it.
    Found(Entry, Path),
    /// The tiers cannot answer (Redis down, the fill was refused): read Postgres directly.
    Unavailable,
    /// Neither tier holds it: read Postgres directly (a fill may have been queued).
    Missed,
}

struct Flight {
    result: OnceCell<Loaded>,
    cancelled: AtomicBool,
    epoch: u64,
}

/// Whether an answer came from L1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    L1,
    Load,
}

type Store = moka::sync::Cache<Key, Entry>;

pub struct L1 {
    /// `None` when L1 is off (`--cache redis`): loads are still shared, nothing is kept.
    cache: Option<Store>,
    capacity_bytes: u64,
    /// Deep history, apart so that it never pushes hot windows out.
    history: Option<Store>,
    history_bytes: u64,
    flights: Mutex<HashMap<Key, Arc<Flight>>>,
    /// [`MAX_FLIGHTS`], smaller in tests.
    max_flights: usize,
    /// Bumped by every invalidation of a key in the stripe ([`Ticket`]).
    generations: Box<[AtomicU64]>,
    epoch: AtomicU64,
    /// Bumped whenever an event body leaves on purpose: pages remembered beside hot feeds
    /// are right only at the count they were encoded at ([`super::feeds`]).
    bodies_generation: AtomicU64,
    /// Set while invalidations cannot arrive: nothing is read from or kept in L1.
    bypass: AtomicBool,
}

impl L1 {
    /// An L1 holding up to `capacity_bytes` (weighed) of windows and member sets and
    /// `history_bytes` of deep history, each entry for at most `ttl`; a budget of 0 keeps
    /// nothing of its kind. Starts bypassed until [`L1::resume`].
    pub fn new(capacity_bytes: u64, history_bytes: u64, ttl: Duration) -> L1 {
        let store = |bytes: u64| {
            (bytes > 0).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(bytes)
                    .weigher(|_key: &Key, entry: &Entry| entry.weight())
                    .expire_after(JitteredTtl(ttl))
                    .build()
            })
        };
        L1 {
            cache: store(capacity_bytes),
            capacity_bytes,
            history: store(history_bytes),
            history_bytes,
            flights: Mutex::new(HashMap::new()),
            max_flights: MAX_FLIGHTS,
            generations: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
            bodies_generation: AtomicU64::new(0),
            bypass: AtomicBool::new(true),
        }
    }

    fn store(&self, key: &Key) -> Option<&Store> {
        match key {
            Key::History(_) => self.history.as_ref(),
            _ => self.cache.as_ref(),
        }
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Flight>>> {
        // A panic while holding the lock leaves the map usable: recover it.
        self.flights.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry for `key`: from L1, or from `load`, shared with concurrent callers.
    pub async fn fetch<F, Fut, E>(&self, key: Key, load: F) -> Result<(Loaded, Source), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Loaded, E>>,
    {
        if !self.bypass.load(Ordering::Acquire) {
            if let Some(entry) = self.store(&key).and_then(|c| c.get(&key)) {
                return Ok((Loaded::Found(entry, Path::L1), Source::L1));
            }
        }
        self.load_shared(key, load).await
    }

    fn stripe(key: &Key) -> usize {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hasher = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
        (hasher.hash_one(key) % STRIPES as u64) as usize
    }

    /// Taken before a load of `key` that is not shared; see [`L1::install_with`].
    pub fn ticket(&self, key: Key) -> Ticket {
        let stripe = Self::stripe(&key);
        Ticket {
            stripe,
            generation: self.generations[stripe].load(Ordering::Acquire),
            epoch: self.epoch.load(Ordering::Acquire),
        }
    }

    /// Keeps `entry` under `key` unless an invalidation of the key, a flush or a bypass
    /// came after `ticket` was taken.
    pub fn install_with(&self, key: Key, ticket: Ticket, entry: Entry) {
        let _flights = self.flights(); // the lock invalidations take
        let current = self.generations[ticket.stripe].load(Ordering::Acquire) == ticket.generation
            && self.epoch.load(Ordering::Acquire) == ticket.epoch
            && !self.bypass.load(Ordering::Acquire);
        if let (true, Some(cache)) = (current, self.store(&key)) {
            cache.insert(key, entry);
        }
    }

    async fn load_shared<F, Fut, E>(&self, key: Key, load: F) -> Result<(Loaded, Source), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Loaded, E>>,
    {
        let flight = {
            let mut flights = self.flights();
            if flights.len() >= self.max_flights && !flights.contains_key(&key) {
                None
            } else {
                let flight = flights.entry(key).or_insert_with(|| {
                    Arc::new(Flight {
                        result: OnceCell::new(),
                        cancelled: AtomicBool::new(false),
                        epoch: self.epoch.load(Ordering::Acquire),
                    })
                });
                Some(flight.clone())
            }
        };
        let Some(flight) = flight else {
            return Ok((load().await?, Source::Load));
        };
        let loaded = flight.result.get_or_try_init(load).await?.clone();
        self.install(key, &flight, &loaded);
        Ok((loaded, Source::Load))
    }

    /// The entry for `key` when L1 holds it; never loads.
    pub fn peek(&self, key: Key) -> Option<Entry> {
        if self.bypass.load(Ordering::Acquire) {
            return None;
        }
        self.store(&key)?.get(&key)
    }

    fn install(&self, key: Key, flight: &Arc<Flight>, loaded: &Loaded) {
        let mut flights = self.flights();
        let ours = flights.get(&key).is_some_and(|f| Arc::ptr_eq(f, flight));
        if !ours {
            return; // another waiter installed it, or it was cancelled
        }
        flights.remove(&key);
        let current = !flight.cancelled.load(Ordering::Acquire)
            && flight.epoch == self.epoch.load(Ordering::Acquire)
            && !self.bypass.load(Ordering::Acquire);
        if let (true, Some(cache), Loaded::Found(entry, _)) = (current, self.store(&key), loaded) {
            cache.insert(key, entry.clone());
        }
    }

    /// Removes `key` and cancels its load in progress. An event's body also makes every
    /// page remembered beside a feed stale (one may hold it).
    pub fn invalidate(&self, key: Key) {
        if let Key::Event(_) = key {
            self.bodies_generation.fetch_add(1, Ordering::AcqRel);
        }
        let mut flights = self.flights();
        self.refuse_loads(&mut flights, key);
        if let Some(cache) = self.store(&key) {
            cache.invalidate(&key);
        }
    }

    /// Cancels `key`'s load in progress and makes loads begun before refuse to install;
    /// called with the lock installs take.
    fn refuse_loads(&self, flights: &mut HashMap<Key, Arc<Flight>>, key: Key) {
        self.generations[Self::stripe(&key)].fetch_add(1, Ordering::AcqRel);
        if let Some(flight) = flights.remove(&key) {
            flight.cancelled.store(true, Ordering::Release);
        }
    }

    /// Replaces `key`'s entry with what `next` makes of it, or removes it when L1 holds
    /// none or `next` cannot tell (`None`). Either way, as [`L1::invalidate`], the key's
    /// load in progress is cancelled and loads begun before refuse to install: only the
    /// successor of the entry held at this moment, under the lock installs take, is kept.
    /// For a write this instance made and Redis took: the channel stays hot here.
    pub fn replace(&self, key: Key, next: impl FnOnce(&Entry) -> Option<Entry>) {
        let mut flights = self.flights();
        self.refuse_loads(&mut flights, key);
        let Some(cache) = self.store(&key) else {
            return;
        };
        let successor = match self.bypass.load(Ordering::Acquire) {
            true => None,
            false => cache.get(&key).and_then(|entry| next(&entry)),
        };
        match successor {
            Some(entry) => cache.insert(key, entry),
            None => cache.invalidate(&key),
        }
    }

    /// Counts the event bodies that left on purpose; read before the bodies a page uses.
    pub fn bodies_generation(&self) -> u64 {
        self.bodies_generation.load(Ordering::Acquire)
    }

    /// Removes everything of a channel, as [`L1::invalidate`] does for each key.
    pub fn invalidate_channel(&self, channel: ChannelId) {
        for key in [
            Key::Window(channel),
            Key::Members(channel),
            Key::History(channel),
        ] {
            self.invalidate(key);
        }
    }

    /// Removes everything and cancels every load in progress.
    pub fn flush(&self) {
        let mut flights = self.flights();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for (_, flight) in flights.drain() {
            flight.cancelled.store(true, Ordering::Release);
        }
        for cache in [&self.cache, &self.history].into_iter().flatten() {
            cache.invalidate_all();
        }
    }

    /// Stops reading and keeping entries (invalidations may be lost from now on).
    pub fn bypass(&self) {
        self.bypass.store(true, Ordering::Release);
    }

    /// Flushes, then serves from L1 again (invalidations arrive again).
    pub fn resume(&self) {
        // Loads begun before the flush carry the old epoch and install nothing.
        self.flush();
        self.bypass.store(false, Ordering::Release);
    }

    /// Loads in flight (at most [`MAX_FLIGHTS`]).
    pub fn flights_len(&self) -> usize {
        self.flights().len()
    }

    pub fn is_bypassed(&self) -> bool {
        self.bypass.load(Ordering::Acquire)
    }

    pub fn is_enabled(&self) -> bool {
        self.cache.is_some()
    }

    /// Entries, weighed bytes and capacity of windows and member sets (moka's counts lag
    /// until its pending tasks run).
    pub fn usage(&self) -> (u64, u64, u64) {
        usage_of(&self.cache, self.capacity_bytes)
    }

    /// How many channel windows L1 holds and their weight (a walk over L1: for the
    /// sizing advice, not for a request path).
    pub fn window_usage(&self) -> (u64, u64) {
        let Some(cache) = &self.cache else {
            return (0, 0);
        };
        cache.run_pending_tasks();
        cache
            .iter()
            .filter(|(key, _)| matches!(**key, Key::Window(_)))
            .fold((0, 0), |(n, bytes), (_, entry)| {
                (n + 1, bytes + u64::from(entry.weight()))
            })
    }

    /// [`L1::usage`] of deep history.
    pub fn history_usage(&self) -> (u64, u64, u64) {
        usage_of(&self.history, self.history_bytes)
    }
}

fn usage_of(store: &Option<Store>, capacity: u64) -> (u64, u64, u64) {
    match store {
        Some(cache) => {
            cache.run_pending_tasks();
            (cache.entry_count(), cache.weighted_size(), capacity)
        }
        None => (0, 0, 0),
    }
}

/// Message id → channel, for `GET /v1/messages/{id}` (the mapping never changes), at most
/// `capacity` of them.
pub struct MessageChannels {
    map: moka::sync::Cache<crate::domain::MessageId, ChannelId>,
    capacity: u64,
}

impl MessageChannels {
    pub fn new(capacity: u64) -> MessageChannels {
        MessageChannels {
            map: moka::sync::Cache::new(capacity),
            capacity,
        }
    }
    pub fn get(&self, id: crate::domain::MessageId) -> Option<ChannelId> {
        self.map.get(&id)
    }
    pub fn insert(&self, id: crate::domain::MessageId, channel: ChannelId) {
        self.map.insert(id, channel);
    }
    /// How many it holds (after moka's pending work), and its limit.
    pub fn usage(&self) -> (usize, usize) {
        self.map.run_pending_tasks();
        (self.map.entry_count() as usize, self.capacity as usize)
    }
}

/// Which reads of `trace` (keys in order) a cache with L1's policy (moka: TinyLFU
/// admission, LRU eviction) holding `capacity` keys would hit: the hit-rate study's
/// replay of the real policy.
pub fn simulate_hits(trace: impl IntoIterator<Item = u32>, capacity: usize) -> Vec<bool> {
    let cache: moka::sync::Cache<u32, ()> = moka::sync::Cache::builder()
        .max_capacity(capacity as u64)
        .build();
    trace
        .into_iter()
        .map(|key| {
            let hit = cache.get(&key).is_some();
            if !hit {
                cache.insert(key, ());
                // moka evicts lazily: without this the simulated cache would hold more
                // than its capacity between maintenance runs.
                cache.run_pending_tasks();
            }
            hit
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;
    use uuid::Uuid;

    fn window(seq: i64) -> Loaded {
        Loaded::Found(
            Entry::Window(super::super::entry::empty_window(seq)),
            Path::Redis,
        )
    }

    fn seq_of(loaded: &Loaded) -> i64 {
        match loaded {
            Loaded::Found(Entry::Window(w), _) => w.seq(),
            other => panic!("{other:?}"),
        }
    }

    fn l1() -> L1 {
        let l1 = L1::new(1 << 20, 1 << 20, Duration::from_secs(60));
        l1.resume();
        l1
    }

    const KEY: Key = Key::Window(ChannelId(Uuid::nil()));

    #[tokio::test]
    async fn concurrent_misses_share_one_load() {
        let l1 = l1();
        let loads = AtomicUsize::new(0);
        let fetches = (0..16).map(|_| {
            l1.fetch(KEY, || async {
                loads.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Ok::<_, Infallible>(window(1))
            })
        });
        let results = futures::future::join_all(fetches).await;
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert!(results.iter().all(|r| seq_of(&r.as_ref().unwrap().0) == 1));
        let (_, source) = l1
            .fetch(KEY, || async { Ok::<_, Infallible>(window(2)) })
            .await
            .unwrap();
        assert_eq!(source, Source::L1);
    }

    #[tokio::test]
    async fn a_load_overtaken_by_an_invalidation_installs_nothing() {
        let l1 = l1();
        let (reached_tx, reached_rx) = tokio::sync::oneshot::channel();
        let (resume_tx, resume_rx) = tokio::sync::oneshot::channel::<()>();
        let slow = l1.fetch(KEY, || async move {
            reached_tx.send(()).unwrap();
            resume_rx.await.unwrap();
            Ok::<_, Infallible>(window(1))
        });
        let invalidate = async {
            reached_rx.await.unwrap();
            l1.invalidate(KEY);
            resume_tx.send(()).unwrap();
        };
        let (stale, ()) = tokio::join!(slow, invalidate);
        assert_eq!(
            seq_of(&stale.unwrap().0),
            1,
            "the overtaken caller still gets its answer"
        );

        let (fresh, source) = l1
            .fetch(KEY, || async { Ok::<_, Infallible>(window(2)) })
            .await
            .unwrap();
        assert_eq!((seq_of(&fresh), source), (2, Source::Load));
    }

    #[tokio::test]
    async fn past_the_flight_limit_a_load_runs_unshared_and_keeps_nothing() {
        let mut l1 = l1();
        l1.max_flights = 2;
        let key = |n: u128| Key::Window(ChannelId(Uuid::from_u128(n)));
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let held = |n: u128| {
            let mut release = release_rx.clone();
            l1.fetch(key(n), move || async move {
                release.wait_for(|go| *go).await.unwrap();
                Ok::<_, Infallible>(window(1))
            })
        };
        let (a, b) = (held(1), held(2));
        let third = async {
            tokio::task::yield_now().await;
            assert_eq!(l1.flights_len(), 2, "two loads wait");
            let (loaded, _) = l1
                .fetch(key(3), || async { Ok::<_, Infallible>(window(7)) })
                .await
                .unwrap();
            assert_eq!(seq_of(&loaded), 7, "the caller still gets its answer");
            assert_eq!(l1.flights_len(), 2, "and the table did not grow");
            assert!(l1.peek(key(3)).is_none(), "nothing kept");
            release_tx.send(true).unwrap();
        };
        let (a, b, ()) = tokio::join!(a, b, third);
        assert_eq!(seq_of(&a.unwrap().0) + seq_of(&b.unwrap().0), 2);
        assert_eq!(l1.flights_len(), 0);
    }

    #[test]
    fn a_ticket_installs_only_when_nothing_invalidated_the_key_since() {
        let l1 = l1();
        let Loaded::Found(entry, _) = window(1) else {
            unreachable!()
        };
        let ticket = l1.ticket(KEY);
        l1.invalidate(KEY);
        l1.install_with(KEY, ticket, entry.clone());
        assert!(l1.peek(KEY).is_none(), "invalidated after the ticket");
        let ticket = l1.ticket(KEY);
        l1.flush();
        l1.install_with(KEY, ticket, entry.clone());
        assert!(l1.peek(KEY).is_none(), "flushed after the ticket");
        let ticket = l1.ticket(KEY);
        l1.invalidate(Key::Members(ChannelId(Uuid::from_u128(9))));
        l1.install_with(KEY, ticket, entry);
        assert!(
            l1.peek(KEY).is_some(),
            "another key's invalidation does not matter"
        );
    }

    #[tokio::test]
    async fn a_flush_cancels_loads_and_bypass_keeps_nothing() {
        let l1 = l1();
        l1.fetch(KEY, || async { Ok::<_, Infallible>(window(1)) })
            .await
            .unwrap();
        l1.bypass();
        let (_, source) = l1
            .fetch(KEY, || async { Ok::<_, Infallible>(window(2)) })
            .await
            .unwrap();
        assert_eq!(source, Source::Load, "bypassed: not read from L1");
        l1.resume();
        let (loaded, source) = l1
            .fetch(KEY, || async { Ok::<_, Infallible>(window(3)) })
            .await
            .unwrap();
        assert_eq!(
            (seq_of(&loaded), source),
            (3, Source::Load),
            "resume flushed the old entry"
        );
    }
}
